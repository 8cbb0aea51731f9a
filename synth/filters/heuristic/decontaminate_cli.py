"""`synth decontaminate INPUT... --benchmark FILE... --output RUN`.

A two-stage pipeline (`read_records`, decontaminate) run by the ordinary executor,
so it resumes like any run and writes the same layout: kept rows in
`RUN/output/*.parquet`, every removed row in full under
`RUN/rejected/01-decontaminate/removed/` (with `decontam_match`: benchmark, item
id and the matching n-gram), and the usual bounded reject sample and ledger.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import typer

from synth.ingest.records import REJECT_SAMPLE, expand_inputs


def run_decontaminate(
    inputs: list[Path],
    benchmarks: list[str],
    output: Path,
    columns: list[str] | None = None,
    action: str = "drop",
    n: int = 13,
    cut_chars: int = 200,
    fields: list[str] | None = None,
    workers: int = 1,
    cache_dir: str | None = None,
    say=lambda _msg: None,
) -> dict:
    """Run the decontamination pipeline; returns rows in/kept/removed and matches per benchmark."""
    from synth.core.config import build_pipeline
    from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
    from synth.core.ledger import stage_totals
    from synth.core.rundir import RunDir

    output = Path(output).resolve()
    label = "01-decontaminate"
    stage = {
        "type": "decontaminate",
        "benchmarks": [_abs_spec(b) for b in benchmarks],
        "columns": columns or ["text"],
        "action": action,
        "n": n,
        "cut_chars": cut_chars,
        "removed_rows_dir": str(output / "rejected" / label / "removed"),
    }
    if fields:
        stage["fields"] = fields
    if cache_dir:
        stage["cache_dir"] = cache_dir
    raw = {
        "name": "decontaminate",
        "reject_sample_per_reason": REJECT_SAMPLE,
        "stages": [{"type": "read_records", "columns": stage["columns"]}, stage],
    }
    inputs_s = [str(Path(p).resolve()) if not any(c in str(p) for c in "*?[") else str(p) for p in inputs]
    expand_inputs(inputs_s)  # a missing or unsupported input is one clear error, before any work
    pipe = build_pipeline(raw)
    result = run_pipeline(
        pipe,
        PipelineSource(raw=raw, path=None, seed=pipe.seed),
        output,
        inputs=inputs_s,
        executor=LocalExecutor(workers),
        say=say,
    )
    totals = stage_totals(RunDir(output), label)
    source = stage_totals(RunDir(output), "00-read_records")
    matched = Counter({k.split(".", 1)[1]: v for k, v in totals["counters"].items() if k.startswith("matched.")})
    return {
        "rows": totals["in"],
        "kept": totals["out"],
        "removed": sum(totals["dropped"].values()),
        "unreadable": sum(source["dropped"].values()),
        "matched": dict(sorted(matched.items())),
        "output": [str(p) for p in result.output],
    }


def _abs_spec(spec: str) -> str:
    name, sep, path = spec.partition("=")
    if sep and not os.path.exists(spec):
        return f"{name}={Path(path).resolve()}"
    return str(Path(spec).resolve())


def decontaminate(
    inputs: list[Path] = typer.Argument(..., help="Parquet or JSONL files, folders or globs."),
    benchmark: list[str] = typer.Option(
        ...,
        "--benchmark",
        "-b",
        help="Benchmark file or folder (JSONL, JSONL.gz, CSV), optionally NAME=PATH; repeatable.",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Run directory: kept rows in RUN/output, removed rows in RUN/rejected."
    ),
    column: list[str] | None = typer.Option(
        None, "--column", "-c", help="Column(s) to check (default text); message lists are checked per message."
    ),
    action: str = typer.Option("drop", help="drop: remove rows with a hit; cut: remove the text around each hit."),
    ngram: int = typer.Option(13, help="n-gram length in normalised tokens (GPT-3: 13)."),
    cut_chars: int = typer.Option(200, help="With --action cut: characters removed on each side of a hit."),
    field: list[str] | None = typer.Option(
        None, "--field", help="Benchmark fields with the item text (default question, prompt, problem)."
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = one per core)."),
) -> None:
    """Remove rows that overlap evaluation benchmarks (GPT-3's 13-gram rule)."""
    from rich.console import Console

    console = Console(stderr=True)
    if action not in ("drop", "cut"):
        console.print(f"[bold red]error:[/] --action must be drop or cut, not {action!r}")
        raise typer.Exit(2)
    try:
        summary = run_decontaminate(
            inputs,
            benchmark,
            output,
            column,
            action,
            ngram,
            cut_chars,
            field,
            workers or (os.cpu_count() or 1),
            say=lambda m: console.print(m, highlight=False),
        )
    except Exception as exc:  # noqa: BLE001 - one clear line; finished shards are kept for the rerun
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for bench, rows in summary["matched"].items():
        print(f"{bench}: {rows:,} rows matched")
    verb = "removed" if action == "drop" else "removed (cut emptied them)"
    print(
        f"{summary['rows']:,} rows checked, {summary['kept']:,} kept, {summary['removed']:,} {verb}; kept rows in {Path(output) / 'output'}"
    )
