"""Stage `sample`: keep a deterministic subset (dry runs, demos, budget caps).

Which records survive depends only on the run seed and each record's id, so the
subset is the same on every rerun and does not shift when shards are resumed.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from synth.core.records import derive_seed
from synth.core.stage import Filter, FilterOptions, Shard

_SCALE = float(2**64)


class SampleOptions(FilterOptions):
    fraction: float = Field(1.0, gt=0, le=1, description="Share of records kept.")
    max_per_shard: int | None = Field(None, ge=1, description="Keep at most this many per shard (lowest draws win).")


class SampleRecords(Filter):
    type = "sample"
    Options = SampleOptions
    reads = ("id",)
    writes = ("sample_draw",)

    def column_types(self):
        return {"sample_draw": pa.float64()}

    def score(self, table: pa.Table, shard: Shard):
        draws = [derive_seed(shard.run_seed, "sample", i) / _SCALE for i in table.column("id").to_pylist()]
        cutoff = self.options.fraction
        if self.options.max_per_shard is not None:
            under = sorted(d for d in draws if d < cutoff)
            if len(under) > self.options.max_per_shard:
                cutoff = under[self.options.max_per_shard]
        self._cutoff = cutoff
        return {"sample_draw": draws}

    def decide(self, row: dict) -> str | None:
        return None if row["sample_draw"] < self._cutoff else "sampled_out"
