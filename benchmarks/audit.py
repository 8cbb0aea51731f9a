"""Audit: what the statistics cost a run, and how long the audit of a big run takes.

    .venv/bin/python benchmarks/audit.py [--records 1000000] [--shards 20] [--rounds 2]

Runs one cheap pipeline (synthetic text with language/domain/kind columns, a
word-count filter and a digit-share filter: tests/audit/toy.py) through the real
executor, one worker, with the audit statistics on and off (SYNTH_AUDIT_STATS=0),
alternating, in one process. Then times `synth audit --json` and `--html` on the
run made with statistics. Last line: overhead=<seconds with / seconds without>
(CPU seconds; the median over rounds of each round's ratio; the ratio of medians and the
wall-clock ratio are printed too).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.core.config import build_pipeline  # noqa: E402
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline  # noqa: E402

T = "tests.audit.toy"


def pipeline_raw(records: int, shards: int) -> dict:
    return {
        "name": "audit-bench",
        "seed": 0,
        "stages": [
            {"type": f"{T}:SyntheticText", "per_shard": records // shards, "shards": shards},
            {"type": f"{T}:MinWords", "min_words": 10},
            {"type": f"{T}:MaxDigits", "max_digit_frac": 0.2},
        ],
    }


def one_run(raw: dict, out: Path, stats_on: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; one worker, in this process."""
    os.environ["SYNTH_AUDIT_STATS"] = "1" if stats_on else "0"
    shutil.rmtree(out, ignore_errors=True)
    pipe = build_pipeline(raw, seed=0)
    wall, cpu = time.perf_counter(), time.process_time()
    run_pipeline(pipe, PipelineSource(raw=raw, path=None, seed=0), out, executor=LocalExecutor(1))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    raw = pipeline_raw(args.records, args.shards)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="synth-audit-bench-"))
    # Warm-up (imports, kernel caches), untimed, so the first timed run is not penalised.
    for stats_on in (True, False):
        one_run(pipeline_raw(2_000, 2), work / "warmup", stats_on)
    on, off = [], []
    for r in range(args.rounds):
        order = [(True, on), (False, off)] if r % 2 == 0 else [(False, off), (True, on)]
        for stats_on, bucket in order:
            bucket.append(one_run(raw, work / ("with" if stats_on else "without"), stats_on))
            print(
                f"round {r + 1}: statistics {'on ' if stats_on else 'off'} {bucket[-1][0]:.2f}s wall, {bucket[-1][1]:.2f}s CPU",
                flush=True,
            )
    os.environ["SYNTH_AUDIT_STATS"] = "1"
    one_run(raw, work / "with", True) if not (work / "with" / "output").exists() else None

    from synth.audit.cli import run_audit
    from synth.cli import _describe

    run = work / "with"

    def audit_json(html):
        with redirect_stdout(io.StringIO()) as buf:
            run_audit(
                run,
                as_json=True,
                examples=3,
                what_if=[],
                sweep=[],
                overlap=False,
                overlap_sample=0,
                compare=None,
                html=html,
                describe=_describe,
            )
        return buf.getvalue()

    start = time.perf_counter()
    report = json.loads(audit_json(None))
    t_json = time.perf_counter() - start
    start = time.perf_counter()
    audit_json(work / "audit.html")
    t_html = time.perf_counter() - start
    records = report["stages"][0]["out"]
    seen = report["profiles"]["01-toy_min_words"]["scores"]["toy_words"]["count"]
    print(f"records={records:,} shards={args.shards} (scores summarised over {seen:,} records)")
    wall_on, wall_off = statistics.median(w for w, _ in on), statistics.median(w for w, _ in off)
    cpu_on, cpu_off = statistics.median(c for _, c in on), statistics.median(c for _, c in off)
    print(
        f"run with statistics: {wall_on:.2f}s wall / {cpu_on:.2f}s CPU; without: {wall_off:.2f}s / {cpu_off:.2f}s (median of {args.rounds}); wall ratio {wall_on / wall_off:.3f}"
    )
    print(
        f"synth audit --json: {t_json:.2f}s; --json --html: {t_html:.2f}s ({(work / 'audit.html').stat().st_size / 1e6:.1f} MB page)"
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    # CPU seconds, and the median of each round's on/off ratio: rounds run back to back,
    # so a ratio within a round cancels most of a shared machine's drifting load.
    paired = [a[1] / b[1] for a, b in zip(on, off)]
    print(f"per-round CPU ratios: {', '.join(f'{r:.3f}' for r in paired)}; ratio of medians {cpu_on / cpu_off:.3f}")
    print(f"overhead={statistics.median(paired):.3f}")


if __name__ == "__main__":
    main()
