"""Stage `respond`: each instruction answered by its domain's specialist (step 3).

The model comes from the row's `route_model` (written by the `route` stage from
the routing table) or the stage's own `model`. Objective instructions (by domain
or task type: math, code, short answers) get `n_objective` samples so the
`consistency` stage can vote; others get one.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Shard
from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions
from synth.llm.types import ChatRequest, ChatResult
from synth.prompts import load_prompt

RESPONSE_TYPES = {
    "response": pa.string(),
    "responses": pa.list_(pa.string()),
    "finish_reasons": pa.list_(pa.string()),
    "response_model": pa.string(),
    "provenance": pa.string(),
}


class RespondOptions(LLMStageOptions):
    prompt: str = "respond/answer"
    objective_domains: list[str] = Field(default_factory=lambda: ["math", "code"])
    objective_task_types: list[str] = Field(default_factory=lambda: ["math", "coding"])
    n_objective: int = Field(4, ge=1, le=64, description="Samples per objective instruction, for self-consistency.")
    use_routing: bool = Field(True, description="Use the row's route_model when present.")
    sampling: SamplingOptions = Field(default_factory=lambda: SamplingOptions(temperature=0.7, max_tokens=512))


class GenerateResponses(LLMStage):
    type = "respond"
    Options = RespondOptions
    reads = ("id", "instruction")
    outputs = RESPONSE_TYPES

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)

    def is_objective(self, row: dict) -> bool:
        return (
            row.get("domain") in self.options.objective_domains
            or row.get("task_type") in self.options.objective_task_types
        )

    def build_request(self, row: dict, shard: Shard) -> ChatRequest:
        base = self.sampling(shard, row)
        n = self.options.n_objective if self.is_objective(row) else 1
        sampling = base if n == base.n else type(base)(**{**base.to_dict(), "n": n})
        messages = self.prompt.render(instruction=row["instruction"], domain=row.get("domain") or "general")
        model = row.get("route_model") if self.options.use_routing and row.get("route_model") else self.options.model
        return ChatRequest(messages, sampling, key=row["id"], model=model)

    def apply_result(self, row: dict, result: ChatResult, shard: Shard) -> dict | None:
        if not result.texts:
            shard.drop(row, "empty_response", {"model": result.model})
            return None
        return {
            **row,
            "response": result.texts[0],
            "responses": list(result.texts),
            "finish_reasons": list(result.finish_reasons),
            "response_model": result.model,
            "provenance": self.provenance(row, result),
        }
