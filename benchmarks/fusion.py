"""Stage fusion: bytes written under the run directory and wall time of the ingest
pipeline (pipelines/ingest.yaml) on the shared data, fused (the default) against
`--keep-intermediate` (every stage writes its shards), side by side in one run.

    .venv/bin/python benchmarks/fusion.py [--workers 2] [--repeat 1]

Bytes are counted once per file (RUN/output hard-links the last stage's shards),
split into stage shards, global-stage summaries/state, statistics (ledger,
profiles) and rejects, and by folder (output, stages/NN-name, rejected/NN-name) so
the reader sees where they go. Both runs must give the same output rows, and
`synth audit --what-if` on every CPU filter and `--overlap` the same numbers (checked).

The last line is `disk_ratio=<fused run dir bytes / output bytes>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow.parquet as pq  # noqa: E402

from synth.core.config import load_pipeline  # noqa: E402
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline  # noqa: E402


def files_once(paths, root: Path):
    """(path, parts relative to `root`, bytes) of each regular file, each inode once
    (RUN/output holds hard links to the last stage's shards)."""
    seen: set[tuple[int, int]] = set()
    for path in paths:
        if not path.is_file():
            continue
        st = path.stat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        yield path, path.relative_to(root).parts, st.st_size


def disk_usage(root: Path) -> dict[str, int]:
    """Bytes under `root` by kind, each inode once."""
    kinds = {"stage shards": 0, "global state": 0, "statistics": 0, "rejects": 0, "other": 0}
    for path, rel, size in files_once(root.rglob("*"), root):
        if rel[0] == "rejected":
            kind = "rejects"
        elif rel[0] == "stages" and ("_state" in rel or "_summaries" in rel):
            kind = "global state"
        elif rel[0] in ("stages", "output") and path.suffix == ".parquet":
            kind = "stage shards"
        elif path.suffix == ".json":
            kind = "statistics"
        else:
            kind = "other"
        kinds[kind] += size
    return kinds


def folder_usage(root: Path) -> dict[str, int]:
    """Bytes under `root` per folder (output, stages/NN-name, rejected/NN-name, other), each inode once;
    RUN/output's hard links count under output."""
    folders: dict[str, int] = {}
    paths = sorted(root.rglob("*"), key=lambda p: (p.relative_to(root).parts[0] != "output", str(p)))
    for _path, rel, size in files_once(paths, root):
        key = (
            "/".join(rel[:2])
            if rel[0] in ("stages", "rejected") and len(rel) > 2
            else rel[0]
            if len(rel) > 1
            else "(top)"
        )
        folders[key] = folders.get(key, 0) + size
    return folders


def audit_numbers(run_dir: Path) -> dict:
    """What-if (every CPU filter, with annotate_only=true: every record it saw) and overlap, without examples' timing noise."""
    from synth.audit.overlap import overlap
    from synth.audit.report import build_report
    from synth.audit.whatif import what_if

    report = build_report(run_dir)
    filters = [
        s["stage"]
        for s in report["stages"]
        if s["type"] in ("url_filter", "langid", "gopher_repetition", "gopher_quality", "c4_quality", "c4_badwords")
    ]
    results = what_if(run_dir, report, [f"{label}.annotate_only=true" for label in filters])
    numbers = {
        r["stage"]: (r["records"], r["kept_before"], r["kept_after"], r["dropped_after"], r["exact"]) for r in results
    }
    o = overlap(run_dir)
    return {"what_if": numbers, "overlap": (o["sample"], o["filters"], o["drops"], o["matrix"], o["alone"])}


def shard_io_seconds(run_dir: Path) -> tuple[float, int]:
    """Seconds to write and read back every stage shard of a run, and records in them:
    what fusing a stage saves, the yardstick for whether fusing LLM stages is worth it."""
    from synth.core.rundir import atomic_write_parquet

    seconds, records = 0.0, 0
    for part in sorted((run_dir / "stages").glob("*/part-*.parquet")):
        copy = part.with_name("io-probe.parquet")
        start = time.perf_counter()
        table = pq.read_table(part)
        atomic_write_parquet(copy, table)
        seconds += time.perf_counter() - start
        records += table.num_rows
        copy.unlink()
    return seconds, records


def one_run(
    pipeline_path: Path, run_dir: Path, workers: int, keep: bool
) -> tuple[float, dict[str, int], int, list, dict[str, int]]:
    pipe = load_pipeline(pipeline_path)
    source = PipelineSource(raw=pipe.raw, path=str(pipeline_path), seed=pipe.seed)
    start = time.perf_counter()
    result = run_pipeline(pipe, source, run_dir, executor=LocalExecutor(workers), keep_intermediate=keep)
    seconds = time.perf_counter() - start
    output_bytes = sum(p.stat().st_size for p in result.output)
    ids = [i for p in result.output for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    return seconds, disk_usage(run_dir), output_bytes, ids, folder_usage(run_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds; wall times are medians")
    ap.add_argument("--pipeline", type=Path, default=REPO / "pipelines" / "ingest.yaml")
    args = ap.parse_args()
    os.environ.setdefault("SYNTH_DATA", str(REPO.parent / "shared" / "data"))

    io = (0.0, 0)
    times: dict[str, list[float]] = {"fused": [], "keep-intermediate": []}
    usage: dict[str, dict[str, int]] = {}
    output: dict[str, int] = {}
    ids: dict[str, list] = {}
    folders: dict[str, dict[str, int]] = {}
    audits: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="synth-fusion-") as tmp:
        for round_ in range(args.repeat):
            # alternate the order so neither side always runs on a warm cache
            order = ["fused", "keep-intermediate"] if round_ % 2 == 0 else ["keep-intermediate", "fused"]
            for mode in order:
                run_dir = Path(tmp) / f"{mode}-{round_}"
                seconds, usage[mode], output[mode], ids[mode], folders[mode] = one_run(
                    args.pipeline, run_dir, args.workers, mode != "fused"
                )
                times[mode].append(seconds)
                if round_ == 0:
                    audits[mode] = audit_numbers(run_dir)
                if mode != "fused" and round_ == 0:
                    io = shard_io_seconds(run_dir)
                shutil.rmtree(run_dir)
    if ids["fused"] != ids["keep-intermediate"]:
        raise SystemExit("fused and --keep-intermediate outputs differ")
    if audits["fused"] != audits["keep-intermediate"]:
        raise SystemExit(f"audit what-if/overlap differ: fused {audits['fused']} against {audits['keep-intermediate']}")

    print(
        f"ingest pipeline on the shared data, {args.workers} workers, {args.repeat} round(s); output {output['fused']:,} bytes, {len(ids['fused']):,} records"
    )
    print(
        f"{'':20} {'run dir bytes':>14} {'shards':>12} {'global':>10} {'stats':>10} {'rejects':>10} {'wall s':>8} {'disk ratio':>10}"
    )
    for mode in ("fused", "keep-intermediate"):
        u = usage[mode]
        total = sum(u.values())
        print(
            f"{mode:20} {total:>14,} {u['stage shards']:>12,} {u['global state']:>10,} {u['statistics']:>10,} {u['rejects']:>10,}"
            f" {statistics.median(times[mode]):>8.1f} {total / output[mode]:>10.2f}"
        )
    print(f"{'bytes by folder':32} {'fused':>12} {'keep-intermediate':>18}")
    for key in sorted(set(folders["fused"]) | set(folders["keep-intermediate"])):
        print(f"{key:32} {folders['fused'].get(key, 0):>12,} {folders['keep-intermediate'].get(key, 0):>18,}")
    print(f"audit what-if ({len(audits['fused']['what_if'])} filters) and overlap: the same numbers on both runs")
    fused_total, kept_total = sum(usage["fused"].values()), sum(usage["keep-intermediate"].values())
    print(
        f"stage shard write+read: {io[0]:.2f} s for {io[1]:,} records = {1e6 * io[0] / max(io[1], 1):.0f} us/record (what fusing saves per stage)"
    )
    print(f"bytes_saved={kept_total / fused_total:.2f}x")
    print(
        f"wall_ratio={statistics.median(times['keep-intermediate']) / statistics.median(times['fused']):.2f} (keep-intermediate / fused)"
    )
    print(f"disk_ratio={fused_total / output['fused']:.2f}")


if __name__ == "__main__":
    main()
