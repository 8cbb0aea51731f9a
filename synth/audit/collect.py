"""Writing a shard's audit statistics beside its ledger entry (before the commit point).

- `RUN/stages/NN-name/part-XXXXX.profile.json`: sketches of every score the stage
  computed over all records it saw, of the numeric columns it wrote, of text
  lengths, and categorical counts (see `synth.audit.stats`).
- `RUN/rejected/NN-name/scores/part-XXXXX.parquet`: id, reason, input row and the
  scalar scores of every dropped record (no text), so a threshold can be re-tuned
  exactly from the run. For a filter whose output shard is not kept (fused, or a
  global stage's input in a finished run) it holds every row the filter saw, in
  input order: kept rows with a null reason and id, plus the short columns its
  `decide` reads (e.g. `language`), so what-if needs neither its input nor output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.audit import stats
from synth.core.rundir import RunDir, read_json
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


def _columnar_drops(shard: Shard) -> pa.Table | None:
    """A filter's dropped rows as a table (same order as `dropped_scores`), when it kept them."""
    t = shard.dropped_table
    if t is None or t.num_rows != len(shard.dropped_scores):
        return None
    return t


def rejected_scores_table(shard: Shard) -> pa.Table:
    dropped = _columnar_drops(shard)
    if dropped is not None and shard.seen_scores is not None and all(d[2] is not None for d in shard.dropped_scores):
        arrays = {
            "id": dropped.column("id").cast(pa.string())
            if "id" in dropped.column_names
            else pa.nulls(dropped.num_rows, pa.string()),
            "reason": pa.array([d[1] for d in shard.dropped_scores], pa.string()),
            "row": pa.array([d[2] for d in shard.dropped_scores], pa.int64()),
        }
        for name in shard.seen_scores.column_names:
            col = dropped.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                if (pc.max(pc.utf8_length(col)).as_py() or 0) > MAX_SCORE_STRING:
                    continue  # text, not a score
            elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
                continue
            arrays[name] = col
        return pa.table(arrays)
    names: dict[str, None] = {}
    for _, _, _, scores, _ in shard.dropped_scores:
        if scores:
            names.update(dict.fromkeys(scores))
    columns: dict[str, list] = {
        "id": [None if d[0] is None else str(d[0]) for d in shard.dropped_scores],
        "reason": [d[1] for d in shard.dropped_scores],
        "row": [d[2] for d in shard.dropped_scores],
    }
    arrays = {
        "id": pa.array(columns["id"], pa.string()),
        "reason": pa.array(columns["reason"], pa.string()),
        "row": pa.array(columns["row"], pa.int64()),
    }
    for name in names:
        if name in arrays:
            continue
        values = [_scalar((d[3] or {}).get(name)) for d in shard.dropped_scores]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them readable
            arrays[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
        if pa.types.is_null(arrays[name].type):
            arrays[name] = arrays[name].cast(pa.float64())
    return pa.table(arrays)


def _dropped_table(shard: Shard, columns: list[str]) -> pa.Table | None:
    """The dropped records' text and category columns (for subtracting them from the input's profile)."""
    dropped = _columnar_drops(shard)
    if dropped is not None:
        return dropped.select(columns) if all(c in dropped.column_names for c in columns) else None
    records = [d[4] for d in shard.dropped_scores]
    if any(not isinstance(r, dict) or any(c not in r for c in columns) for r in records):
        return None
    try:
        return (
            pa.table({c: pa.array([r[c] for r in records]) for c in columns})
            if records
            else pa.table({c: pa.array([], pa.string()) for c in columns})
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _seen_from_drops(shard: Shard, table: pa.Table, written: Sequence[str]) -> pa.Table | None:
    """For a stage that is not a `Filter` but drops on a score it writes (an LLM critique):
    that score over every record it saw = kept records' column + the dropped records' scores."""
    columns = {}
    for name in written:
        if name not in table.column_names:
            continue
        dropped = [d[3].get(name) for d in shard.dropped_scores if d[3] and name in d[3]]
        if not dropped:
            continue
        kept = table.column(name)
        try:
            extra = pa.array([v if isinstance(v, (int, float)) else None for v in dropped]).cast(kept.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
        columns[name] = pa.chunked_array([*kept.chunks, extra], kept.type)
    return pa.table(columns) if columns else None


def _derivable(
    table: pa.Table, written: Sequence[str], creates_records: bool, upstream: dict | None
) -> list[str] | None:
    """The columns a stage's length and category statistics depend on, when they can be
    derived from its input's profile minus what it dropped (it rewrote none of them)."""
    if upstream is None or creates_records or upstream.get("version") != stats.PROFILE_VERSION:
        return None
    watched = set(stats.TEXT_COLUMNS) | set(stats.CATEGORICAL_COLUMNS) | set(stats.TOKEN_COLUMNS)
    if watched & set(written):
        return None
    present = [c for c in table.column_names if c in watched]
    if set(upstream.get("lengths", {})) != {c for c in present if c in stats.TEXT_COLUMNS}:
        return None
    if set(upstream.get("categorical", {})) - set(present):
        return None
    return present


def write_shard_statistics(
    run: RunDir,
    label: str,
    shard: Shard,
    table: pa.Table,
    written: Sequence[str],
    upstream_label: str | None = None,
    creates_records: bool = False,
    all_rows: bool = False,
    decide_inputs: Sequence[str] = (),
) -> None:
    if not stats.enabled():
        return
    try:
        _write(run, label, shard, table, written, upstream_label, creates_records, all_rows, decide_inputs)
    except Exception as exc:  # noqa: BLE001 - statistics must never cost a shard its work
        shard.count("audit.statistics_failed")
        shard.count(f"audit.statistics_failed.{type(exc).__name__}")


def _short_column(col: pa.ChunkedArray | pa.Array) -> bool:
    """A column cheap to keep per row: numbers, flags, short strings (not text)."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return len(col) == 0 or (pc.max(pc.utf8_length(col)).as_py() or 0) <= MAX_SCORE_STRING
    return (
        pa.types.is_integer(col.type)
        or pa.types.is_floating(col.type)
        or pa.types.is_boolean(col.type)
        or pa.types.is_null(col.type)
    )


def all_rows_table(shard: Shard, kept: pa.Table, decide_inputs: Sequence[str]) -> pa.Table | None:
    """Every row a filter saw, in input order: id and reason for dropped rows (null
    for kept ones), its scores and the short columns its decide reads."""
    seen = shard.seen_scores
    dropped = _columnar_drops(shard) if shard.dropped_scores else None
    if seen is None or (shard.dropped_scores and (dropped is None or any(d[2] is None for d in shard.dropped_scores))):
        return None
    n = seen.num_rows
    if n != kept.num_rows + len(shard.dropped_scores):
        return None
    dropped_rows = [d[2] for d in shard.dropped_scores]
    is_dropped = [False] * n
    for r in dropped_rows:
        is_dropped[r] = True
    # positions of the kept rows, then of the dropped rows: `take` by the inverse restores input order
    order = [i for i in range(n) if not is_dropped[i]] + dropped_rows
    inverse = [0] * n
    for k, i in enumerate(order):
        inverse[i] = k
    inverse_arr = pa.array(inverse, pa.int64())
    ids, reasons = [None] * n, [None] * n
    for d in shard.dropped_scores:
        ids[d[2]], reasons[d[2]] = (None if d[0] is None else str(d[0])), d[1]
    arrays: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.string()),
        "reason": pa.array(reasons, pa.string()),
        "row": pa.array(range(n), pa.int64()),
    }
    for name in seen.column_names:
        if _short_column(seen.column(name)):
            arrays[name] = seen.column(name)
    for name in dict.fromkeys(decide_inputs):
        if (
            name in arrays
            or name == "id"
            or name not in kept.column_names
            or (dropped is not None and name not in dropped.column_names)
        ):
            continue
        parts = [kept.column(name)] + (
            [dropped.column(name).cast(kept.column(name).type)] if dropped is not None else []
        )
        col = pa.concat_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in parts]).take(
            inverse_arr
        )
        if _short_column(col):
            arrays[name] = col
    return pa.table(arrays)


def _write_small_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # no column statistics: in files this small the footer would outweigh the data
    pq.write_table(table, tmp, compression="zstd", compression_level=9, write_statistics=False)
    os.replace(tmp, path)  # renamed, not fsynced: see write_profile


def _write(
    run: RunDir,
    label: str,
    shard: Shard,
    table: pa.Table,
    written: Sequence[str],
    upstream_label: str | None,
    creates_records: bool,
    all_rows: bool = False,
    decide_inputs: Sequence[str] = (),
) -> None:
    every = all_rows_table(shard, table, decide_inputs) if all_rows else None
    if every is not None:
        _write_small_parquet(rejected_scores_path(run, label, shard.name), every)
    elif shard.dropped_scores:
        _write_small_parquet(rejected_scores_path(run, label, shard.name), rejected_scores_table(shard))
    upstream = None
    if upstream_label is not None:
        path = profile_path(run, upstream_label, shard.name)
        try:
            if path.exists():
                upstream = read_json(path)
            else:  # a completed run merged them (a stage rerun after an option change)
                from synth.audit.compact import read_profiles

                upstream = read_profiles(run, upstream_label).get(shard.name)
        except (ValueError, OSError):
            upstream = None  # torn by a crash: computed afresh instead
    seen = shard.seen_scores
    if seen is None and shard.dropped_scores:
        seen = _seen_from_drops(shard, table, written)
    # A stage that only drops records (most filters) has the length and category
    # statistics of its input minus those of what it dropped: no pass over the text.
    columns = _derivable(table, written, creates_records, upstream)
    removed = _dropped_table(shard, columns) if columns is not None else None
    if removed is not None and upstream.get("rows", -1) - removed.num_rows == table.num_rows:
        profile = stats.profile_table(table, written, seen, base=upstream, removed=removed)
    else:
        profile = stats.profile_table(table, written, seen)
    write_profile(profile_path(run, label, shard.name), profile)


def write_profile(path: Path, profile: dict) -> None:
    """Compact JSON renamed into place. Not fsynced (this is the hot path of every
    shard): after a power cut a torn profile is reported as missing, never misread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(profile, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
