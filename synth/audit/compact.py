"""Compacting a completed run's audit files: one file per stage instead of one per shard.

While a run is going, every shard writes its own profile, reject sample and scores
(workers never share a file, and a kill loses only shards in flight). Once the run
has completed, nothing writes them again until a stage is invalidated (which
deletes its folders), so each stage's per-shard files are merged:

- `RUN/stages/NN-name/profiles.json.gz`: {shard: profile} of every shard;
- `RUN/rejected/NN-name/scores.parquet`: every shard's stored scores, with a `shard` column;
- `RUN/rejected/NN-name/samples.parquet`: reject samples, at most `per_reason` per
  reason over the whole stage and `SAMPLE_BYTES` in all (every reason keeps one).

Hundreds of small files cost more in footers and block padding than in data; merged,
the run directory of the ingest pipeline is about a third smaller. The merged file
is written first and the shard files deleted after, so a kill in between leaves
both, and the readers here prefer the shard files (the newer ones, if a rerun
wrote any). `--keep-intermediate` runs are not compacted.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.core.rundir import RunDir

SAMPLE_BYTES = 64_000


def profiles_file(run: RunDir, label: str) -> Path:
    return run.stage_dir(label) / "profiles.json.gz"


def scores_file(run: RunDir, label: str) -> Path:
    return run.root / "rejected" / label / "scores.parquet"


def samples_file(run: RunDir, label: str) -> Path:
    return run.root / "rejected" / label / "samples.parquet"


def _write_parquet(path: Path, table: pa.Table, delta: tuple[str, ...] = ()) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    delta = tuple(c for c in delta if c in table.column_names and pa.types.is_integer(table.schema.field(c).type))
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=9,
        write_statistics=False,
        use_dictionary=[c for c in table.column_names if c not in delta],
        column_encoding={c: "DELTA_BINARY_PACKED" for c in delta} or None,
    )
    os.replace(tmp, path)


def _shard_of(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)]


def compact_stage(run: RunDir, label: str, per_reason: int) -> None:
    _compact_profiles(run, label)
    _compact_scores(run, label)
    _compact_samples(run, label, per_reason)


def _compact_profiles(run: RunDir, label: str) -> None:
    parts = sorted(run.stage_dir(label).glob("part-*.profile.json"))
    if not parts:
        return
    merged = read_profiles(run, label)
    for path in parts:
        try:
            merged[_shard_of(path, ".profile.json")] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue  # torn by a crash: reported as not profiled, as before
    target = profiles_file(run, label)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(gzip.compress(json.dumps(merged, separators=(",", ":")).encode(), 9))
    os.replace(tmp, target)
    for path in parts:
        path.unlink(missing_ok=True)


def read_profiles(run: RunDir, label: str) -> dict[str, dict]:
    """{shard: profile} of a stage: the merged file, overridden by any shard file."""
    merged: dict[str, dict] = {}
    path = profiles_file(run, label)
    if path.exists():
        try:
            merged = json.loads(gzip.decompress(path.read_bytes()))
        except (ValueError, OSError, EOFError):
            merged = {}
    return merged


def _compact_scores(run: RunDir, label: str) -> None:
    folder = run.root / "rejected" / label / "scores"
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return
    tables = []
    old = scores_file(run, label)
    fresh = {_shard_of(p, ".parquet") for p in parts}
    if old.exists():
        t = pq.read_table(old)
        tables.append(t.filter(pc.invert(pc.is_in(t.column("shard"), pa.array(sorted(fresh), pa.string())))))
    for path in parts:
        t = pq.read_table(path)
        tables.append(t.append_column("shard", pa.array([_shard_of(path, ".parquet")] * t.num_rows, pa.string())))
    _write_parquet(old, pa.concat_tables(tables, promote_options="permissive"), delta=("row",))
    for path in parts:
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


_SCORES_CACHE: dict[tuple[str, int], pa.Table] = {}


def read_scores(run: RunDir, label: str, name: str) -> pa.Table | None:
    """A shard's stored scores (see synth.audit.collect), from its own file or the merged one."""
    from synth.audit.collect import rejected_scores_path

    own = rejected_scores_path(run, label, name)
    if own.exists():
        return pq.read_table(own)
    merged = scores_file(run, label)
    if not merged.exists():
        return None
    key = (str(merged), merged.stat().st_mtime_ns)
    if key not in _SCORES_CACHE:
        _SCORES_CACHE.clear()
        _SCORES_CACHE[key] = pq.read_table(merged)
    table = _SCORES_CACHE[key]
    mine = table.filter(pc.equal(table.column("shard"), name)).drop_columns(["shard"])
    return mine if mine.num_rows else None


def _compact_samples(run: RunDir, label: str, per_reason: int) -> None:
    folder = run.root / "rejected" / label
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return
    target = samples_file(run, label)
    rows = pq.read_table(target).to_pylist() if target.exists() else []
    fresh = {_shard_of(p, ".parquet") for p in parts}
    rows = [r for r in rows if r.get("shard") not in fresh]
    for path in parts:
        rows.extend({**r, "shard": _shard_of(path, ".parquet")} for r in pq.read_table(path).to_pylist())
    rows.sort(key=lambda r: r["shard"])
    kept, counts, size = [], {}, 0
    for r in rows:
        n = counts.get(r["reason"], 0)
        cost = len(r.get("record") or "") + len(r.get("scores") or "")
        if n >= max(per_reason, 1) or (n and size + cost > SAMPLE_BYTES):
            continue
        counts[r["reason"]] = n + 1
        size += cost
        kept.append(r)
    from synth.core.ledger import REJECT_SCHEMA

    schema = REJECT_SCHEMA.append(pa.field("shard", pa.string()))
    _write_parquet(target, pa.Table.from_pylist(kept, schema=schema))
    for path in parts:
        path.unlink(missing_ok=True)


def compact_run(run: RunDir, labels: list[str], per_reason: int) -> None:
    for label in labels:
        compact_stage(run, label, per_reason)
