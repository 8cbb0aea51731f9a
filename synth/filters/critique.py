"""Stage `critique`: a critique model grades each pair on a four-tier scale (step 4).

Grade (4 excellent .. 1 wrong) and a short rationale become columns; rows under
`min_grade` are dropped with reason `critique_below_min_grade`; output that does
not parse as a grade is dropped as `critique_unparseable` with the raw text kept
in the reject sample.
"""

from __future__ import annotations

import re

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Shard
from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions, error_reason, parse_json
from synth.llm.types import ChatRequest
from synth.prompts import load_prompt
from synth.synthesis.common import add_step, extend_schema, model_name, sampling_record

GRADE_SCHEMA = {
    "type": "object",
    "properties": {"rationale": {"type": "string", "maxLength": 400}, "grade": {"type": "integer", "minimum": 1, "maximum": 4}},
    "required": ["rationale", "grade"],
}
CRITIQUE_TYPES = {"critique_grade": pa.int64(), "critique_rationale": pa.string(), "critique_model": pa.string(), "provenance": pa.string()}


class CritiqueOptions(LLMStageOptions):
    prompt: str = "critique/grade"
    min_grade: int = Field(3, ge=1, le=4, description="Keep pairs graded at least this (4 excellent, 3 good, 2 flawed, 1 wrong).")
    annotate_only: bool = Field(False, description="Grade everything, drop nothing.")
    max_response_chars: int = Field(6000, ge=200)
    sampling: SamplingOptions = Field(default_factory=lambda: SamplingOptions(temperature=0.0, max_tokens=160))


def parse_grade(text: str) -> tuple[int, str]:
    """(grade, rationale) from JSON, or from a bare 'grade: N' if JSON failed."""
    try:
        obj = parse_json(text)
        if isinstance(obj, dict) and "grade" in obj:
            grade = int(obj["grade"])
            if 1 <= grade <= 4:
                return grade, str(obj.get("rationale", "")).strip()
    except (ValueError, TypeError):
        pass
    m = re.search(r"grade\"?\s*[:=]\s*([1-4])\b", text, re.IGNORECASE)
    if m:
        return int(m.group(1)), text.strip()[:400]
    raise ValueError(f"no grade in {text[:120]!r}")


class CritiqueFilter(LLMStage):
    type = "critique"
    Options = CritiqueOptions
    reads = ("id", "instruction", "response")
    writes = tuple(CRITIQUE_TYPES)

    def column_types(self):
        return dict(CRITIQUE_TYPES)

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        self.ensure_setup()
        rows = table.to_pylist()
        requests = [
            ChatRequest(
                self.prompt.render(instruction=r["instruction"], response=(r["response"] or "")[: self.options.max_response_chars]),
                self.sampling(shard, r, json_schema=GRADE_SCHEMA),
                key=r["id"],
            )
            for r in rows
        ]
        results = self.call(requests, shard) if requests else []
        model = model_name(self)
        out = []
        for row, req, res in zip(rows, requests, results):
            if res.error is not None:
                shard.drop(row, error_reason(res), {"error": res.error})
                continue
            try:
                grade, rationale = parse_grade(res.text)
            except ValueError:
                shard.drop(row, "critique_unparseable", {"raw": res.text[:500]})
                continue
            row.update(
                critique_grade=grade,
                critique_rationale=rationale,
                critique_model=model,
                provenance=add_step(row.get("provenance"), stage="critique", prompt=self.prompt.ref, model=model, sampling=sampling_record(req.sampling), grade=grade),
            )
            shard.count(f"critique.grade_{grade}")
            if grade < self.options.min_grade and not self.options.annotate_only:
                shard.drop(row, "critique_below_min_grade", {"critique_grade": grade, "critique_rationale": rationale})
                continue
            out.append(row)
        return pa.Table.from_pylist(out, schema=extend_schema(table.schema, CRITIQUE_TYPES))
