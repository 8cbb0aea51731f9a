"""Progress bars: per stage, shards done, records in/out, rate and time left."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from synth.core.config import StageEntry


class StageProgress:
    def __init__(self, console: Console, entry: StageEntry, total: int, already: int):
        self.records_in = 0
        self.records_out = 0
        self.started = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TextColumn("{task.fields[records]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.progress.start()
        self.task = self.progress.add_task(entry.label, total=total, completed=already, records="")

    def advance(self, stats: dict, phase: str) -> None:
        self.records_in += stats.get("in", 0)
        self.records_out += stats.get("out", 0)
        rate = self.records_in / max(time.perf_counter() - self.started, 1e-9)
        label = "summarized" if phase == "summarize" else f"{self.records_in:,} in -> {self.records_out:,} out, {rate:,.0f} rec/s"
        self.progress.update(self.task, advance=1, records=label)

    def close(self) -> None:
        self.progress.stop()


def rich_progress(console: Console):
    def factory(entry: StageEntry, total: int, already: int) -> StageProgress:
        return StageProgress(console, entry, total, already)

    return factory
