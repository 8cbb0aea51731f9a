"""In-process vLLM engine (`vllm.LLM`), batched chat generation.

Requests are queued into the engine all at once (the engine schedules and batches
them), and results are reported as each request finishes so the request cache can
keep them even if the process dies before the batch ends.
"""

from __future__ import annotations

import logging
import time

from synth.llm.config import ModelEntry, model_identity, resolve_model_path
from synth.llm.types import ChatRequest, ChatResult, EngineError, Progress, SamplingParams, replicate_greedy

log = logging.getLogger(__name__)

# KV cache given to a CPU engine when the entry says nothing: the default vLLM rule
# (a fraction of all RAM) fails on a shared machine and a small model needs little.
CPU_DEFAULT_KV_CACHE_GIB = 2.0


def on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()
    except Exception:  # noqa: BLE001 - no vllm or odd platform: callers only use this for defaults
        return True


def engine_dtype(entry: ModelEntry) -> str:
    # bf16 is about 5x slower than float32 on this CPU class (measured), so "auto"
    # means float32 on CPU and the model's own dtype elsewhere.
    if entry.dtype == "auto":
        return "float32" if on_cpu() else "auto"
    return entry.dtype


def kv_cache_bytes(entry: ModelEntry) -> int | None:
    gib = entry.kv_cache_gib
    if gib is None and on_cpu():
        gib = CPU_DEFAULT_KV_CACHE_GIB
    return int(gib * 1024**3) if gib else None


def to_vllm_params(sp: SamplingParams, entry: ModelEntry):
    from vllm import SamplingParams as VParams

    kwargs = dict(
        temperature=sp.temperature,
        top_p=sp.top_p,
        max_tokens=sp.max_tokens,
        n=sp.engine_n,
        stop=list(sp.stop) or None,
    )
    if sp.seed is not None and entry.per_request_seed:
        kwargs["seed"] = sp.seed
    if sp.json_schema is not None and entry.structured_output:
        from vllm.sampling_params import StructuredOutputsParams

        kwargs["structured_outputs"] = StructuredOutputsParams(json=sp.json_schema)
    return VParams(**kwargs)


def _external_id(request_id: str) -> str:
    """enqueue_chat returns the engine's internal id ("<counter>-<8 random hex>");
    finished outputs carry the external one ("<counter>")."""
    head, sep, tail = request_id.rpartition("-")
    return head if sep and head.isdigit() and len(tail) == 8 else request_id


class OfflineEngine:
    def __init__(self, name: str, entry: ModelEntry):
        self.name = name
        self.entry = entry
        self.model_id = model_identity(name, entry)
        from vllm import LLM

        kwargs = dict(
            model=resolve_model_path(entry),
            dtype=engine_dtype(entry),
            max_model_len=entry.max_model_len,
            seed=entry.seed,
        )
        if entry.max_num_seqs:
            kwargs["max_num_seqs"] = entry.max_num_seqs
        if entry.enforce_eager:
            kwargs["enforce_eager"] = True
        kv = kv_cache_bytes(entry)
        if kv:
            kwargs["kv_cache_memory_bytes"] = kv
        kwargs.update(entry.engine_kwargs)
        started = time.perf_counter()
        try:
            self.llm = LLM(**{k: v for k, v in kwargs.items() if v is not None})
        except Exception as e:
            raise EngineError(f"model {name!r}: vLLM engine failed to start: {e}") from e
        log.info("model %s: offline engine ready in %.1fs", name, time.perf_counter() - started)

    @classmethod
    def from_llm(cls, name: str, entry: ModelEntry, llm) -> OfflineEngine:
        """Wrap an existing `vllm.LLM` (benchmarks compare against it in one process)."""
        self = cls.__new__(cls)
        self.name, self.entry, self.model_id, self.llm = name, entry, model_identity(name, entry), llm
        return self

    def generate(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        if not requests:
            return []
        params = [to_vllm_params(r.sampling, self.entry) for r in requests]
        started = time.perf_counter()
        id_to_index = self._enqueue(requests, params, results, progress)
        engine = self.llm.llm_engine
        try:
            while id_to_index and engine.has_unfinished_requests():
                for out in engine.step():
                    if not out.finished or out.request_id not in id_to_index:
                        continue
                    i = id_to_index.pop(out.request_id)
                    results[i] = replicate_greedy(
                        ChatResult(
                            texts=[c.text for c in out.outputs],
                            finish_reasons=[str(c.finish_reason) for c in out.outputs],
                            prompt_tokens=len(out.prompt_token_ids or ()),
                            completion_tokens=sum(len(c.token_ids) for c in out.outputs),
                            latency_s=time.perf_counter() - started,
                        ),
                        requests[i].sampling,
                    )
                    if progress is not None:
                        progress(i, results[i])
        except Exception as e:  # noqa: BLE001 - the engine died: every unfinished request fails, none is lost
            log.error("model %s: engine failed mid-batch: %s", self.name, e)
        if id_to_index:
            log.error("model %s: %d requests left unfinished", self.name, len(id_to_index))
            try:
                engine.abort_request(list(id_to_index))
            except Exception:  # noqa: BLE001 - aborting is best effort: the requests fail anyway
                pass
        for i, res in enumerate(results):
            if res is None:
                results[i] = ChatResult.failure(
                    f"engine {self.name}: request did not finish", time.perf_counter() - started
                )
                if progress is not None:
                    progress(i, results[i])
        return results  # type: ignore[return-value]

    def _enqueue(self, requests, params, results, progress) -> dict[str, int]:
        convs = [r.messages for r in requests]
        try:
            ids = self.llm.enqueue_chat(convs, params, use_tqdm=False)
            return {_external_id(rid): i for i, rid in enumerate(ids)}
        except Exception:  # noqa: BLE001 - one bad request rejects the batch (isolated below)
            pass  # one bad request (too long, bad schema) rejects the batch: isolate it
        mapping: dict[str, int] = {}
        for i, (conv, p) in enumerate(zip(convs, params)):
            try:
                (rid,) = self.llm.enqueue_chat([conv], [p], use_tqdm=False)
                mapping[_external_id(rid)] = i
            except Exception as e:  # noqa: BLE001 - the engine's rejection of this one request is its error
                results[i] = ChatResult.failure(f"rejected by engine: {type(e).__name__}: {e}")
                if progress is not None:
                    progress(i, results[i])
        return mapping

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass
