"""The statistics ledger: one entry per (stage, shard), aggregated for the audit.

Every stage reports through the same three numbers (in, out, dropped per reason)
plus free counters (tokens, cache hits, skipped inputs) and timing, so the audit
can account for every record a run ever saw.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth.core.rundir import RunDir, atomic_write_json, atomic_write_parquet, read_json
from synth.core.stage import Shard

AUDIT_VERSION = 1
# Long fields in reject samples are cut: the sample is for reading, not replay.
REJECT_FIELD_CHARS = 2000
# A shard's reject sample stops growing past this many bytes of JSON (every reason
# keeps its first example): the audit shows a few per reason, and the scores of
# every dropped record are stored apart (rejected/NN-name/scores/).
REJECT_SAMPLE_BYTES = 32_000

REJECT_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("id", pa.string()),
        ("scores", pa.string()),
        ("record", pa.string()),
    ]
)


def _shorten(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > REJECT_FIELD_CHARS:
        return value[:REJECT_FIELD_CHARS] + f"... [{len(value) - REJECT_FIELD_CHARS} more chars]"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value[:50]]
    return value


def write_shard_ledger(
    run: RunDir, label: str, shard: Shard, n_in: int, n_out: int, seconds: float, creates_records: bool
) -> dict:
    """Write rejects then statistics; the caller commits the shard's parquet last."""
    if shard.rejects:
        rows, size, first = [], 0, set()
        for r in shard.rejects:
            scores = _shorten(r.scores) if r.scores else None
            # a score is shown once, under scores, not again inside the record
            # numbers of earlier stages' scores and empty fields are left out: text and identity stay
            record = {
                k: v
                for k, v in r.record.items()
                if (not scores or k not in scores) and v is not None and not isinstance(v, (float, bool))
            }
            row = {
                "reason": r.reason,
                "id": str(r.record.get("id", "")),
                "scores": json.dumps(scores, ensure_ascii=False, default=str) if scores else None,
                "record": json.dumps(_shorten(record), ensure_ascii=False, default=str),
            }
            cost = len(row["record"]) + len(row["scores"] or "")
            if r.reason in first and size + cost > REJECT_SAMPLE_BYTES:
                continue
            first.add(r.reason)
            size += cost
            rows.append(row)
        atomic_write_parquet(run.rejected(label, shard.name), pa.Table.from_pylist(rows, schema=REJECT_SCHEMA))
    stats = {
        "stage": label,
        "shard": shard.name,
        "in": n_in,
        "out": n_out,
        "dropped": dict(sorted(shard.dropped.items())),
        "counters": dict(sorted(shard.counters.items())),
        "creates_records": creates_records,
        "seconds": round(seconds, 4),
    }
    atomic_write_json(run.stats(label, shard.name), stats)
    return stats


def stage_totals(run: RunDir, label: str, stage_type: str | None = None) -> dict:
    """Sum the ledger entries of one stage's finished shards."""
    total_in = total_out = 0
    dropped: Counter[str] = Counter()
    counters: Counter[str] = Counter()
    seconds = 0.0
    creates = False
    shards_done = 0
    for stats_path in sorted(run.stage_dir(label).glob("part-*.stats.json")):
        name = stats_path.name[: -len(".stats.json")]
        if not run.is_done(label, name):
            continue  # statistics of a shard that never committed do not count
        s = read_json(stats_path)
        shards_done += 1
        total_in += s["in"]
        total_out += s["out"]
        dropped.update(s["dropped"])
        counters.update(s.get("counters", {}))
        seconds += s.get("seconds", 0.0)
        creates = creates or s.get("creates_records", False)
    for extra in sorted((run.stage_dir(label) / "_summaries").glob("part-*.counters.json")):
        counters.update(read_json(extra))
    shards_file = run.shards_file(label)
    meta = read_json(run.stage_meta(label)) if run.stage_meta(label).exists() else {}
    return {
        "stage": label,
        "type": stage_type or meta.get("type"),
        "in": total_in,
        "out": total_out,
        "dropped": dict(sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
        "creates_records": creates,
        "shards": meta.get("shards", len(read_json(shards_file)) if shards_file.exists() else shards_done),
        "shards_done": shards_done,
        "seconds": round(seconds, 3),
        "counters": dict(sorted(counters.items())),
    }


def audit(run_root: str | Path) -> dict:
    run = RunDir(run_root)
    if not run.manifest.exists():
        raise FileNotFoundError(f"{run.root}: not a synth run directory (no run.json)")
    manifest = read_json(run.manifest)
    stages = [stage_totals(run, s["label"], s["type"]) for s in manifest["stages"]]
    for s in stages:
        s["balanced"] = s["creates_records"] or s["in"] == s["out"] + sum(s["dropped"].values())
    return {
        "version": AUDIT_VERSION,
        "pipeline": manifest.get("pipeline"),
        "run": str(run.root),
        "complete": all(s["shards_done"] == s["shards"] for s in stages),
        "stages": stages,
    }


def reject_samples(run_root: str | Path, label: str, limit: int = 5) -> dict[str, list[dict]]:
    """A few rejected records per reason, for the report."""
    run = RunDir(run_root)
    by_reason: dict[str, list[dict]] = {}
    folder = run.root / "rejected" / label
    # a completed run merged its shards' samples into samples.parquet
    for path in [*sorted(folder.glob("part-*.parquet")), folder / "samples.parquet"]:
        if not path.exists():
            continue
        for row in pq.read_table(path).to_pylist():
            bucket = by_reason.setdefault(row["reason"], [])
            if len(bucket) < limit:
                row["record"] = json.loads(row["record"])
                row["scores"] = json.loads(row["scores"]) if row["scores"] else None
                bucket.append(row)
    return by_reason
