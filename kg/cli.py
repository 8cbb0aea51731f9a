"""`synth kg ...`: graph statistics, walking a graph into tool-use samples, exports."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kg.stage import KGWalkOptions
from synth.core.cli_options import option_from
from synth.core.errors import fail as _fail

kg_app = typer.Typer(help="Knowledge graph to tool-use data: stats, walk, export.", no_args_is_help=True)
console = Console()


@kg_app.command()
def stats(
    graph: Path = typer.Argument(
        ..., help="Triples: TSV (head, relation, tail), labelled FB15k-237 TSV, N-Triples, or a folder of such files."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Parse again even when a cached copy exists."),
) -> None:
    """Load a graph and report its size, degrees, top relations and bad rows."""
    from kg.graph import load_graph

    try:
        g = load_graph(graph, use_cache=not no_cache)
    except (FileNotFoundError, OSError) as exc:
        _fail(str(exc), 2)
    info = g.stats()
    info["load_seconds"] = round(g.report.seconds, 3)
    info["from_cache"] = g.report.from_cache
    info["bad_row_examples"] = [{"file": f, "line": n, "why": w} for f, n, w in g.report.bad_examples[:5]]
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"graph {g.name}", show_header=False)
    for key in (
        "entities",
        "relations",
        "triples",
        "duplicate_triples",
        "bad_rows",
        "renamed_entities",
        "isolated_entities",
        "degree_median",
        "degree_max",
        "load_seconds",
        "from_cache",
    ):
        table.add_row(
            key.replace("_", " "),
            f"{info[key]:,}" if isinstance(info[key], int) and not isinstance(info[key], bool) else str(info[key]),
        )
    console.print(table)
    top = Table(title="top relations")
    top.add_column("relation")
    top.add_column("triples", justify="right")
    for rel, n in info["top_relations"]:
        top.add_row(rel, f"{n:,}")
    console.print(top)
    for ex in info["bad_row_examples"]:
        console.print(f"[yellow]bad row[/] {ex['file']}:{ex['line']}: {ex['why']}", highlight=False)


@kg_app.command()
def walk(
    graph: Path = typer.Argument(..., help="Graph file or folder (see `synth kg stats`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory; samples land in RUN/output/*.parquet."),
    samples: int = option_from(KGWalkOptions, "samples", "--samples", "-n", min=1, help="Samples to attempt."),
    seed: int = typer.Option(0, "--seed", help="Run seed; the same seed gives the same samples."),
    patterns: str | None = typer.Option(None, "--patterns", help="e.g. 1p,2i,pni or 1p:3,2i:1 (shares)."),
    verbalizer: str = option_from(KGWalkOptions, "verbalizer", "--verbalizer", help="template or llm."),
    llm_model: str | None = option_from(
        KGWalkOptions, "llm_model", "--llm-model", help="Model name in the models file (llm)."
    ),
    models: Path | None = typer.Option(None, "--models", help="Models file for the llm verbaliser."),
    max_answers: int = option_from(KGWalkOptions, "max_answers", "--max-answers", min=1, help="Largest answer set."),
    error_share: float = option_from(
        KGWalkOptions, "error_share", "--error-share", min=0, max=1, help="Share with a corrected wrong call."
    ),
    irrelevance_share: float = option_from(
        KGWalkOptions,
        "irrelevance_share",
        "--irrelevance-share",
        min=0,
        max=1,
        help="Share no offered tool can answer.",
    ),
    allow_trivial: bool = option_from(
        KGWalkOptions,
        "allow_trivial",
        "--allow-trivial",
        help="Keep queries whose answer holds an anchor or that go along a relation and straight back.",
    ),
    eval_split: float = option_from(
        KGWalkOptions,
        "eval_split",
        "--eval-split",
        min=0,
        max=0.99,
        help="Share held out as an evaluation "
        "split (RUN/eval/) that shares no anchor entity with the training samples.",
    ),
    eval_relations: float = option_from(
        KGWalkOptions,
        "eval_relations",
        "--eval-relations",
        min=0,
        max=0.99,
        help="Also hold out this share of relations for the evaluation split.",
    ),
    back_translate: bool = option_from(
        KGWalkOptions,
        "back_translate",
        "--back-translate/--no-back-translate",
        help="LLM verbaliser: check each paraphrase by back-translation.",
    ),
    samples_per_shard: int = option_from(KGWalkOptions, "samples_per_shard", "--samples-per-shard", min=1),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = one per core)."),
) -> None:
    """Walk a graph into verified tool-use conversations (resumable, with ledger)."""
    from kg.config import parse_patterns
    from synth.core.config import ConfigError, build_pipeline
    from synth.core.executor import (
        InputError,
        LocalExecutor,
        PipelineSource,
        StageFailed,
        run_pipeline,
    )
    from synth.core.ledger import stage_totals
    from synth.core.progress import rich_progress
    from synth.core.rundir import RunDir

    if verbalizer not in ("template", "llm"):
        _fail("--verbalizer must be template or llm", 2)
    if not graph.exists():
        _fail(f"{graph}: no such file or folder", 2)
    stage: dict = {
        "type": "kg_walk",
        "graph": str(graph.resolve()),
        "samples": samples,
        "samples_per_shard": samples_per_shard,
        "verbalizer": verbalizer,
        "max_answers": max_answers,
        "error_share": error_share,
        "irrelevance_share": irrelevance_share,
    }
    # only non-defaults, so runs made before these options existed resume unchanged
    for key, value, default in (
        ("allow_trivial", allow_trivial, False),
        ("eval_split", eval_split, 0.0),
        ("eval_relations", eval_relations, 0.0),
        ("back_translate", back_translate, True),
    ):
        if value != default:
            stage[key] = value
    try:
        shares = parse_patterns(patterns)
    except ValueError:
        _fail(f"--patterns: cannot read {patterns!r}", 2)
    if shares:
        stage["patterns"] = shares
    if llm_model:
        stage["llm_model"] = llm_model
    raw = {"name": "kg_walk", "seed": seed, "stages": [stage]}
    if models:
        raw["settings"] = {"models": str(models.resolve())}
    try:
        pipe = build_pipeline(raw, seed=seed)
    except ConfigError as exc:
        _fail(str(exc), 2)
    source = PipelineSource(raw=raw, path=None, seed=seed)
    try:
        result = run_pipeline(
            pipe,
            source,
            output,
            inputs=[],
            executor=LocalExecutor(workers or None),
            progress=rich_progress(console),
            say=lambda m: console.print(m, highlight=False),
        )
    except (InputError, StageFailed, RuntimeError, OSError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted: finished shards are kept; run the same command to resume", 130)
    totals = stage_totals(RunDir(result.run_dir), pipe.stages[0].label, "kg_walk")
    _print_ledger(totals)
    held = totals["counters"].get("split.eval", 0)  # written beside the output, not part of `out`
    console.print(f"[green]done:[/] {totals['out']:,} verified samples in {result.run_dir / 'output'}", highlight=False)
    if eval_split > 0:
        console.print(
            f"[green]evaluation split:[/] {held:,} samples in {result.run_dir / 'eval'} "
            "(no anchor shared with the training samples)",
            highlight=False,
        )


def pattern_report(counters: dict) -> tuple[list[tuple[str, int, int, int, str]], list[str]]:
    """Per pattern (requested, produced, failed groundings, top failure reasons), and one
    sentence per pattern the graph could not produce. Shared by `kg walk` and `synth audit`."""
    from collections import Counter

    from kg.query import PATTERNS

    failed: dict[str, Counter] = {}
    unavailable: list[str] = []
    for key, n in counters.items():
        if key.startswith("pattern_failed."):
            _, pattern, reason = key.split(".", 2)
            failed.setdefault(pattern, Counter())[reason] += n
        elif ".pattern_unavailable." in f".{key}":
            prefix, _, rest = key.partition("pattern_unavailable.")
            pattern, _, reason = rest.partition(".")
            split = prefix.rstrip(".") or "train"
            where = "" if split == "train" else f" in the {split} split"
            unavailable.append(
                f"pattern {pattern} was not produced{where}: the graph is too sparse for it "
                f"(every probe grounding failed, mostly '{reason}'); its share went to the "
                "other patterns"
            )
    rows = []
    for p in [*PATTERNS, "irrelevance"]:
        asked, made = counters.get(f"pattern_requested.{p}", 0), counters.get(f"pattern.{p}", 0)
        fails = failed.get(p, Counter())
        if asked or made or fails:
            top = ", ".join(f"{r} {n:,}" for r, n in fails.most_common(2))
            rows.append((p, asked, made, sum(fails.values()), top))
    return rows, unavailable


def _print_ledger(totals: dict) -> None:
    counters = totals["counters"]
    print_pattern_report(counters, console)
    variants = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("variant.")}
    if variants:
        console.print("variants: " + ", ".join(f"{k} {v:,}" for k, v in sorted(variants.items())), highlight=False)
    if totals["dropped"]:
        drops = Table(title="drops per reason")
        drops.add_column("reason")
        drops.add_column("count", justify="right")
        for reason, n in totals["dropped"].items():
            drops.add_row(reason, f"{n:,}")
        console.print(drops)


def print_pattern_report(counters: dict, out) -> None:
    rows, unavailable = pattern_report(counters)
    table = Table(title="samples per pattern")
    for col in ("pattern", "requested", "produced", "re-sampled", "top failure reasons"):
        table.add_column(
            col,
            justify="left" if col in ("pattern", "top failure reasons") else "right",
            no_wrap=True,
            overflow="ellipsis" if col == "top failure reasons" else "fold",
        )
    for p, asked, made, fails, top in rows:
        table.add_row(p, f"{asked:,}", f"{made:,}", f"{fails:,}", top)
    out.print(table)
    for sentence in unavailable:
        out.print(f"[bold yellow]note:[/] {sentence}", highlight=False)
    from kg.query import TRIVIAL_REASONS

    trivial = {r: counters[f"query_rejected.{r}"] for r in TRIVIAL_REASONS if counters.get(f"query_rejected.{r}")}
    if trivial:
        out.print(
            "trivial queries rejected and re-sampled: " + ", ".join(f"{k} {v:,}" for k, v in sorted(trivial.items())),
            highlight=False,
        )


@kg_app.command()
def preview(
    graph: Path = typer.Argument(..., help="Graph file or folder."),
    samples: int = typer.Option(3, "--samples", "-n", min=1, max=100),
    seed: int = typer.Option(0, "--seed"),
    patterns: str | None = typer.Option(None, "--patterns", help="e.g. 2i,pni"),
    error_share: float = typer.Option(0.15, "--error-share", min=0, max=1),
) -> None:
    """Print a few conversations, to look at wording and tool calls before a big run."""
    from kg.config import WalkConfig, parse_patterns
    from kg.generate import SampleFactory, sample_seeds
    from kg.graph import load_graph

    try:
        shares = parse_patterns(patterns)
        cfg = WalkConfig(**({"patterns": shares} if shares else {}), error_share=error_share)
    except ValueError as exc:
        _fail(str(exc), 2)
    factory = SampleFactory(load_graph(graph), cfg)
    for outcome in factory.make(sample_seeds(seed, 0, samples)):
        if outcome.record is None:
            console.print(f"[yellow]dropped[/] {outcome.reason}", highlight=False)
            continue
        meta = json.loads(outcome.record["meta"])
        console.rule(f"{meta['pattern']} / {meta['variant']} / answer {meta['answer']}")
        for m in outcome.record["messages"]:
            head = f"[bold]{m['role']}[/]"
            if m["content"]:
                console.print(f"{head}: {m['content']}", highlight=False)
            for c in m["tool_calls"] or []:
                console.print(f"{head} -> {c['function']['name']}({c['function']['arguments']})", highlight=False)


@kg_app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory (uses RUN/output), shard folder or parquet file."),
    format: str = typer.Option("sharegpt", "--format", "-f", help="sharegpt, hermes, openai or mistral."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON Lines file to write."),
    sequential: bool = typer.Option(
        False,
        "--sequential",
        help="One tool call per assistant turn, each answered "
        "before the next (for templates that refuse parallel calls, e.g. Llama 3.1).",
    ),
    split: str = typer.Option("train", "--split", help="train (RUN/output) or eval (RUN/eval, from --eval-split)."),
) -> None:
    """Write samples as ShareGPT, Hermes, plain OpenAI or Mistral JSON Lines."""
    from kg.export import FORMATS
    from kg.export import export as run_export

    if format not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if split not in ("train", "eval"):
        _fail("--split must be train or eval", 2)
    try:
        n = run_export(run, format, output, sequential=sequential, split=split)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    console.print(f"[green]wrote[/] {n:,} samples to {output} ({format})", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    kg_app()
