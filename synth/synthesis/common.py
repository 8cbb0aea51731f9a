"""Pieces the synthesis stages share: provenance, text checks, per-model engines."""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from synth.llm.stage import LLMStage, models_config_for, request_cache_path, shared_engine
from synth.llm.types import ChatRequest, ChatResult, SamplingParams

# Columns every instruction record carries from `instruct` on.
INSTRUCTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("task_type", pa.string()),
        ("domain", pa.string()),
        ("source_id", pa.string()),
        ("source_url", pa.string()),
        ("source_title", pa.string()),
        ("source_path", pa.string()),
        ("evolution", pa.list_(pa.string())),
        ("provenance", pa.string()),
        # the source passage's language (from `langid`), kept through every later stage
        ("language", pa.string()),
    ]
)

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_overlap(text: str, source: str, n: int = 8) -> float:
    """Share of `text`'s word n-grams that also occur in `source` (copy detection)."""
    tw, sw = words(text), words(source)
    if len(tw) < n:
        joined = " ".join(tw)
        return 1.0 if joined and joined in " ".join(sw) else 0.0
    grams = {tuple(tw[i : i + n]) for i in range(len(tw) - n + 1)}
    source_grams = {tuple(sw[i : i + n]) for i in range(len(sw) - n + 1)}
    return len(grams & source_grams) / len(grams)


def add_step(provenance: str | None, **step: Any) -> str:
    """Append one step (stage, prompt name@version, model, sampling) to a row's provenance."""
    steps = json.loads(provenance) if provenance else []
    steps.append({k: v for k, v in step.items() if v is not None})
    return json.dumps(steps, ensure_ascii=False, sort_keys=True)


def sampling_record(sp: SamplingParams) -> dict:
    return {"temperature": sp.temperature, "top_p": sp.top_p, "max_tokens": sp.max_tokens, "n": sp.n}


def engine_for(stage: LLMStage, model: str | None):
    """The shared (cached) engine for a named model: stages that route rows to
    several specialists call more than one."""
    if model is None or model == stage.options.model:
        return stage.engine
    settings = stage.pipeline.settings
    models, key = models_config_for(settings, stage.pipeline.config_path)
    cache = request_cache_path(settings, stage.pipeline.config_path, stage.pipeline.run_dir) if stage.options.cache else None
    return shared_engine(model, models, key, cache)


def generate_by_model(stage: LLMStage, requests: list[tuple[str | None, ChatRequest]], shard) -> list[tuple[ChatResult, str]]:
    """Send each request to its model, one batch per model; results in input order
    with the name of the model that answered."""
    by_model: dict[str | None, list[int]] = {}
    for i, (model, _) in enumerate(requests):
        by_model.setdefault(model, []).append(i)
    out: list[tuple[ChatResult, str] | None] = [None] * len(requests)
    for model, indices in by_model.items():
        engine = engine_for(stage, model)
        batch = [requests[i][1] for i in indices]
        # measured against the model's context, shortened or failed before sending
        results = stage.send(engine, batch, shard, model)
        for i, res in zip(indices, results):
            out[i] = (res, engine.name)
    return out  # type: ignore[return-value]


def model_name(stage: LLMStage) -> str:
    return getattr(stage.engine, "name", str(stage.options.model))


def extend_schema(upstream: pa.Schema, types: dict[str, pa.DataType]) -> pa.Schema:
    """The upstream columns plus (or replaced by) a stage's declared ones, so every
    shard of a stage has the same schema even when a column is all null."""
    fields = [f for f in upstream if f.name not in types]
    return pa.schema(fields + [pa.field(n, t) for n, t in types.items()])
