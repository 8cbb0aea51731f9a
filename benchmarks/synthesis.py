"""Synthesis throughput on the demo pipeline, beside the raw engine, in one run.

(a) synth: `pipelines/demo.yaml` runs in this process into a fresh run directory
    (so its request cache starts empty and every request reaches the engine); for
    each stage we print records in/out, records/s and, for LLM stages, completion
    tokens/s from the ledger.
(b) raw: every batch synth sent to the engine is recorded and replayed, batch by
    batch with the same sampling params, through the same `vllm.LLM` instance's
    `chat` (no second engine start, same prefix cache state aside).

Tokens/s here is completion tokens over engine-facing wall time. The last line is
`ratio=<ours/raw>`: synth's tokens/s over the raw engine's on the same requests.

    python benchmarks/synthesis.py [--pipeline pipelines/demo.yaml] [--keep RUN]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default=str(REPO / "pipelines" / "demo.yaml"))
    ap.add_argument("--keep", default=None, help="Run directory to keep (default: a temporary one).")
    ap.add_argument(
        "--sampled",
        dest="greedy",
        action="store_false",
        help="Keep the pipeline's sampling (default: greedy, for identical tokens on both sides).",
    )
    args = ap.parse_args()

    from synth.core.config import load_pipeline
    from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
    from synth.core.ledger import stage_totals
    from synth.core.rundir import RunDir
    from synth.llm import offline

    batches: list[tuple[list, list]] = []  # (messages per request, sampling per request)
    engines: list = []
    in_engine = [0.0]  # seconds synth spent inside engine.generate
    original = offline.OfflineEngine.generate

    def recording_generate(self, requests, progress=None):
        if args.greedy:
            # Greedy on both sides: the raw replay then generates the very same tokens,
            # so the comparison is of overhead, not of sampling luck.
            for r in requests:
                r.sampling = dataclasses.replace(r.sampling, temperature=0.0)
        batches.append(([r.messages for r in requests], [r.sampling for r in requests]))
        if self not in engines:
            engines.append(self)
        t0 = time.perf_counter()
        try:
            return original(self, requests, progress)
        finally:
            in_engine[0] += time.perf_counter() - t0

    offline.OfflineEngine.generate = recording_generate

    run_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="synth-bench-")) / "run"
    pipeline = load_pipeline(args.pipeline)
    # Start the engine before timing stages: its ~60 s start is not per-stage work.
    from synth.llm.stage import models_config_for, shared_engine

    models, key = models_config_for(pipeline.settings, pipeline.path)
    t0 = time.perf_counter()
    shared_engine(None, models, key, None)
    print(f"engine start {time.perf_counter() - t0:.1f}s")
    source = PipelineSource(raw=pipeline.raw, path=args.pipeline, seed=pipeline.seed)
    started = time.perf_counter()
    run_pipeline(pipeline, source, run_dir, executor=LocalExecutor(1))
    wall = time.perf_counter() - started
    offline.OfflineEngine.generate = original

    run = RunDir(run_dir)
    print(f"{'stage':28s} {'in':>6s} {'out':>6s} {'seconds':>8s} {'rec/s':>8s} {'tokens':>8s} {'tok/s':>7s}")
    ours_tokens = 0
    ours_llm_seconds = 0.0
    for entry in pipeline.stages:
        t = stage_totals(run, entry.label, entry.type)
        tokens = sum(v for k, v in t["counters"].items() if k.endswith("completion_tokens"))
        secs = t["seconds"]
        rate = t["in"] / secs if secs else 0.0
        tok_rate = tokens / secs if secs and tokens else 0.0
        if tokens:
            ours_tokens += tokens
            ours_llm_seconds += secs
        print(f"{entry.label:28s} {t['in']:6d} {t['out']:6d} {secs:8.2f} {rate:8.1f} {tokens:8d} {tok_rate:7.1f}")
    print(f"pipeline wall time {wall:.1f}s (includes engine start and ingest)")
    if not engines:
        raise SystemExit("no request reached an offline engine: nothing to compare")

    # (b) the same batches straight into the engine synth used.
    llm = engines[0].llm
    entry = engines[0].entry
    raw_tokens = 0
    raw_seconds = 0.0
    for messages, samplings in batches:
        params = [offline.to_vllm_params(sp, entry) for sp in samplings]
        # Synth's run warmed the prefix cache with these very prompts: clear it so
        # the replay pays for prefill as synth did.
        llm.reset_prefix_cache()
        t0 = time.perf_counter()
        outputs = llm.chat(messages, params, use_tqdm=False)
        raw_seconds += time.perf_counter() - t0
        raw_tokens += sum(len(c.token_ids) for o in outputs for c in o.outputs)

    ours = ours_tokens / ours_llm_seconds if ours_llm_seconds else 0.0
    raw = raw_tokens / raw_seconds if raw_seconds else 0.0
    print(f"requests: {sum(len(b[0]) for b in batches)} in {len(batches)} batches")
    print(f"synth LLM stages: {ours_tokens} tokens in {ours_llm_seconds:.1f}s = {ours:.1f} tokens/s")
    print(f"  of which inside engine.generate: {in_engine[0]:.1f}s (the rest is prompt rendering, parsing, cache, I/O)")
    print(f"raw engine, same batches: {raw_tokens} tokens in {raw_seconds:.1f}s = {raw:.1f} tokens/s")
    print(f"ratio={ours / raw if raw else 0.0:.3f}")


if __name__ == "__main__":
    main()
