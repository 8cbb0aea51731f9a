"""Tiny stages used to test the framework itself (not shipped in synth)."""

from __future__ import annotations

import os
import time

import pyarrow as pa

from synth.core.records import content_id
from synth.core.stage import Filter, FilterOptions, GlobalStage, Resources, SourceStage, Stage, StageOptions


class CountOptions(StageOptions):
    per_shard: int = 10
    shards: int = 3


class CountSource(SourceStage):
    type = "toy_count"
    Options = CountOptions
    writes = ("id", "n", "text")

    def list_shards(self, inputs):
        return [{"start": i * self.options.per_shard} for i in range(self.options.shards)]

    def read(self, spec, shard):
        for n in range(spec["start"], spec["start"] + self.options.per_shard):
            yield {"id": content_id("toy", n), "n": n, "text": f"record {n % 7}"}

    def schema(self):
        return pa.schema([("id", pa.string()), ("n", pa.int64()), ("text", pa.string())])


class SlowOptions(StageOptions):
    sleep: float = 0.0
    crash_on: int = -1


class Slow(Stage):
    type = "toy_slow"
    Options = SlowOptions
    reads = ("n",)
    writes = ("doubled",)

    def process(self, table, shard):
        time.sleep(self.options.sleep)
        if self.options.crash_on in table.column("n").to_pylist() and not os.environ.get("TOY_NO_CRASH"):
            raise ValueError("planted crash")
        return table.append_column("doubled", pa.array([2 * n for n in table.column("n").to_pylist()], pa.int64()))


class OddOptions(FilterOptions):
    modulus: int = 2


class DropOdd(Filter):
    type = "toy_drop_odd"
    Options = OddOptions
    reads = ("n",)
    writes = ("remainder",)

    def score(self, table, shard):
        return {"remainder": [n % self.options.modulus for n in table.column("n").to_pylist()]}

    def decide(self, row):
        return "odd" if row["remainder"] else None


class DedupText(GlobalStage):
    type = "toy_dedup_text"
    reads = ("id", "text")

    def summarize(self, table, shard):
        shard.count("summarized_rows", table.num_rows)
        return table.select(["id", "text"])

    def reduce(self, summaries, state_dir):
        import pyarrow.parquet as pq

        seen, keep = set(), []
        for path in summaries:
            for row in pq.read_table(path).to_pylist():
                if row["text"] not in seen:
                    seen.add(row["text"])
                    keep.append(row["id"])
        (state_dir / "keep.txt").write_text("\n".join(keep))

    def process(self, table, shard):
        keep = set((shard.state_dir / "keep.txt").read_text().split("\n"))
        mask = []
        for row in table.to_pylist():
            ok = row["id"] in keep
            if not ok:
                shard.drop(row, "duplicate_text")
            mask.append(ok)
        return table.filter(pa.array(mask, pa.bool_()))


class LifecycleOptions(StageOptions):
    marks: str


class Lifecycle(Stage):
    """Leaves a file per process on setup and teardown, so a test sees which
    processes set the stage up and whether each tore it down."""

    type = "toy_lifecycle"
    Options = LifecycleOptions
    reads = ("n",)

    def setup(self):
        self._mark("setup")

    def teardown(self):
        self._mark("teardown")

    def _mark(self, event):
        from pathlib import Path

        folder = Path(self.options.marks)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{event}-{os.getpid()}").touch()

    def process(self, table, shard):
        return table


class TwoCores(Stage):
    """Declares two CPUs per copy and writes what Ray reserved for the task."""

    type = "toy_two_cores"
    resources = Resources(cpus=2.0)
    writes = ("reserved_cpus",)

    def process(self, table, shard):
        import ray

        reserved = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
        return table.append_column("reserved_cpus", pa.array([reserved] * table.num_rows, pa.float64()))


class PadText(Stage):
    """Makes `text` long (past what the audit stores per row), so a filter reading it
    must have its input recomputed to be re-decided."""

    type = "toy_pad_text"
    reads = ("text",)
    writes = ("text",)

    def process(self, table, shard):
        padded = [t.rjust(120, ".") for t in table.column("text").to_pylist()]
        return table.set_column(table.column_names.index("text"), "text", pa.array(padded, pa.string()))


class DigitOptions(FilterOptions):
    digits: str = "0"


class DropDigit(Filter):
    """A filter whose decide reads the text itself (as `rules` does), not only its score."""

    type = "toy_drop_digit"
    Options = DigitOptions
    reads = ("text",)
    writes = ("text_chars",)

    def score(self, table, shard):
        return {"text_chars": [len(t) for t in table.column("text").to_pylist()]}

    def decide(self, row):
        return "digit" if row["text"][-1] in self.options.digits else None
