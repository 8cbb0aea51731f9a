"""What an LLM stage records about how a row was made, and the schema it writes."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from synth.llm.types import SamplingParams


def add_step(provenance: str | None, **step: Any) -> str:
    """Append one step (stage, prompt name@version, model, sampling) to a row's provenance."""
    steps = json.loads(provenance) if provenance else []
    steps.append({k: v for k, v in step.items() if v is not None})
    return json.dumps(steps, ensure_ascii=False, sort_keys=True)


def sampling_record(sp: SamplingParams) -> dict:
    return {"temperature": sp.temperature, "top_p": sp.top_p, "max_tokens": sp.max_tokens, "n": sp.n}


def extend_schema(upstream: pa.Schema, types: dict[str, pa.DataType]) -> pa.Schema:
    """The upstream columns plus (or replaced by) a stage's declared ones, so every
    shard of a stage has the same schema even when a column is all null."""
    fields = [f for f in upstream if f.name not in types]
    return pa.schema(fields + [pa.field(n, t) for n, t in types.items()])
