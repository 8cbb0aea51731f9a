"""An LLM stage for executor tests: asks the model to echo each record's number and
text (one distinct request per record, so no shard is served by another's cache)."""

from __future__ import annotations

from typing import ClassVar

from synth.llm.stage import LLMStage
from synth.llm.types import ChatRequest, SamplingParams


class Echo(LLMStage):
    type: ClassVar[str] = "toy_echo"

    def build_request(self, row, shard):
        return ChatRequest(
            [{"role": "user", "content": f"{row['n']}: {row['text']}"}], SamplingParams(temperature=0.0, max_tokens=8)
        )

    def apply_result(self, row, result, shard):
        return {**row, "answer": result.text}
