"""The `synth` command line."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from synth.core.errors import fail

app = typer.Typer(
    name="synth",
    help="Manufacture synthetic pre-training data: ingest crawls and books, synthesise, filter, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file, e.g. pipelines/ingest.yaml."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory; re-running the same command resumes it."),
    input: list[str] | None = typer.Option(
        None, "--input", "-i", help="Input path or glob (repeatable); default: the pipeline's inputs."
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = one per core)."),
    seed: int | None = typer.Option(None, help="Override the pipeline's seed."),
    executor: str = typer.Option("local", help="local (process pool) or ray."),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster address (with --executor ray); default starts a local Ray."
    ),
    engine_actors: int = typer.Option(0, help="With --executor ray: LLM engine actors (0 = one per GPU, or 1 on CPU)."),
    models: Path | None = typer.Option(
        None, help="Models file for LLM stages (overrides the pipeline's settings.models)."
    ),
    keep_intermediate: bool = typer.Option(
        False,
        "--keep-intermediate/--fuse",
        help="Write every stage's shards (for debugging). Default (--fuse): consecutive shard-by-shard stages run "
        "in one task and only the group's last stage writes its shards; the audit re-decides filters from their stored scores.",
    ),
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

        try:
            ex = RayExecutor(ray_address, engine_actors=engine_actors or None)
        except RuntimeError as exc:  # unreachable cluster: one line, not a Ray traceback
            fail(str(exc))
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
            keep_intermediate=keep_intermediate,
        )
    except (InputError, StageFailed, RuntimeError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: finished shards are kept; run the same command to resume", 130)
    rows = sum(_rows(p) for p in result.output)
    console.print(
        f"[green]done:[/] {rows:,} records in {result.run_dir / 'output'} ({len(result.output)} shards); see `synth audit {result.run_dir}`"
    )


def _print_replicas(out, stages: list[dict]) -> None:
    """Requests, failures and tokens per replica, for models with several."""
    from rich.table import Table

    from synth.llm.usage import replica_table

    rows = replica_table(stages)
    if not rows:
        return
    table = Table(title="model replicas")
    for col in ("stage", "model", "replica", "requests", "failures", "tokens"):
        table.add_column(col, justify="left" if col in ("stage", "model") else "right")
    for stage, model, i, requests, failures, tokens in rows:
        table.add_row(stage, model, str(i), f"{requests:,}", f"{failures:,}", f"{tokens:,}")
    out.print(table)


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (versioned schema, see README)."),
    examples: int = typer.Option(3, help="Rejected examples shown per drop reason."),
    what_if: list[str] | None = typer.Option(
        None,
        "--what-if",
        help="STAGE.OPTION=VALUE (repeatable): what that threshold would keep, from the stored scores.",
    ),
    sweep: list[str] | None = typer.Option(
        None, "--sweep", help="STAGE.OPTION (repeatable): retention curve of a numeric threshold over its range."
    ),
    overlap: bool = typer.Option(
        False, "--overlap", help="Which filters drop the same records (a seeded sample through every CPU filter)."
    ),
    overlap_sample: int = typer.Option(2000, help="Records sampled for --overlap."),
    compare: Path | None = typer.Option(
        None, "--compare", help="Another run directory to compare with, stage by stage and record by record."
    ),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML report to this file."),
) -> None:
    """What every stage kept and dropped, why, with score distributions; re-tune, compare."""
    from synth.audit.cli import run_audit
    from synth.audit.report import AuditError

    try:
        run_audit(
            run_dir,
            as_json=as_json,
            examples=examples,
            what_if=list(what_if or []),
            sweep=list(sweep or []),
            overlap=overlap,
            overlap_sample=overlap_sample,
            compare=compare,
            html=html,
            describe=_describe,
        )
    except AuditError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a damaged run directory: one line, not a traceback
        fail(f"audit of {run_dir} failed: {type(exc).__name__}: {exc}")


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
        text = str(
            record.get("text") or record.get("html") or record.get("messages") or record.get("rewrite") or record
        )[:180]
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
    from synth.filters.heuristic.decontaminate_cli import decontaminate
    from synth.ingest.quality_cli import quality_train
    from synth.llm.cli import models_app, serve

    app.add_typer(models_app, name="models")
    app.command("serve")(serve)
    app.command("decontaminate")(decontaminate)
    quality_app = typer.Typer(
        help="fastText quality classifiers: train one from labelled examples.", no_args_is_help=True
    )
    quality_app.command("train")(quality_train)
    app.add_typer(quality_app, name="quality")
    from synth.llm.route_cli import route_label, route_train

    route_app = typer.Typer(
        help="Domain classifiers for `route` and `self_instruct`: train one, label text.", no_args_is_help=True
    )
    route_app.command("train")(route_train)
    route_app.command("label")(route_label)
    app.add_typer(route_app, name="route")
    app.add_typer(kg_app, name="kg")
    from synth.ingest.blocklists_cli import blocklists_app

    app.add_typer(blocklists_app, name="blocklists")
    from synth.pack.cli import pack_command

    app.command("pack")(pack_command)
    from synth.dedup.report import register as register_dedup

    register_dedup(app)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
