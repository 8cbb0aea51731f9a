"""Stage `critique`: a critique model grades each pair on a four-tier scale (step 4).

An LLM filter: the grade (4 excellent .. 1 wrong) and a short rationale are its
scores (columns); rows under `min_grade` are dropped with reason
`critique_below_min_grade` (with `annotate_only`, counted as `would_drop.*` and
kept); output that does not parse as a grade is dropped as `critique_unparseable`
with the raw text kept in the reject sample.
"""

from __future__ import annotations

import re

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Shard
from synth.llm.stage import LLMFilter, LLMStageOptions, SamplingOptions, parse_json
from synth.llm.types import ChatRequest, ChatResult
from synth.prompts import load_prompt

GRADE_SCHEMA = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 400},
        "grade": {"type": "integer", "minimum": 1, "maximum": 4},
    },
    "required": ["rationale", "grade"],
}
CRITIQUE_TYPES = {
    "critique_grade": pa.int64(),
    "critique_rationale": pa.string(),
    "critique_model": pa.string(),
    "provenance": pa.string(),
}


class CritiqueOptions(LLMStageOptions):
    prompt: str = "critique/grade"
    min_grade: int = Field(
        3, ge=1, le=4, description="Keep pairs graded at least this (4 excellent, 3 good, 2 flawed, 1 wrong)."
    )
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


class CritiqueFilter(LLMFilter):
    type = "critique"
    Options = CritiqueOptions
    reads = ("id", "instruction", "response")
    outputs = CRITIQUE_TYPES
    score_columns = ("critique_grade", "critique_rationale")

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)

    def build_request(self, row: dict, shard: Shard) -> ChatRequest:
        messages = self.prompt.render(
            instruction=row["instruction"], response=(row["response"] or "")[: self.options.max_response_chars]
        )
        return ChatRequest(messages, self.sampling(shard, row, json_schema=GRADE_SCHEMA), key=row["id"])

    def apply_result(self, row: dict, result: ChatResult, shard: Shard) -> dict | None:
        try:
            grade, rationale = parse_grade(result.text)
        except ValueError:
            shard.drop(row, "critique_unparseable", {"raw": result.text[:500]})
            return None
        shard.count(f"critique.grade_{grade}")
        provenance = self.provenance(row, result, grade=grade)
        return {
            **row,
            "critique_grade": grade,
            "critique_rationale": rationale,
            "critique_model": result.model,
            "provenance": provenance,
        }

    def decide(self, row: dict) -> str | None:
        grade = row.get("critique_grade")  # None: never graded (dropped before deciding)
        return "critique_below_min_grade" if grade is not None and grade < self.options.min_grade else None
