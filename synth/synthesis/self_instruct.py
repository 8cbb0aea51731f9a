"""Stage `self_instruct`: grow domains that are below their target share.

Hunyuan-Large expands low-resource domains by self-instruct. Given a target
domain distribution, the stage counts the shard's domains, and for every domain
short of its target writes new instructions from a few seed instructions (drawn
from the shard, seeded), until the shard would match the target or the per-shard
cap is reached. Inputs pass through unchanged; new rows are appended.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.records import content_id
from synth.core.stage import Shard
from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions
from synth.llm.types import ChatRequest
from synth.prompts import load_prompt
from synth.synthesis.common import add_step, extend_schema, model_name, sampling_record, words


class SelfInstructOptions(LLMStageOptions):
    prompt: str = "evolve/self_instruct"
    target: dict[str, float] = Field(
        default_factory=lambda: {"math": 0.25, "code": 0.25, "science": 0.2, "humanities": 0.15, "general": 0.15},
        description="Target share per domain (normalised).",
    )
    max_new_per_shard: int = Field(16, ge=0)
    examples: int = Field(3, ge=1, le=10, description="Seed instructions shown per request.")
    min_words: int = Field(4, ge=1)
    sampling: SamplingOptions = Field(default_factory=lambda: SamplingOptions(temperature=0.9, max_tokens=160))

    @field_validator("target")
    @classmethod
    def _positive(cls, v):
        if not v or sum(v.values()) <= 0 or any(x < 0 for x in v.values()):
            raise ValueError("target needs at least one domain with a positive share")
        return v


def deficits(counts: Counter, target: dict[str, float], cap: int) -> dict[str, int]:
    """How many new rows each domain needs so the shard approaches `target`.

    With n rows now and k new ones, domain d wants target[d] * (n + k) rows; k is
    the smallest total that satisfies every under-target domain, capped."""
    total_w = sum(target.values())
    shares = {d: w / total_w for d, w in target.items()}
    n = sum(counts.values())
    need: dict[str, int] = {}
    # Solve for k: the largest over-represented domain fixes the total size.
    size = max([n] + [counts[d] / s for d, s in shares.items() if s > 0 and counts[d]])
    for d, s in shares.items():
        gap = int(round(s * size)) - counts[d]
        if gap > 0:
            need[d] = gap
    budget = cap
    out: dict[str, int] = {}
    for d in sorted(need, key=lambda d: (-need[d], d)):
        take = min(need[d], budget)
        if take > 0:
            out[d] = take
            budget -= take
    return out


class SelfInstruct(LLMStage):
    type = "self_instruct"
    Options = SelfInstructOptions
    creates_records: ClassVar[bool] = True
    reads = ("id", "instruction", "domain")

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)
        self.descriptions = self.prompt.data.get("domains", {})

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        self.ensure_setup()
        rows = table.to_pylist()
        if not rows:
            return table
        counts = Counter(r.get("domain") or "general" for r in rows)
        plan = deficits(counts, self.options.target, self.options.max_new_per_shard)
        jobs: list[tuple[str, int]] = []
        requests = []
        for domain, k in plan.items():
            pool = [r["instruction"] for r in rows if r.get("domain") == domain] or [r["instruction"] for r in rows]
            for j in range(k):
                rng = shard.rng(domain, j, "seeds")
                examples = rng.sample(pool, min(self.options.examples, len(pool)))
                messages = self.prompt.render(domain=domain, domain_description=self.descriptions.get(domain, domain), examples=examples)
                requests.append(ChatRequest(messages, self.sampling(shard, {"id": f"{shard.name}:{domain}:{j}"}), key=f"{shard.name}:{domain}:{j}"))
                jobs.append((domain, j))
        results = self.call(requests, shard) if requests else []
        model = model_name(self)
        template = rows[0]
        seen = {r["instruction"].strip().lower() for r in rows}
        for (domain, j), req, res in zip(jobs, requests, results):
            text = (res.text or "").strip()
            record = {"domain": domain, "instruction": text}
            if res.error is not None:
                shard.drop(record, "llm_error", {"error": res.error})
            elif len(words(text)) < self.options.min_words:
                shard.drop(record, "too_short")
            elif text.lower() in seen:
                shard.drop(record, "repeats_seed")
            else:
                seen.add(text.lower())
                new = {k: None for k in template}
                new.update(
                    id=content_id("self_instruct", shard.name, domain, text),
                    instruction=text,
                    domain=domain,
                    task_type="self_instruct",
                    evolution=["self_instruct"],
                    provenance=add_step(None, stage="self_instruct", prompt=self.prompt.ref, model=model, sampling=sampling_record(req.sampling)),
                )
                rows.append(new)
                shard.count(f"self_instruct.new.{domain}")
        return pa.Table.from_pylist(rows, schema=extend_schema(table.schema, self.column_types()))

    def column_types(self):
        return {"task_type": pa.string(), "evolution": pa.list_(pa.string()), "provenance": pa.string()}
