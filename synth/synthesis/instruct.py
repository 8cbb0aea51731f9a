"""Stage `instruct`: passages -> instructions grounded in them (Hunyuan-Large step 1).

For each passage, `kinds_per_passage` kinds are drawn by their configured shares
(seeded by the passage id), and the model is asked for a JSON list of `per_kind`
tasks of each kind. Every candidate is checked; failures are dropped with a
reason: output that does not parse, tasks that lean on the passage when their
kind must stand alone, near-copies of the passage, repeats.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.records import content_id
from synth.core.stage import Shard
from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions, parse_json
from synth.llm.types import ChatRequest, ChatResult
from synth.prompts import load_prompt
from synth.synthesis.common import INSTRUCTION_SCHEMA, ngram_overlap, words

# Phrases that only make sense next to the source text.
LEANS_ON_SOURCE = re.compile(
    r"\b(the|this|above|given|following|provided|preceding)\s+(passage|text|excerpt|article|document|source|paragraph|extract|story|chapter)\b"
    r"|\baccording to the (author|text|passage|source)\b|\bthe author\b",
    re.IGNORECASE,
)


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def salvage_truncated_list(text: str) -> list[str]:
    """The complete string items of a JSON list that max_tokens cut short."""
    start = text.find("[")
    if start < 0:
        return []
    items = []
    for match in _JSON_STRING.finditer(text, start):
        try:
            items.append(json.loads(match.group(0)))
        except ValueError:
            break
    # An item cut inside its text has no closing quote, so it never matches.
    return items


class InstructOptions(LLMStageOptions):
    prompt: str = "instruct/generate"
    passage_prompt: str = "instruct/with_passage"
    kinds: dict[str, float] = Field(
        default_factory=lambda: {
            "open_question": 3,
            "reasoning": 2,
            "math": 2,
            "coding": 1,
            "writing": 1,
            "extraction": 1,
            "summarisation": 1,
        },
        description="Kinds of instruction and their shares; kinds are defined in the prompt file's data.kinds.",
    )
    kinds_per_passage: int = Field(2, ge=1)
    per_kind: int = Field(2, ge=1, le=20)
    text_column: str = "text"
    max_passage_chars: int = Field(3000, ge=200, description="Longer passages are cut before prompting.")
    min_words: int = Field(4, ge=1)
    max_copy_overlap: float = Field(
        0.5, ge=0, le=1, description="Drop tasks whose word 8-grams come from the passage above this share."
    )
    sampling: SamplingOptions = Field(default_factory=lambda: SamplingOptions(temperature=0.7, max_tokens=384))

    @field_validator("kinds")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("kinds needs at least one kind with a positive share")
        return v


class GenerateInstructions(LLMStage):
    type = "instruct"
    Options = InstructOptions
    creates_records: ClassVar[bool] = True
    outputs = {f.name: f.type for f in INSTRUCTION_SCHEMA}

    def input_columns(self):
        return ("id", self.options.text_column)

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)
        self.passage_prompt = load_prompt(self.options.passage_prompt)
        known = self.prompt.data.get("kinds", {})
        unknown = [k for k in self.options.kinds if k not in known]
        if unknown:
            raise ValueError(
                f"instruct: kinds {unknown} are not defined in {self.prompt.path}; defined: {sorted(known)}"
            )
        self.kind_specs = known

    def _pick_kinds(self, shard: Shard, passage_id: str) -> list[str]:
        rng = shard.rng(passage_id, "kinds")
        names = [k for k, w in self.options.kinds.items() if w > 0]
        weights = [self.options.kinds[k] for k in names]
        chosen: list[str] = []
        while len(chosen) < min(self.options.kinds_per_passage, len(names)):
            k = rng.choices(names, weights)[0]
            if k not in chosen:
                chosen.append(k)
        return chosen

    def output_schema(self, upstream: pa.Schema) -> pa.Schema:
        return INSTRUCTION_SCHEMA  # new records: the passage's columns do not carry over

    def build_request(self, row: dict, shard: Shard) -> list[ChatRequest]:
        schema = {
            "type": "object",
            "properties": {
                "instructions": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": self.options.per_kind,
                }
            },
            "required": ["instructions"],
        }
        passage = (row.get(self.options.text_column) or "")[: self.options.max_passage_chars]
        source = row.get("title") or row.get("url") or "web page"
        requests = []
        for kind in self._pick_kinds(shard, row["id"]):
            spec = self.kind_specs[kind]
            messages = self.prompt.render(
                passage=passage,
                kind=kind.replace("_", " "),
                kind_description=spec["description"],
                count=self.options.per_kind,
                source=source,
            )
            # the passage may be cut to fit the model's context (LLMStage.send)
            sampling = self.sampling(shard, {"id": f"{row['id']}:{kind}"}, json_schema=schema)
            requests.append(
                ChatRequest(messages, sampling, key=f"{row['id']}:{kind}", shortenable=passage, context=kind)
            )
        return requests

    def failed_record(self, row: dict, request: ChatRequest) -> dict:
        return {**row, "kind": request.context}

    def apply_result(self, row: dict, result: ChatResult, shard: Shard) -> list[dict]:
        kind = result.request.context
        try:
            parsed = parse_json(result.text)
            candidates = parsed.get("instructions") if isinstance(parsed, dict) else parsed
            if not isinstance(candidates, list):
                raise ValueError("no list of instructions")
        except ValueError:
            candidates = salvage_truncated_list(result.text) if result.finish_reasons[:1] == ["length"] else []
            if not candidates:
                reason = "truncated_output" if result.finish_reasons[:1] == ["length"] else "unparseable_output"
                shard.drop({"id": row["id"], "kind": kind, "raw": result.text}, reason, {"raw": result.text[:500]})
                return []
            # Repair rather than lose the finished items of a list cut off by max_tokens.
            shard.count("instruct.repaired_truncated_output")
        return self._accept(row, kind, candidates, result, shard)

    def _accept(self, row: dict, kind: str, candidates: list, result: ChatResult, shard: Shard) -> list[dict]:
        spec = self.kind_specs[kind]
        passage = row.get(self.options.text_column) or ""
        seen: set[str] = set()
        accepted = []
        for cand in candidates:
            text = (
                cand.strip()
                if isinstance(cand, str)
                else (str(cand.get("instruction", "")).strip() if isinstance(cand, dict) else "")
            )
            record = {"source_id": row["id"], "kind": kind, "instruction": text}
            reason = None
            if len(words(text)) < self.options.min_words:
                reason = "too_short"
            elif spec.get("self_contained") and LEANS_ON_SOURCE.search(text):
                reason = "not_self_contained"
            elif ngram_overlap(text, passage) > self.options.max_copy_overlap:
                reason = "copies_passage"
            elif text.lower() in seen:
                reason = "repeated_in_output"
            if reason:
                shard.drop(record, reason)
                continue
            seen.add(text.lower())
            shown = (
                self.passage_prompt.render(task=text, passage=passage[: self.options.max_passage_chars])[0]["content"]
                if spec.get("include_passage")
                else text
            )
            accepted.append(
                {
                    "id": content_id("instruction", row["id"], kind, text),
                    "instruction": shown,
                    "task_type": kind,
                    "domain": spec.get("domain", "general"),
                    "source_id": row["id"],
                    "source_url": row.get("url"),
                    "source_title": row.get("title"),
                    "source_path": row.get("source"),
                    "language": row.get("language"),
                    "evolution": [],
                    "provenance": self.provenance(
                        None, result, extra_prompt=self.passage_prompt.ref if spec.get("include_passage") else None
                    ),
                }
            )
        return accepted
