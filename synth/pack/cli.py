"""`synth pack`: the command line around synth.pack.run.pack."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def _progress_factory(con: Console):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    def start(label: str, total: int, done: int, unit: str = "files"):
        prog = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            *((DownloadColumn(),) if unit == "bytes" else (MofNCompleteColumn(), TextColumn(unit))),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=con,
            disable=not con.is_terminal,
        )
        prog.start()
        task = prog.add_task(label, total=total, completed=done, rate="")
        began = time.perf_counter()
        tokens = [0]

        def tick(stats):
            if stats is None:
                prog.stop()
                return
            n = stats if isinstance(stats, int) else stats.get("tokens", 0)
            tokens[0] += n
            rate = f"{tokens[0] / max(time.perf_counter() - began, 1e-9):,.0f} tokens/s"
            files = 1 if isinstance(stats, int) else stats.get("files", 1)
            advance = {"tokens": n, "bytes": 0 if isinstance(stats, int) else stats.get("bytes", 0)}.get(unit, files)
            prog.update(task, advance=advance, rate=rate)

        return tick

    return start


def pack_command(
    inputs: list[str] = typer.Argument(
        ..., help="Run directories (their output/), folders, .parquet or .jsonl files; NAME=PATH names the source."
    ),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="Tokenizer folder (tokenizer.json, chat template)."),
    seq_len: int = typer.Option(..., "--seq-len", help="Tokens per packed sequence."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder; the same command again resumes."),
    format: str = typer.Option("native", "--format", help="native (synth.loader) or megatron (.bin/.idx + blend)."),
    mix: Path | None = typer.Option(None, "--mix", help="mix.yaml: token weights per source, domain or kind, budget."),
    seed: int = typer.Option(0, "--seed", help="Seed of the mix sampling."),
    workers: int = typer.Option(1, "--workers", "-w", help="Tokeniser processes (one input file each)."),
    chat_loss: str = typer.Option(
        "assistant", "--chat-loss", help="Roles whose turns are trained on (comma-separated), or all."
    ),
    text_loss: str = typer.Option("all", "--text-loss", help="Plain text records: all or none."),
    eod_token: str | None = typer.Option(
        None, "--eod-token", help="End-of-document token (default: the tokenizer's eos)."
    ),
    long_docs: str = typer.Option(
        "split", "--long-docs", help="Records longer than --seq-len: split or drop (native)."
    ),
    window: int = typer.Option(4096, "--window", help="Documents per best-fit-decreasing window (bounds memory)."),
) -> None:
    """Tokenise, mix and pack records into training shards (native or Megatron)."""
    from synth.cli import fail
    from synth.pack.inputs import PackInputError
    from synth.pack.mix import MixError
    from synth.pack.render import TokenizerError
    from synth.pack.run import PackError, PackOptions, pack

    opts = PackOptions(
        inputs=list(inputs),
        tokenizer=str(tokenizer),
        seq_len=seq_len,
        output=str(output),
        format=format,
        mix=str(mix) if mix else None,
        seed=seed,
        workers=max(1, workers),
        chat_loss=chat_loss,
        text_loss=text_loss,
        eod_token=eod_token,
        long_docs=long_docs,
        window=window,
    )
    started = time.perf_counter()
    try:
        result = pack(opts, progress=_progress_factory(console), say=lambda m: console.print(m, highlight=False))
    except (PackError, PackInputError, MixError, TokenizerError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: tokenised files are kept; run the same command to resume", 130)
    for m in result.messages:
        console.print(m, highlight=False)
    report(result.manifest, time.perf_counter() - started, console)


def report(m: dict, seconds: float, con: Console) -> None:
    from rich.table import Table

    mix = m["mix"]
    table = Table(title=f"mix by {mix['by']}")
    for col in ("group", "target share", "actual share", "tokens", "trained", "ratio"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for g in mix["target_share"]:
        table.add_row(
            g,
            f"{mix['target_share'][g]:.3f}",
            f"{mix['actual_share'][g]:.3f}",
            f"{mix['actual_tokens'][g]:,}",
            f"{mix['trained_tokens'][g]:,}",
            f"{mix['ratio'][g]:.3f}",
        )
    con.print(table)
    for key, per in m["tokens_written"].items():
        if key != mix["by"]:
            con.print(f"tokens by {key}: " + ", ".join(f"{k} {v:,}" for k, v in per.items()), highlight=False)
    c = m["counts"]
    skipped = sum(c["skipped"].values())
    line = (
        f"[green]done:[/] {m['tokens']['documents']:,} tokens, {m['documents']:,} documents from {c['input_records']:,} records "
        f"(skipped {skipped:,}, not sampled {c['not_sampled']:,}, repeats {c['repeats']:,}, split {c['split']:,}, dropped {c['dropped']:,}); "
        f"mix distance {mix['distance']:.4f}"
    )
    if "sequences" in m:
        line += f"; {m['sequences']:,} sequences of {m['seq_len']:,}, fill {m['fill_efficiency']:.1%}"
    con.print(line, highlight=False)
    for reason, n in c["skipped"].items():
        con.print(f"  skipped {reason}: {n:,} (record ids in packing.parquet)", highlight=False)
