"""A stage's output shard, read from disk or recomputed in memory when it was not kept.

A fused run writes a stage's shard only where it must, and a finished run drops the
shards it wrote only for a global stage (see RunDir.release). Anything that still
needs such a table (a global stage rerun after an option change, `synth audit
--overlap`, what-if examples) gets it here: the nearest shard on disk at or before
the stage, then every stage after it re-run on that table. Stages are deterministic
(that is what makes resume exact), so the recomputed table is the one that was
there. Nothing is written: ledgers, rejects and profiles stay as the run left them.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synth.core.config import Pipeline, build_pipeline
from synth.core.errors import InputError
from synth.core.rundir import RunDir, read_json
from synth.core.stage import GlobalStage, Shard, SourceStage, rows_to_table


def pipeline_of(run: RunDir) -> Pipeline:
    """The pipeline a run was made with, from its manifest."""
    manifest = read_json(run.manifest)
    path = manifest.get("config_path")
    pipeline = build_pipeline(manifest["config"], path=Path(path) if path else None, seed=manifest.get("seed", 0))
    pipeline.bind_run_dir(run.root)
    return pipeline


def stage_table(pipeline: Pipeline, run: RunDir, index: int, name: str, columns: list[str] | None = None) -> pa.Table:
    """Stage `index`'s output for shard `name`: its parquet when on disk, else recomputed."""
    start = index
    while start >= 0 and not run.is_materialized(pipeline.stages[start].label, name):
        start -= 1
    if start == index:
        return pq.read_table(run.part(pipeline.stages[index].label, name), columns=columns)
    for entry in pipeline.stages[start + 1 : index + 1]:
        if not entry.stage.parallel:
            raise InputError(
                f"{entry.label} {name}: its input is not on disk and {entry.label} needs an LLM engine to recompute it"
            )
    table = pq.read_table(run.part(pipeline.stages[start].label, name)) if start >= 0 else None
    shard_index = int(name.rsplit("-", 1)[1])
    for entry in pipeline.stages[start + 1 : index + 1]:
        stage = entry.stage
        stage.ensure_setup()
        state_dir = run.state_dir(entry.label) if isinstance(stage, GlobalStage) else None
        if state_dir is not None and not run.state_done(entry.label).exists():
            raise InputError(f"{entry.label}: its state is not finished, so {name} cannot be recomputed yet")
        shard = Shard(entry.label, shard_index, name, pipeline.seed, 0, state_dir)
        if isinstance(stage, SourceStage):
            specs = read_json(run.shards_file(entry.label))
            produced = stage.read(specs[shard_index], shard)
            table = produced if isinstance(produced, pa.Table) else rows_to_table(list(produced), stage.schema())
        else:
            table = stage.process(table, shard)
        removed = [c for c in stage.removed_columns() if c in table.column_names]
        if removed:
            table = table.drop_columns(removed)
        for col, typ in stage.column_types().items():
            if col in table.column_names and table.schema.field(col).type != typ:
                i = table.column_names.index(col)
                table = table.set_column(i, col, table.column(i).cast(typ))
    return table.select(columns) if columns is not None else table
