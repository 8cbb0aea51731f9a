"""What both dedup stages share: options for picking the text, and the drop plan.

The reduce step writes one small Parquet file per shard that has drops
(`_state/drops/part-XXXXX.parquet`: row, id, kept id, similarity); the process
step of a shard reads only its own file, so workers never load the global state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from synth.core.rundir import atomic_write_json, atomic_write_parquet
from synth.core.stage import GlobalStage, Shard, StageOptions
from synth.dedup.clusters import Offsets
from synth.dedup.text import FieldPathError, extract_texts, parse_field

DROP_SCHEMA = pa.schema(
    [("row", pa.int64()), ("id", pa.string()), ("kept_id", pa.string()), ("similarity", pa.float32())]
)


class DedupOptions(StageOptions):
    column: str | list[str] = Field(
        "text",
        description="Column holding the text to compare; a list compares the columns together (e.g. [instruction, response] pairs).",
    )
    field: str | None = Field(
        None,
        description="Path inside a nested or JSON column, e.g. '[role=assistant].content' or '-1.content'.",
    )
    id_column: str = Field("id", description="Record id column, reported as the kept id of dropped copies.")

    @field_validator("column")
    @classmethod
    def _check_column(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("name at least one column")
        return value

    @field_validator("field")
    @classmethod
    def _check_field(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_field(value)
            except FieldPathError as exc:
                raise ValueError(str(exc)) from None
        return value


class DedupStage(GlobalStage):
    """Summaries in shard order, a global reduce, then each shard drops its planned rows."""

    reason: ClassVar[str] = ""
    score_name: ClassVar[str] = ""

    @property
    def columns(self) -> list[str]:
        c = self.options.column
        return [c] if isinstance(c, str) else list(c)

    def input_columns(self):
        return (self.options.id_column, *self.columns)

    def texts(self, table: pa.Table, shard: Shard) -> pa.Array:
        parts = [extract_texts(table, c, self.options.field) for c in self.columns]
        if len(parts) == 1:
            return parts[0]
        # Unit separator between columns: ("ab", "c") and ("a", "bc") stay different;
        # a row counts as having text when any column has some.
        filled = [pc.fill_null(p, "") for p in parts]
        joined = pc.binary_join_element_wise(*filled, "\x1f")
        any_text = pc.or_(*[pc.greater(pc.utf8_length(f), 0) for f in filled[:2]])
        for f in filled[2:]:
            any_text = pc.or_(any_text, pc.greater(pc.utf8_length(f), 0))
        return pc.if_else(any_text, joined, pa.scalar(None, pa.string()))

    @staticmethod
    def shard_names(summaries: list[Path]) -> list[str]:
        return [p.stem for p in summaries]

    @staticmethod
    def drops_path(state_dir: Path, name: str) -> Path:
        return state_dir / "drops" / f"{name}.parquet"

    def write_drops(
        self,
        state_dir: Path,
        summaries: list[Path],
        offsets: Offsets,
        dropped: np.ndarray,
        kept: np.ndarray,
        similarity: np.ndarray,
        report: dict,
        has_text: np.ndarray | None = None,
    ) -> None:
        """Per shard: which rows go, and which record (by id) each one duplicates."""
        # A reduce interrupted earlier may have left part of a plan: start clean.
        shutil.rmtree(state_dir / "drops", ignore_errors=True)
        (state_dir / "drops").mkdir(parents=True, exist_ok=True)
        names = self.shard_names(summaries)
        if has_text is not None and len(has_text):
            # Rows with nothing to compare are kept; each shard counts its own in the ledger.
            shard_of = np.repeat(np.arange(len(offsets.counts)), offsets.counts)
            missing = np.bincount(shard_of[~has_text], minlength=len(offsets.counts)).tolist()
            atomic_write_json(state_dir / "no_text.json", {nm: m for nm, m in zip(names, missing) if m})
        d_shard, d_row = offsets.locate(dropped)
        k_shard, k_row = offsets.locate(kept)
        ids: dict[int, np.ndarray] = {}

        def id_of(shards: np.ndarray, rows: np.ndarray) -> list[str]:
            out = [""] * len(rows)
            for s in np.unique(shards):
                if int(s) not in ids:
                    ids[int(s)] = (
                        pq.read_table(summaries[s], columns=["id"]).column("id").to_numpy(zero_copy_only=False)
                    )
                sel = np.flatnonzero(shards == s)
                got = ids[int(s)][rows[sel]]
                for i, v in zip(sel.tolist(), got.tolist()):
                    out[i] = v
            return out

        for s in np.unique(d_shard):
            sel = np.flatnonzero(d_shard == s)
            order = sel[np.argsort(d_row[sel], kind="stable")]
            table = pa.table(
                {
                    "row": pa.array(d_row[order], pa.int64()),
                    "id": pa.array(id_of(d_shard[order], d_row[order]), pa.string()),
                    "kept_id": pa.array(id_of(k_shard[order], k_row[order]), pa.string()),
                    "similarity": pa.array(similarity[order].astype(np.float32), pa.float32()),
                },
                schema=DROP_SCHEMA,
            )
            atomic_write_parquet(self.drops_path(state_dir, names[int(s)]), table)
        atomic_write_json(state_dir / "report.json", report)

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        assert shard.state_dir is not None, "dedup needs the reduce state"
        no_text = shard.state_dir / "no_text.json"
        if no_text.exists():
            missing = json.loads(no_text.read_text()).get(shard.name, 0)
            if missing:
                shard.count("kept_without_text", missing)
        path = self.drops_path(shard.state_dir, shard.name)
        if not path.exists() or table.num_rows == 0:
            return table
        plan = pq.read_table(path)
        rows = plan.column("row").to_numpy()
        ids = table.column(self.options.id_column).to_numpy(zero_copy_only=False)
        planned_ids = plan.column("id").to_numpy(zero_copy_only=False)
        if rows.max(initial=-1) >= table.num_rows or not np.array_equal(ids[rows], planned_ids):
            raise RuntimeError(
                f"{shard.stage_label} {shard.name}: the dedup plan does not match this shard's rows "
                "(upstream output changed after the summaries were made); delete the stage folder and rerun"
            )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        records = table.take(pa.array(rows)).to_pylist()
        for record, kept_id, sim in zip(
            records, plan.column("kept_id").to_pylist(), plan.column("similarity").to_pylist()
        ):
            shard.drop(record, self.reason, {self.score_name: kept_id, "similarity": round(float(sim), 4)})
        return table.filter(pa.array(keep))


def read_report(state_dir: Path) -> dict:
    path = state_dir / "report.json"
    return json.loads(path.read_text()) if path.exists() else {}
