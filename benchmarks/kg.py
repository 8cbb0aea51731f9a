"""Knowledge graph to tool-use: FB15k-237 load time and verified samples per second.

Timed, in this process on one core:
- load: parsing the labelled FB15k-237 TSV (310,116 triples) from scratch, then the
  cached load every later command does;
- generation: the full path of a sample with the template verbaliser (pattern draw,
  walk and grounding, question, tool calls executed against the graph, distractor
  tools, final answer, independent re-execution and verification, id and JSON
  encoding). Only samples that verify count.

    .venv/bin/python benchmarks/kg.py [--samples 5000] [--graph PATH]

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
    print(f"graph: {graph.name}: {graph.num_triples:,} triples, {graph.num_entities:,} entities, "
          f"{len(graph.relations)} relations")
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
    for outcome in factory.iter_records(args.samples, seed=args.seed):
        if outcome.record is None:
            dropped[outcome.reason] += 1
            continue
        kept += 1
        meta = json.loads(outcome.record["meta"])
        patterns[meta["pattern"]] += 1
        calls += meta.get("tool_calls", 0)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"attempted={args.samples} verified={kept} dropped={dict(dropped)}")
    print("per_pattern=" + json.dumps(dict(sorted(patterns.items()))))
    print(f"tool_calls_per_sample={calls / max(kept, 1):.2f} wall_s={elapsed:.2f} cpu_s={cpu:.2f} "
          f"load_avg_1m={os.getloadavg()[0]:.1f}")
    print(f"wall_samples_per_s={kept / elapsed:.0f}")
    # Per core: CPU seconds this process got, which stays meaningful when other jobs
    # share the machine (wall time then measures the neighbours too).
    shutil.rmtree(cache, ignore_errors=True)
    print(f"samples_per_s={kept / cpu:.0f}")


if __name__ == "__main__":
    main()
