"""Knowledge graph to tool-use: FB15k-237 load time and verified samples per second.

Timed, in this process on one core:
- load: parsing the labelled FB15k-237 TSV (310,116 triples) from scratch, then the
  cached load every later command does;
- generation: the full path of a sample with the template verbaliser (pattern draw,
  walk and grounding, question, tool calls executed against the graph, distractor
  tools, final answer, independent re-execution and verification, id and JSON
  encoding). Only samples that verify count.
- quality: the share of otherwise valid queries rejected as trivial (answer holds an
  anchor, or a step goes along a relation and straight back) and re-sampled, on
  FB15k-237, Nations and UMLS; and what share of samples would be trivial if they were
  allowed (`allow_trivial`), which is what a walk without the check emits;
- with `--llm-samples N`: the share of LLM paraphrases (embedded default model, real
  vLLM) that pass the back-translation check.

    .venv/bin/python benchmarks/kg.py [--samples 5000] [--graph PATH] [--llm-samples 24]

Last line: samples_per_s=<verified samples per CPU-second of this process, i.e. per core>;
the wall-clock rate is printed above it (equal on an idle machine).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FB15K = REPO.parent / "shared" / "data" / "kg" / "fb15k237-labeled.tsv.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graph", default=str(FB15K))
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality-samples", type=int, default=600, help="Samples per graph for the trivial shares.")
    ap.add_argument(
        "--llm-samples",
        type=int,
        default=0,
        help="Samples for the back-translation acceptance (starts the embedded model in vLLM; 0 skips).",
    )
    args = ap.parse_args()

    # A private cache dir, so "cold" really parses and "cached" really reads our cache.
    cache = tempfile.mkdtemp(prefix="kg-bench-")
    from kg.config import WalkConfig
    from kg.generate import SampleFactory, sample_seeds
    from kg.graph import load_graph

    t = time.perf_counter()
    graph = load_graph(args.graph, cache=cache)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    graph = load_graph(args.graph, cache=cache)
    cached = time.perf_counter() - t
    assert graph.report.from_cache
    print(
        f"graph: {graph.name}: {graph.num_triples:,} triples, {graph.num_entities:,} entities, "
        f"{len(graph.relations)} relations"
    )
    print(f"load_cold_s={cold:.2f} load_cached_s={cached:.2f}")

    t = time.perf_counter()
    factory = SampleFactory(graph, WalkConfig(verbalizer="template"))
    factory.make(sample_seeds(args.seed + 1, 0, 20))  # builds lazy indexes (name suggestions)
    setup = time.perf_counter() - t
    print(f"factory_setup_s={setup:.2f}")

    t, cpu = time.perf_counter(), time.process_time()
    kept = 0
    dropped: collections.Counter[str] = collections.Counter()
    patterns: collections.Counter[str] = collections.Counter()
    calls = 0
    trivial: collections.Counter[str] = collections.Counter()
    for outcome in factory.iter_records(args.samples, seed=args.seed):
        if outcome.record is None:
            dropped[outcome.reason] += 1
            continue
        kept += 1
        meta = json.loads(outcome.record["meta"])
        patterns[meta["pattern"]] += 1
        calls += meta.get("tool_calls", 0)
        trivial.update({r: n for r, n in outcome.info.get("failures", {}).items() if r.startswith("trivial_")})
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    queries = kept - patterns.get("irrelevance", 0)
    print(f"attempted={args.samples} verified={kept} dropped={dict(dropped)}")
    print(
        f"trivial_rejected={dict(trivial)} trivial_rejected_share="
        f"{sum(trivial.values()) / max(sum(trivial.values()) + queries, 1):.3f} (of otherwise valid queries)"
    )
    print("per_pattern=" + json.dumps(dict(sorted(patterns.items()))))
    print(
        f"tool_calls_per_sample={calls / max(kept, 1):.2f} wall_s={elapsed:.2f} cpu_s={cpu:.2f} "
        f"load_avg_1m={os.getloadavg()[0]:.1f}"
    )
    print(f"wall_samples_per_s={kept / elapsed:.0f}")
    quality(graph, cache, args)
    if args.llm_samples:
        paraphrases(args)
    else:
        print("llm_paraphrases_accepted=skipped (pass --llm-samples N to start the embedded model)")
    # Per core: CPU seconds this process got, which stays meaningful when other jobs
    # share the machine (wall time then measures the neighbours too).
    shutil.rmtree(cache, ignore_errors=True)
    print(f"samples_per_s={kept / cpu:.0f}")


def quality(fb15k, cache: str, args) -> None:
    """Trivial queries per graph: rejected share with the check, emitted share without it."""
    from kg.config import WalkConfig
    from kg.generate import SampleFactory
    from kg.graph import load_graph
    from kg.query import evaluate_ids, out_and_back

    data = Path(args.graph).parent
    for name, graph in (
        ("fb15k237", fb15k),
        ("nations", load_graph(data / "nations", cache=cache)),
        ("umls", load_graph(data / "umls", cache=cache)),
    ):
        checked = SampleFactory(graph, WalkConfig(irrelevance_share=0.0))
        rejected, valid = collections.Counter(), 0
        for o in checked.iter_records(args.quality_samples, seed=args.seed):
            rejected.update({r: n for r, n in o.info.get("failures", {}).items() if r.startswith("trivial_")})
            valid += o.record is not None
        loose = SampleFactory(graph, WalkConfig(irrelevance_share=0.0, allow_trivial=True))
        emitted = trivial = 0
        for o in loose.iter_records(args.quality_samples, seed=args.seed):
            if o.record is None:
                continue
            meta = json.loads(o.record["meta"])
            anchors = {graph.entity_index[a] for a in meta["anchors"]}
            emitted += 1
            trivial += bool(evaluate_ids(meta["query"], graph) & anchors) or out_and_back(meta["query"], graph)
        n = sum(rejected.values())
        print(
            f"{name}: trivial_rejected_share={n / max(n + valid, 1):.3f} ({dict(rejected)}); "
            f"trivial_share_if_allowed={trivial / max(emitted, 1):.3f} ({trivial}/{emitted})"
        )


def paraphrases(args) -> None:
    from kg.config import WalkConfig
    from kg.generate import SampleFactory, sample_seeds
    from kg.graph import load_graph
    from synth.llm import open_engine

    graph = load_graph(Path(args.graph).parent / "nations")
    engine = open_engine(None)
    try:
        factory = SampleFactory(
            graph,
            WalkConfig(verbalizer="llm", irrelevance_share=0.0, llm_retries=1, patterns={"1p": 1, "2i": 1}),
            engine=engine,
        )
        t = time.perf_counter()
        outcomes = factory.make(sample_seeds(args.seed, 0, args.llm_samples))
        elapsed = time.perf_counter() - t
    finally:
        engine.close()
    stats = factory.llm.stats
    checked = sum(v for k, v in stats.items() if k.startswith("back_translation."))
    kept = sum(o.record is not None for o in outcomes)
    print(
        f"llm (embedded default model): {kept}/{len(outcomes)} samples kept in {elapsed:.0f}s; "
        f"back-translation {dict(stats)}"
    )
    print(
        f"llm_paraphrases_accepted={stats['back_translation.accepted'] / max(checked, 1):.3f} "
        f"({stats['back_translation.accepted']}/{checked} checked)"
    )


if __name__ == "__main__":
    main()
