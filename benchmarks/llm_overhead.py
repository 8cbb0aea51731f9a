"""Overhead of synth's LLM layer beside the raw engine, in one run.

The same prompts and sampling params go (a) straight to the engine: vLLM offline
`LLM.chat`, and raw async HTTP to a vLLM OpenAI server; and (b) through a synth
`LLMStage` (request building, request cache, usage counting, result handling) on
the same engine. Decoding is greedy so both sides generate the same tokens.
Prints completion tokens/s for each and, last, `ratio=<synth/raw>` (the lower of
the two paths' ratios).

    python benchmarks/llm_overhead.py --prompts 64 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import ClassVar

QUESTIONS = Path(__file__).resolve().parents[1] / "tests" / "llm" / "data" / "questions.txt"


def load_prompts(count: int) -> list[str]:
    base = [q for q in QUESTIONS.read_text().splitlines() if q.strip()]
    # Distinct prompts (a numbered variant of each question) so the engine's prefix
    # cache does not make later prompts free.
    return [f"{base[i % len(base)]} ({i})" for i in range(count)]


def make_stage(engine, cache_dir: Path, max_tokens: int):
    from synth.core.stage import PipelineContext
    from synth.llm.cache import CachedEngine, RequestCache
    from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions
    from synth.llm.types import ChatRequest

    class Answer(LLMStage):
        type: ClassVar[str] = "bench_answer"

        def build_request(self, row, shard):
            return ChatRequest([{"role": "user", "content": row["prompt"]}], self.sampling(shard, row))

        def apply_result(self, row, result, shard):
            return {**row, "response": result.text, "finish": result.finish_reasons[0]}

    opts = LLMStageOptions(sampling=SamplingOptions(temperature=0.0, max_tokens=max_tokens))
    stage = Answer(opts, PipelineContext())
    # A fresh cache file: the synth path pays for cache lookups and writes, never hits.
    stage.engine = CachedEngine(engine, RequestCache(cache_dir / f"bench-{time.time_ns()}.sqlite"))
    return stage


def run_stage(stage, prompts: list[str]) -> tuple[int, float]:
    import pyarrow as pa

    from synth.core.stage import Shard

    table = pa.table({"id": [f"p{i}" for i in range(len(prompts))], "prompt": prompts})
    shard = Shard("01-bench_answer", 0, "00000", 0)
    t0 = time.perf_counter()
    out = stage.process(table, shard)
    seconds = time.perf_counter() - t0
    assert out.num_rows == len(prompts), shard.dropped
    return int(sum(v for k, v in shard.counters.items() if k.endswith(".completion_tokens"))), seconds


def report(label: str, tokens: int, seconds: float) -> float:
    rate = tokens / seconds
    print(f"{label}: {tokens} completion tokens in {seconds:.1f}s = {rate:.1f} tokens/s", flush=True)
    return rate


def bench_offline(prompts, max_tokens, cache_dir) -> float:
    from vllm import LLM
    from vllm import SamplingParams as VParams

    from synth.llm.config import ModelEntry, resolve_model_path
    from synth.llm.offline import OfflineEngine, engine_dtype, kv_cache_bytes

    entry = ModelEntry(mode="offline", max_model_len=1024)
    llm = LLM(
        model=resolve_model_path(entry),
        dtype=engine_dtype(entry),
        max_model_len=1024,
        kv_cache_memory_bytes=kv_cache_bytes(entry),
        seed=0,
    )
    try:
        params = VParams(temperature=0.0, max_tokens=max_tokens)
        convs = [[{"role": "user", "content": p}] for p in prompts]
        llm.chat(convs[:8], params, use_tqdm=False)  # warm-up, not measured

        t0 = time.perf_counter()
        outs = llm.chat(convs, params, use_tqdm=False)
        raw = report("offline raw LLM.chat", sum(len(o.outputs[0].token_ids) for o in outs), time.perf_counter() - t0)

        stage = make_stage(OfflineEngine.from_llm("bench", entry, llm), cache_dir, max_tokens)
        ours = report("offline synth LLMStage", *run_stage(stage, prompts))
    finally:
        llm.llm_engine.engine_core.shutdown()
    ratio = ours / raw
    print(f"offline ratio={ratio:.3f}", flush=True)
    return ratio


async def raw_http(url: str, prompts: list[str], max_tokens: int, in_flight: int) -> int:
    import httpx

    sem = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(p: str) -> int:
            async with sem:
                body = {
                    "model": "bench",
                    "messages": [{"role": "user", "content": p}],
                    "temperature": 0.0,
                    "max_tokens": max_tokens,
                }
                r = await client.post(f"{url}/chat/completions", json=body)
                r.raise_for_status()
                return r.json()["usage"]["completion_tokens"]

        return sum(await asyncio.gather(*(one(p) for p in prompts)))


def bench_served(prompts, max_tokens, cache_dir, in_flight: int) -> float:
    import socket

    from synth.llm.config import ModelEntry
    from synth.llm.serve import ServerProcess
    from synth.llm.served import ServedEngine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = ModelEntry(mode="serve", port=port, max_model_len=1024, max_in_flight=in_flight, startup_timeout_s=600)
    server = ServerProcess("bench", entry, cache_dir).start()
    try:
        server.wait_ready()
        asyncio.run(raw_http(server.url, prompts[:8], max_tokens, in_flight))  # warm-up

        t0 = time.perf_counter()
        tokens = asyncio.run(raw_http(server.url, prompts, max_tokens, in_flight))
        raw = report("served raw async HTTP", tokens, time.perf_counter() - t0)

        stage = make_stage(ServedEngine("bench", entry), cache_dir, max_tokens)
        ours = report("served synth LLMStage", *run_stage(stage, prompts))
    finally:
        server.stop()
    ratio = ours / raw
    print(f"served ratio={ratio:.3f}", flush=True)
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--paths", default="offline,served", help="offline, served or both (comma-separated)")
    args = ap.parse_args()
    prompts = load_prompts(args.prompts)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        if "offline" in paths:
            ratios.append(bench_offline(prompts, args.max_tokens, Path(tmp)))
        if "served" in paths:
            ratios.append(bench_served(prompts, args.max_tokens, Path(tmp), args.in_flight))
    print(f"ratio={min(ratios):.3f}")


if __name__ == "__main__":
    main()
