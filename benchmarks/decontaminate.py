"""Decontamination speed: index build for GSM8K + HumanEval + MMLU, cache load,
and seconds per MB of input, ours against a plain Python set of 13-gram tuples
(the common hand-written approach), side by side in one run.

    .venv/bin/python benchmarks/decontaminate.py [--shared ../shared/data]

Last line: `ratio=<theirs_s_per_mb / ours_s_per_mb>` (above 1: we are faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from synth.filters.heuristic.decontaminate import (
    Decontaminate,
    DecontaminateOptions,
    NgramIndex,
    read_benchmark,
    tokenize,
)

FIELDS = ["question", "prompt", "problem"]


def naive_index(specs, n=13, min_tokens=8):
    grams = set()
    for spec in specs:
        items, _ = read_benchmark(spec, FIELDS)
        for it in items:
            toks = tokenize(it.text)
            if len(toks) >= n:
                grams.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
            elif len(toks) >= min_tokens:
                grams.add(tuple(toks))
    return grams


def naive_match(grams, text, n=13, lengths=range(8, 14)):
    toks = tokenize(text)
    return any(tuple(toks[i : i + k]) in grams for k in lengths for i in range(len(toks) - k + 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=3, help="passes over the input (medians reported)")
    args = ap.parse_args()
    data = Path(args.shared)
    b = data / "benchmarks"
    specs = [
        str(b / "gsm8k" / "test.jsonl"),
        str(b / "gsm8k" / "train.jsonl"),
        str(b / "humaneval" / "HumanEval.jsonl.gz"),
        str(b / "mmlu" / "test"),
        str(b / "mmlu" / "dev"),
    ]
    texts = []
    for f in sorted((data / "books").glob("pg*.txt")):
        t = f.read_text(encoding="utf-8", errors="replace")
        texts += [t[i : i + 2000] for i in range(0, len(t), 2000)]
    mb = sum(len(t.encode()) for t in texts) / 1e6

    t0 = time.perf_counter()
    index = NgramIndex.build(specs, FIELDS)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    grams = naive_index(specs)
    naive_build = time.perf_counter() - t0
    print(
        f"index: {sum(index.stats['items'].values()):,} items, {index.stats['grams']:,} grams; build {build:.2f}s (naive set {naive_build:.2f}s)"
    )
    with tempfile.TemporaryDirectory() as cache:
        stage = Decontaminate(DecontaminateOptions(benchmarks=specs, cache_dir=cache))
        stage.setup()  # builds and saves
        t0 = time.perf_counter()
        stage = Decontaminate(DecontaminateOptions(benchmarks=specs, cache_dir=cache))
        stage.setup()
        print(f"cached index load (incl. hashing the benchmark files): {time.perf_counter() - t0:.3f}s")
        stage.match_many(texts[:50])  # warm the token cache and the filter bitmap

        ours, theirs = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            hits = sum(1 for h in stage.match_many(texts) if h)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            naive_hits = sum(1 for t in texts if naive_match(grams, t))
            theirs.append(time.perf_counter() - t0)
        ours_s, theirs_s = sorted(ours)[len(ours) // 2] / mb, sorted(theirs)[len(theirs) // 2] / mb
        print(f"input: {len(texts):,} book passages, {mb:.1f} MB; flagged ours {hits}, naive {naive_hits}")
        print(f"ours {ours_s:.3f} s/MB ({1 / ours_s:.1f} MB/s); naive {theirs_s:.3f} s/MB ({1 / theirs_s:.1f} MB/s)")
        print(f"ratio={theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
