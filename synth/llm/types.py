"""Request and result types, and the engine protocol every stage codes against."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    stop: tuple[str, ...] = ()
    # Schema-guided decoding where the engine supports it; callers still validate.
    json_schema: dict | None = None
    # Passed only to engines that honour it (never to a CPU vLLM engine, where a
    # per-request seed crashes the engine); reproducibility comes from the cache.
    seed: int | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {self.max_tokens}")
        if isinstance(self.stop, list):
            # Frozen dataclass: keep it hashable even when built from YAML lists.
            object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def engine_n(self) -> int:
        """Samples to ask the engine for: vLLM rejects n>1 with greedy decoding, and
        greedy samples are identical anyway, so ask once and replicate."""
        return 1 if self.temperature == 0 else self.n


def replicate_greedy(result: ChatResult, sampling: SamplingParams) -> ChatResult:
    """Expand a greedy single answer to the n samples the caller asked for."""
    if result.error is None and sampling.engine_n != sampling.n and len(result.texts) == 1:
        result.texts = result.texts * sampling.n
        result.finish_reasons = result.finish_reasons * sampling.n
    return result


@dataclass
class ChatRequest:
    messages: list[dict]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    key: str = ""  # the record id, for accounting and error reports
    # A part of the messages (the passage) that may be cut when the prompt does not
    # fit the model's context; empty = nothing may be cut (PromptBudget.fit).
    shortenable: str = ""
    # The MODELS entry to ask (None: the stage's own model): routing is a field of
    # the request, not code of the stage.
    model: str | None = None
    # What the stage needs back with the result (e.g. which kind was asked).
    context: Any = None


@dataclass
class ChatResult:
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    error: str | None = None
    latency_s: float = 0.0
    # How many of the texts came from the cache (a request with n>1 may be partly cached).
    cached_samples: int = 0
    # Models with several replicas: the replica that gave this result, and the
    # replicas where earlier attempts of the request failed (per-replica counters).
    replica: int | None = None
    replica_failures: list[int] = field(default_factory=list)
    # Set by `LLMStage`: the name of the model that answered and the request sent.
    model: str = ""
    request: ChatRequest | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    @classmethod
    def failure(cls, error: str, latency_s: float = 0.0) -> ChatResult:
        return cls(texts=[], finish_reasons=[], prompt_tokens=0, completion_tokens=0, error=error, latency_s=latency_s)


# Called once per finished request with (index in the input list, result); engines
# call it as results arrive so callers can persist them before the batch ends.
Progress = Callable[[int, ChatResult], None]


@runtime_checkable
class Engine(Protocol):
    name: str  # the model's name in MODELS.yaml
    # What the model is (path or hub id + dtype-insensitive): part of cache keys,
    # so renaming an entry keeps its cache and changing its model does not.
    model_id: str

    def generate(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[ChatResult]:
        """One result per request, in order. A failed request yields a result with
        `error` set; generate itself does not raise for request failures."""
        ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """The engine cannot run at all (not a per-request failure)."""


def request_hash(model_id: str, messages: list[dict], sampling: SamplingParams, sample_index: int) -> str:
    """Content hash of one sample of one request. `n` is excluded: sample i of a
    request is the same work whether it was asked with n=2 or n=5."""
    params = sampling.to_dict()
    params.pop("n", None)
    blob = json.dumps(
        {"model": model_id, "messages": messages, "params": params, "i": sample_index},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=_jsonable,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
