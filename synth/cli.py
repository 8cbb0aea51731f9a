"""The `synth` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="synth",
    help="Manufacture synthetic pre-training data: ingest crawls and books, synthesise, filter, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr instead of a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file, e.g. pipelines/ingest.yaml."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory; re-running the same command resumes it."),
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="Input path or glob (repeatable); default: the pipeline's inputs."),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = one per core)."),
    seed: Optional[int] = typer.Option(None, help="Override the pipeline's seed."),
    executor: str = typer.Option("local", help="local (process pool) or ray."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (with --executor ray); default starts a local Ray."),
    models: Optional[Path] = typer.Option(None, help="Models file for LLM stages (overrides the pipeline's settings.models)."),
) -> None:
    """Run (or resume) a pipeline into a run directory."""
    from synth.core.config import ConfigError, load_pipeline
    from synth.core.executor import InputError, LocalExecutor, PipelineSource, StageFailed, run_pipeline
    from synth.core.progress import rich_progress

    # vLLM's per-step INFO lines would bury the progress bars; its warnings still show.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    overrides = {"models": str(models)} if models else {}
    try:
        pipe = load_pipeline(pipeline, seed=seed, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc), 2)
    source = PipelineSource(raw=pipe.raw, path=str(pipeline), seed=pipe.seed, overrides=overrides)
    if executor == "ray":
        from synth.core.executor import RayExecutor

        ex = RayExecutor(ray_address)
    elif executor == "local":
        ex = LocalExecutor(workers or None)
    else:
        fail(f"--executor must be local or ray, not {executor!r}", 2)
    try:
        result = run_pipeline(
            pipe,
            source,
            output,
            inputs=list(input) if input else None,
            executor=ex,
            progress=rich_progress(console),
            say=lambda m: console.print(m, highlight=False),
        )
    except (InputError, StageFailed, RuntimeError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: finished shards are kept; run the same command to resume", 130)
    rows = sum(_rows(p) for p in result.output)
    console.print(f"[green]done:[/] {rows:,} records in {result.run_dir / 'output'} ({len(result.output)} shards); see `synth audit {result.run_dir}`")


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the ledger as JSON."),
    examples: int = typer.Option(3, help="Rejected examples shown per drop reason."),
) -> None:
    """What every stage kept and dropped, and why."""
    from synth.core.ledger import audit as build_audit
    from synth.core.ledger import reject_samples

    try:
        report = build_audit(run_dir)
    except FileNotFoundError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from rich.table import Table

    # Piped output (a log, CI) gets a readable width instead of 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=160)
    table = Table(title=f"{report['pipeline']}: {report['run']}" + ("" if report["complete"] else " (incomplete)"))
    for col in ("stage", "in", "out", "dropped", "top reasons", "shards", "seconds"):
        table.add_column(col, justify="right" if col in ("in", "out", "dropped", "shards", "seconds") else "left", no_wrap=col != "top reasons")
    for s in report["stages"]:
        dropped = sum(s["dropped"].values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in list(s["dropped"].items())[:3])
        table.add_row(s["stage"], f"{s['in']:,}", f"{s['out']:,}", f"{dropped:,}", reasons, f"{s['shards_done']}/{s['shards']}", f"{s['seconds']:.1f}")
    out.print(table)
    for s in report["stages"]:
        if s.get("type") == "kg_walk":  # per pattern: requested, produced, failures, unavailable
            from kg.cli import print_pattern_report

            print_pattern_report(s["counters"], out)
    for s in report["stages"]:
        samples = reject_samples(run_dir, s["stage"], examples)
        for reason, rows in samples.items():
            count = s["dropped"].get(reason, s["counters"].get(reason, 0))
            verb = "discarded" if reason.startswith("discarded.") else "dropped"
            out.print(f"[bold]{s['stage']}[/] {verb} [yellow]{reason.removeprefix('discarded.')}[/] ({count:,}), e.g.:")
            for row in rows:
                text = _describe(row["record"])
                scores = f" scores={row['scores']}" if row["scores"] else ""
                out.print(f"  - {row['id'][:12]} {text!r}{scores}", highlight=False)


@app.command("inputs")
def list_inputs(paths: list[str] = typer.Argument(..., help="Paths, folders or globs, as given to --input.")) -> None:
    """What `read` would make of each input: detected format, gzip, size."""
    from synth.core.executor import InputError
    from synth.ingest.read import describe_inputs

    try:
        rows = describe_inputs(paths)
    except InputError as exc:
        fail(str(exc))
    for row in rows:
        typer.echo(f"{row['format']:8s} {'gz' if row['gzip'] else '  '} {row['bytes']:>12,d}  {row['path']}")
    typer.echo(f"{len(rows)} files, one shard each (large archives are split into byte ranges)")


def _describe(record: dict) -> str:
    """A one-line view of a rejected record: the text a reader needs to judge the drop."""
    if record.get("instruction"):
        text = f"Q: {record['instruction'][:100]}"
        if record.get("response"):
            text += f" | A: {record['response'][:80]}"
    else:
        text = str(record.get("text") or record.get("html") or record.get("messages") or record.get("rewrite") or record)[:180]
    return text.replace("\n", " ")


@app.command("stages")
def list_stages() -> None:
    """List the stage types: built-in, then those plugins declare (entry points `synth.stages`)."""
    from synth.core.registry import all_stage_types

    for name, target in all_stage_types().items():
        typer.echo(f"{name:20s} {target}")


def _register_subcommands() -> None:
    """Commands that live beside the code they drive (each module imports its heavy
    libraries inside its functions, so --help stays fast)."""
    from kg.cli import kg_app
    from synth.filters.decontaminate_cli import decontaminate
    from synth.ingest.quality_cli import quality_train
    from synth.llm.cli import models_app, serve

    app.add_typer(models_app, name="models")
    app.command("serve")(serve)
    app.command("decontaminate")(decontaminate)
    quality_app = typer.Typer(help="fastText quality classifiers: train one from labelled examples.", no_args_is_help=True)
    quality_app.command("train")(quality_train)
    app.add_typer(quality_app, name="quality")
    app.add_typer(kg_app, name="kg")
    from synth.ingest.blocklists_cli import blocklists_app

    app.add_typer(blocklists_app, name="blocklists")
    from synth.dedup.report import register as register_dedup

    register_dedup(app)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
