"""Token accounting: counters the pipeline ledger records per stage and model."""

from __future__ import annotations

from collections.abc import Iterable

from synth.llm.types import ChatResult


def usage_counters(results: Iterable[ChatResult], model: str, prefix: str = "llm") -> dict[str, int | float]:
    """Counters for one batch of results, keyed `<prefix>.<model>.<what>`.

    Tokens count only what the engine generated in this call: a cache hit costs
    nothing and is counted under `cache_hits` (in samples).
    """
    c = {
        "requests": 0,
        "samples": 0,
        "failures": 0,
        "cache_hits": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_s": 0.0,
    }
    for r in results:
        c["requests"] += 1
        if r.error is not None:
            c["failures"] += 1
            continue
        c["samples"] += len(r.texts)
        c["cache_hits"] += r.cached_samples
        if not r.cached:
            c["prompt_tokens"] += r.prompt_tokens
            c["completion_tokens"] += r.completion_tokens
            c["latency_s"] += r.latency_s
    c["latency_s"] = round(c["latency_s"], 3)
    c.update(replica_counters(results))
    return {f"{prefix}.{model}.{k}": v for k, v in c.items()}


def replica_counters(results: Iterable[ChatResult]) -> dict[str, int]:
    """`replica.<i>.requests|failures|tokens` for models served by several replicas:
    every attempt sent to a replica is a request there; a failed one also a failure."""
    c: dict[str, int] = {}

    def add(i: int, what: str, n: int = 1) -> None:
        key = f"replica.{i}.{what}"
        c[key] = c.get(key, 0) + n

    for r in results:
        for i in r.replica_failures:
            add(i, "requests")
            add(i, "failures")
        if r.replica is not None and not r.cached:
            add(r.replica, "requests")
            if r.error is not None:
                add(r.replica, "failures")
            else:
                add(r.replica, "tokens", r.prompt_tokens + r.completion_tokens)
                add(r.replica, "failures", 0)
    return c


def replica_table(stages: list[dict]) -> list[tuple[str, str, int, int, int, int]]:
    """(stage, model, replica, requests, failures, tokens) from audit stage reports, for
    models served by several replicas."""
    rows: dict[tuple[str, str, int], list[int]] = {}
    what = {"requests": 0, "failures": 1, "tokens": 2}
    for stage in stages:
        for key, value in stage.get("counters", {}).items():
            parts = key.split(".")
            # llm.<model>.replica.<i>.<what>; a model name may itself contain dots
            if (
                len(parts) >= 5
                and parts[0] == "llm"
                and parts[-3] == "replica"
                and parts[-1] in what
                and parts[-2].isdigit()
            ):
                model = ".".join(parts[1:-3])
                rows.setdefault((stage["stage"], model, int(parts[-2])), [0, 0, 0])[what[parts[-1]]] += int(value)
    return [(s, m, i, *v) for (s, m, i), v in sorted(rows.items())]
