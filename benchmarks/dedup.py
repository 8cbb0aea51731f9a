"""Near-dup detection: synth's dedup_minhash against datasketch and rensa, in one run.

Test set: passages of the English books in shared/data/books with planted exact
and edited copies (synth.dedup.evaluate); ground truth is exact Jaccard >= 0.8
on word 5-grams (prefix-filter join, no sampling). A method is scored on the
documents it flags as having a near duplicate (doc-level precision/recall/F1).

Timed: everything from the texts to the flags (shingling, signatures, LSH,
verification), in this process, one core. Ours runs the real stage code path
(summarize per shard -> Parquet summaries -> reduce -> per-shard drop plans).

    .venv/bin/python benchmarks/dedup.py [--docs 22500] [--shards 8] [--rss N]

Last line: ratio=<ours docs/s / datasketch (9x13) docs/s>.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synth.core.stage import Shard
from synth.dedup.evaluate import doc_f1, planted_passages, shingle_sets, true_duplicate_pairs
from synth.dedup.exact import ExactDedup, ExactDedupOptions
from synth.dedup.minhash import MinHashDedup, MinHashOptions, rows_as_binary

BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "books"
_WORD = re.compile(r"\w+")


def python_shingles(text: str, k: int = 5) -> list[str]:
    """What a datasketch/rensa user typically writes: lower-cased words, space-joined k-grams."""
    words = _WORD.findall(text.lower())
    if len(words) < k:
        return [" ".join(words)] if words else []
    return list({" ".join(words[i : i + k]) for i in range(len(words) - k + 1)})


def run_ours(texts: list[str], shards: int, workdir: Path, **options) -> tuple[set[int], dict]:
    stage = MinHashDedup(MinHashOptions(**options))
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    summaries = []
    for s in range(shards):
        name = f"part-{s:05d}"
        part = table.slice(bounds[s], bounds[s + 1] - bounds[s])
        path = workdir / "_summaries" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(stage.summarize(part, Shard("01-dedup_minhash", s, name, 0)), path)
        summaries.append(path)
    state = workdir / "_state"
    state.mkdir(parents=True, exist_ok=True)
    stage.reduce(summaries, state)
    flagged: set[int] = set()
    for f in (state / "drops").glob("*.parquet"):
        t = pq.read_table(f)
        flagged.update(int(x) for x in t.column("id").to_pylist())
        flagged.update(int(x) for x in t.column("kept_id").to_pylist())
    return flagged, json.loads((state / "report.json").read_text())


def run_exact(texts: list[str], shards: int, workdir: Path):
    stage = ExactDedup(ExactDedupOptions())
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    summaries = []
    for s in range(shards):
        path = workdir / f"part-{s:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part = table.slice(bounds[s], bounds[s + 1] - bounds[s])
        pq.write_table(stage.summarize(part, Shard("01-dedup_exact", s, path.stem, 0)), path)
        summaries.append(path)
    state = workdir / "_state"
    state.mkdir()
    stage.reduce(summaries, state)
    return None, json.loads((state / "report.json").read_text())


def run_datasketch(texts: list[str], num_perm: int, params: tuple[int, int]) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    grams = [[g.encode("utf-8") for g in python_shingles(t)] for t in texts]
    keep = [i for i, g in enumerate(grams) if g]
    hashes = MinHash.bulk([grams[i] for i in keep], num_perm=num_perm)
    lsh = MinHashLSH(threshold=0.8, num_perm=num_perm, params=params)
    with lsh.insertion_session() as session:
        for i, m in zip(keep, hashes):
            session.insert(i, m)
    flagged: set[int] = set()
    for _, m in zip(keep, hashes):
        found = lsh.query(m)
        if len(found) > 1:
            flagged.update(found)
    return flagged


def run_rensa(texts: list[str], num_perm: int = 112, bands: int = 14, verify: float | None = 0.8) -> set[int]:
    from rensa import RMinHash, RMinHashLSH

    grams = [python_shingles(t) for t in texts]
    keep = [i for i, g in enumerate(grams) if g]
    hashes = RMinHash.from_token_sets([grams[i] for i in keep], num_perm, 42)
    lsh = RMinHashLSH(0.8, num_perm, bands)
    lsh.insert_many(hashes, 0)
    flagged: set[int] = set()
    for pos, (i, m) in enumerate(zip(keep, hashes)):
        for other in lsh.query(m):
            if other == pos:
                continue
            if verify is None or m.jaccard(hashes[other]) >= verify:
                flagged.add(i)
                flagged.add(keep[other])
    return flagged


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def make_synthetic_summaries(n_docs: int, shards: int, out: Path) -> list[Path]:
    """Summaries of n random docs, 10% of them near copies (~0.9 similar) of another doc."""
    stage = MinHashDedup(MinHashOptions())
    P = stage.num_perm
    rng = np.random.default_rng(0)
    paths = []
    per = n_docs // shards
    for s in range(shards):
        sig = rng.integers(0, 2**32, (per, P), dtype=np.uint32)
        copies = rng.random(per) < 0.1
        src = rng.integers(0, per, per)
        noise = rng.random((per, P)) < 0.1
        sig[copies] = np.where(noise[copies], sig[copies], sig[src[copies]])
        K = stage.options.verify_sketch
        sketch = np.full((per, K), 0xFFFFFFFF, np.uint32)
        sketch[:, : min(K, P)] = np.sort(sig, axis=1)[:, : min(K, P)]
        table = pa.table(
            {
                "id": pa.array([f"{s}-{i}" for i in range(per)]),
                "words": pa.array(np.full(per, 100, np.int32)),
                "sig": rows_as_binary(sig, pa.binary(4 * P)),
                "sketch": rows_as_binary(sketch, pa.binary(4 * K)),
            },
            schema=stage.summary_schema(),
        )
        path = out / f"part-{s:05d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def current_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def synthetic_rss(n_docs: int, shards: int) -> dict:
    """Peak RSS of the reduce alone; the summaries are made by a child process first."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(
            [sys.executable, __file__, "--make-summaries", str(tmp), "--docs", str(n_docs), "--shards", str(shards)],
            check=True,
        )
        summaries = sorted(tmp.glob("part-*.parquet"))
        stage = MinHashDedup(MinHashOptions())
        base = current_rss()
        state = tmp / "_state"
        state.mkdir()
        start = time.perf_counter()
        stage.reduce(summaries, state)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report = json.loads((state / "report.json").read_text())
    return {
        "docs": report["documents"],
        "dropped": report["dropped"],
        "peak_rss": peak,
        "before": base,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=22_500)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--min-words",
        type=int,
        default=25,
        help="passage length range (longer passages: sketches estimate rather than count)",
    )
    ap.add_argument("--max-words", type=int, default=95)
    ap.add_argument("--rss", type=int, default=0, help="instead: peak RSS of the reduce on N synthetic docs")
    ap.add_argument("--make-summaries", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_summaries:
        make_synthetic_summaries(args.docs, args.shards, args.make_summaries)
        return

    if args.rss:
        r = synthetic_rss(args.rss, args.shards)
        print(
            f"reduce on {r['docs']:,} synthetic docs ({r['dropped']:,} dropped): peak RSS {r['peak_rss'] / 2**20:.0f} MiB "
            f"(process before reduce {r['before'] / 2**20:.0f} MiB), "
            f"{(r['peak_rss'] - r['before']) / r['docs']:.0f} bytes/doc above baseline, {r['seconds']:.1f}s"
        )
        return

    books = sorted(
        p for p in BOOKS.glob("pg*.txt") if "latin1" not in p.name and "_nl" not in p.name and "_fr" not in p.name
    )
    texts, kinds = planted_passages(
        books, seed=args.seed, total=args.docs, min_words=args.min_words, max_words=args.max_words
    )
    truth = true_duplicate_pairs(shingle_sets(texts), 0.8)
    n = len(texts)
    print(
        f"{n:,} passages ({sum(k != 'original' for k in kinds):,} planted copies), {len(truth):,} true pairs at J>=0.8",
        file=sys.stderr,
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (kept, report), sec = timed(run_exact, texts, args.shards, Path(tmp) / "exact")
        print(
            f"dedup_exact: {n / sec:,.0f} docs/s, {report['dropped']:,} exact copies dropped (NFKC, case, punctuation, spacing)",
            file=sys.stderr,
        )
        for label, opts in [
            ("synth dedup_minhash 14x8 + verify 0.8 (numpy)", {}),
            ("synth dedup_minhash 14x8 + verify 0.8 (rensa engine)", {"engine": "rensa"}),
            ("synth dedup_minhash 14x8, no verify", {"threshold": None}),
            ("synth dedup_minhash 14x8 + verify 0.8 (datasketch engine)", {"engine": "datasketch"}),
        ]:
            work = Path(tmp) / f"run{len(rows)}"
            (flagged, report), sec = timed(run_ours, texts, args.shards, work, **opts)
            rows.append((label, doc_f1(flagged, truth), n / sec))
            print(f"{label}: {sec:.2f}s, reduce {report['seconds']:.2f}s", file=sys.stderr)
        flagged, sec = timed(run_datasketch, texts, 128, (9, 13))
        rows.append(("datasketch MinHashLSH 9x13 (128 perms)", doc_f1(flagged, truth), n / sec))
        ds_rate = rows[-1][2]
        flagged, sec = timed(run_datasketch, texts, 112, (14, 8))
        rows.append(("datasketch MinHashLSH 14x8 (112 perms)", doc_f1(flagged, truth), n / sec))
        flagged, sec = timed(run_rensa, texts)
        rows.append(("rensa 14x8 + estimated-Jaccard 0.8", doc_f1(flagged, truth), n / sec))
        flagged, sec = timed(run_rensa, texts, verify=None)
        rows.append(("rensa 14x8, no verify", doc_f1(flagged, truth), n / sec))

    print(f"{'method':<58} {'P':>6} {'R':>6} {'F1':>6} {'docs/s':>9}")
    for label, m, rate in rows:
        print(f"{label:<58} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {rate:9,.0f}")
    print(f"ratio={rows[0][2] / ds_rate:.2f}")


if __name__ == "__main__":
    main()
