"""Writing a shard's audit statistics beside its ledger entry (before the commit point).

- `RUN/stages/NN-name/part-XXXXX.profile.json`: sketches of every score the stage
  computed over all records it saw, of the numeric columns it wrote, of text
  lengths, and categorical counts (see `synth.audit.stats`).
- `RUN/rejected/NN-name/scores/part-XXXXX.parquet`: id, reason, input row and the
  scalar scores of every dropped record (no text), so a threshold can be re-tuned
  exactly from the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from synth.audit import stats
from synth.core.rundir import RunDir, atomic_write_json, atomic_write_parquet
from synth.core.stage import Shard

# Scores longer than this are text, not scores: left out of the rejected scores.
MAX_SCORE_STRING = 64


def profile_path(run: RunDir, label: str, name: str) -> Path:
    return run.stage_dir(label) / f"{name}.profile.json"


def rejected_scores_path(run: RunDir, label: str, name: str) -> Path:
    # A folder of its own: the reject samples beside it are globbed as part-*.parquet.
    return run.root / "rejected" / label / "scores" / f"{name}.parquet"


def _scalar(value):
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str) and len(value) <= MAX_SCORE_STRING:
        return value
    return None


def rejected_scores_table(shard: Shard) -> pa.Table:
    names: dict[str, None] = {}
    for _, _, _, scores in shard.dropped_scores:
        if scores:
            names.update(dict.fromkeys(scores))
    columns: dict[str, list] = {
        "id": [None if i is None else str(i) for i, _, _, _ in shard.dropped_scores],
        "reason": [r for _, r, _, _ in shard.dropped_scores],
        "row": [w for _, _, w, _ in shard.dropped_scores],
    }
    arrays = {"id": pa.array(columns["id"], pa.string()), "reason": pa.array(columns["reason"], pa.string()), "row": pa.array(columns["row"], pa.int64())}
    for name in names:
        if name in arrays:
            continue
        values = [_scalar((scores or {}).get(name)) for _, _, _, scores in shard.dropped_scores]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them readable
            arrays[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
        if pa.types.is_null(arrays[name].type):
            arrays[name] = arrays[name].cast(pa.float64())
    return pa.table(arrays)


def write_shard_statistics(run: RunDir, label: str, shard: Shard, table: pa.Table, written: Sequence[str]) -> None:
    if not stats.enabled():
        return
    if shard.dropped_scores:
        atomic_write_parquet(rejected_scores_path(run, label, shard.name), rejected_scores_table(shard))
    profile = stats.profile_table(table, written, shard.seen_scores)
    atomic_write_json(profile_path(run, label, shard.name), profile)
