"""Progress bars: per stage, records (or shards) done, rate and time left.

A stage's bar counts input records when the upstream shards say how many there
are (parquet metadata, free), so rate and ETA mean something even for a stage of
two huge shards; a source stage counts shards. Stages that call an LLM in this
process add a second line for the requests of the batch in flight, because one
batch can take many minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from synth.core.config import StageEntry

_active: StageProgress | None = None


class StageProgress:
    def __init__(
        self,
        console: Console,
        entry: StageEntry,
        total_shards: int,
        done_shards: int,
        total_records: int | None = None,
        done_records: int = 0,
    ):
        self.records_in = 0
        self.records_out = 0
        self.by_records = total_records is not None
        self.started = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.progress.start()
        total, done = (total_records, done_records) if self.by_records else (total_shards, done_shards)
        unit = "records" if self.by_records else "shards"
        self.task = self.progress.add_task(entry.label, total=total, completed=done, unit=unit, detail="")
        self._requests: TaskID | None = None
        global _active
        _active = self

    def advance(self, stats: dict, phase: str) -> None:
        n_in = stats.get("in", 0)
        self.records_in += n_in
        self.records_out += stats.get("out", 0)
        rate = self.records_in / max(time.perf_counter() - self.started, 1e-9)
        detail = "summarized" if phase == "summarize" else f"-> {self.records_out:,} out, {rate:,.1f} rec/s"
        self.progress.update(self.task, advance=n_in if self.by_records else 1, detail=detail)

    def add_stage(self, entry: StageEntry, total_shards: int, done_shards: int) -> FusedStageLine:
        """Another line in this display for a stage fused into the same task."""
        return FusedStageLine(self, entry, total_shards, done_shards)

    def requests_started(self, total: int, label: str) -> Callable:
        if self._requests is not None:
            self.progress.remove_task(self._requests)
        self._requests = self.progress.add_task(f"  {label} requests", total=total, unit="", detail="")
        started = time.perf_counter()
        done = [0]

        def tick(_index=None, _result=None) -> None:
            done[0] += 1
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            self.progress.update(self._requests, advance=1, detail=f"{rate:,.2f} req/s")
            if done[0] >= total:
                self.progress.remove_task(self._requests)
                self._requests = None

        return tick

    def close(self) -> None:
        global _active
        if _active is self:
            _active = None
        self.progress.stop()


class FusedStageLine:
    """A fused stage's own line (shards done, records out) under its group's first stage."""

    def __init__(self, owner: StageProgress, entry: StageEntry, total_shards: int, done_shards: int):
        self.owner = owner
        self.records_out = 0
        self.task = owner.progress.add_task(
            f"{entry.label} (fused)", total=total_shards, completed=done_shards, unit="shards", detail=""
        )

    def advance(self, stats: dict, phase: str) -> None:
        self.records_out += stats.get("out", 0)
        self.owner.progress.update(self.task, advance=1, detail=f"-> {self.records_out:,} out")

    def close(self) -> None:
        self.owner.close()


def request_progress(total: int, label: str) -> Callable | None:
    """A per-request callback for an LLM batch, shown under the active stage's bar
    (None where no bar is shown, e.g. in worker processes)."""
    return _active.requests_started(total, label) if _active is not None and total > 0 else None


def rich_progress(console: Console):
    def factory(
        entry: StageEntry, total_shards: int, done_shards: int, total_records: int | None = None, done_records: int = 0
    ) -> StageProgress:
        return StageProgress(console, entry, total_shards, done_shards, total_records, done_records)

    return factory
