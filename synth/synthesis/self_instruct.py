"""Stage `self_instruct`: grow domains that are below their target share.

Hunyuan-Large expands low-resource domains by self-instruct. Given a target
domain distribution, the stage counts the shard's domains, and for every domain
short of its target writes new instructions from a few seed instructions (drawn
from the shard, seeded), until the shard would match the target or the per-shard
cap is reached. Inputs pass through unchanged; new rows are appended.

Domains are the router's labels: rows without a `domain` (no `route` stage before)
are labelled by the same classifier, and every new instruction is labelled by it too,
so the mix this stage reports is the mix `route` and the audit see. The ledger gets
`domain_mix.before.<d>` and `domain_mix.after.<d>` (record counts, summed over shards)
and `domain_mix.target.<d>` (target share in per-mille, recorded once, by shard 0).
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.records import content_id
from synth.core.stage import Shard
from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions
from synth.llm.types import ChatRequest, ChatResult
from synth.prompts import load_prompt
from synth.synthesis.common import words
from synth.synthesis.route import ClassifierConfig, classifier_state, make_classifier


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
    # The labeller for rows without a domain and for new instructions: use the same
    # classifier as the pipeline's `route` stage.
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    # A new instruction the classifier puts in another domain than the one asked for
    # fills no gap: drop it (reason `off_target_domain`) instead of only counting it.
    drop_off_target: bool = False

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
        gap = round(s * size) - counts[d]
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
    """Plans its requests from the whole shard (the domain gaps), then runs them
    through the LLMStage contract: one planned job row per new instruction,
    `build_request` / `apply_result` per job."""

    type = "self_instruct"
    Options = SelfInstructOptions
    creates_records: ClassVar[bool] = True
    reads = ("id", "instruction")  # and `domain` when there is one; else labelled here
    outputs = {
        "domain": pa.string(),
        "task_type": pa.string(),
        "evolution": pa.list_(pa.string()),
        "provenance": pa.string(),
    }

    def external_state(self) -> str | None:
        return classifier_state(self.options.classifier)

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)
        self.descriptions = self.prompt.data.get("domains", {})
        self.classifier = make_classifier(self.options.classifier)

    def _label_missing(self, rows: list[dict]) -> None:
        missing = [r for r in rows if not r.get("domain")]
        for row, decision in zip(missing, self.classifier.classify_many([r.get("instruction") or "" for r in missing])):
            row["domain"] = decision.domain

    def _record_mix(self, shard: Shard, when: str, counts: Counter) -> None:
        for domain in sorted(set(counts) | set(self.options.target)):
            shard.count(f"domain_mix.{when}.{domain}", counts.get(domain, 0))

    def _jobs(self, rows: list[dict], shard: Shard) -> list[dict]:
        """One job per new instruction the shard's domain gaps call for, with its seed examples."""
        plan = deficits(Counter(r["domain"] for r in rows), self.options.target, self.options.max_new_per_shard)
        jobs = []
        for domain, k in plan.items():
            pool = [r["instruction"] for r in rows if r.get("domain") == domain] or [r["instruction"] for r in rows]
            for j in range(k):
                examples = shard.rng(domain, j, "seeds").sample(pool, min(self.options.examples, len(pool)))
                jobs.append({"id": f"{shard.name}:{domain}:{j}", "domain": domain, "examples": examples})
        return jobs

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        if shard.index == 0:  # a share, not a count: once per run, whatever the shard count
            total = sum(self.options.target.values())
            for domain, share in sorted(self.options.target.items()):
                shard.count(f"domain_mix.target.{domain}", round(1000 * share / total))
        rows = table.to_pylist()
        if not rows:
            return table
        self._label_missing(rows)
        self._record_mix(shard, "before", Counter(r["domain"] for r in rows))
        # What apply_result checks new instructions against, for this shard only.
        self._template = rows[0]
        self._seen = {r["instruction"].strip().lower() for r in rows}
        rows += self.complete(self._jobs(rows, shard), shard)
        self._record_mix(shard, "after", Counter(r["domain"] for r in rows))
        return pa.Table.from_pylist(rows, schema=self.output_schema(table.schema))

    def build_request(self, job: dict, shard: Shard) -> ChatRequest:
        domain = job["domain"]
        messages = self.prompt.render(
            domain=domain, domain_description=self.descriptions.get(domain, domain), examples=job["examples"]
        )
        return ChatRequest(messages, self.sampling(shard, job), key=job["id"])

    def failed_record(self, job: dict, request: ChatRequest) -> dict:
        return {"domain": job["domain"], "instruction": ""}

    def apply_result(self, job: dict, result: ChatResult, shard: Shard) -> list[dict]:
        domain, text = job["domain"], (result.text or "").strip()
        label = self.classifier.classify(text).domain
        record = {"domain": domain, "instruction": text}
        if len(words(text)) < self.options.min_words:
            shard.drop(record, "too_short")
        elif text.lower() in self._seen:
            shard.drop(record, "repeats_seed")
        elif label != domain and self.options.drop_off_target:
            shard.drop(record, "off_target_domain", {"classified_as": label})
        else:
            if label != domain:  # asked for one domain, the classifier reads another
                shard.count(f"self_instruct.off_target.{domain}")
            self._seen.add(text.lower())
            shard.count(f"self_instruct.new.{domain}")
            new = {k: None for k in self._template}
            new.update(
                id=content_id("self_instruct", shard.name, domain, text),
                instruction=text,
                domain=domain,
                task_type="self_instruct",
                evolution=["self_instruct"],
                provenance=self.provenance(None, result),
            )
            return [new]
        return []
