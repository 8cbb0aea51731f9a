"""`--overlap`: which filters drop the same records.

In a run, a record dropped by one filter never reaches the next, so the ledger
cannot say whether two filters are redundant. This takes a bounded, seeded
sample of the first filter's input, scores it with every CPU filter of the
pipeline (no LLM calls, nothing dropped), and counts for each pair of filters the
records both would drop, and for each filter the records it alone would drop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synth.audit.report import AuditError
from synth.audit.whatif import StageRef, build_filter
from synth.core.errors import InputError
from synth.core.rundir import RunDir, read_json
from synth.core.sampling import SampleRecords
from synth.core.stage import Shard

DEFAULT_SAMPLE = 2000


def _sample_input(run: RunDir, upstream_index: int, first_label: str, size: int, seed: int) -> pa.Table:
    """A seeded sample of the first filter's input: read where its shards are on disk,
    recomputed where a fused run did not keep them (the same rows either way)."""
    from synth.core.recompute import pipeline_of, stage_table

    upstream = read_json(run.manifest)["stages"][upstream_index]["label"]
    names = sorted(p.name[: -len(".stats.json")] for p in run.stage_dir(first_label).glob("part-*.stats.json"))
    names = [n for n in names if run.is_done(first_label, n)]
    if not names:
        raise AuditError(f"--overlap: stage {first_label} has no finished shard to sample from")
    counts = []
    for n in names:
        part = run.part(upstream, n)
        counts.append(
            pq.ParquetFile(part).metadata.num_rows if part.exists() else read_json(run.stats(first_label, n))["in"]
        )
    total = sum(counts)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, min(size, total), replace=False)) if total else np.array([], dtype=np.int64)
    pipeline = None
    tables, offset = [], 0
    for name, n in zip(names, counts):
        local = chosen[(chosen >= offset) & (chosen < offset + n)] - offset
        offset += n
        if not len(local) and tables:
            continue
        part = run.part(upstream, name)
        if part.exists():
            table = pq.read_table(part)
        else:
            pipeline = pipeline or pipeline_of(run)
            try:
                table = stage_table(pipeline, run, upstream_index, name)
            except (InputError, OSError) as exc:
                raise AuditError(
                    f"--overlap: {upstream} {name} was not kept and cannot be recomputed ({exc}); rerun with `--keep-intermediate`"
                ) from None
        tables.append(table.take(pa.array(local, pa.int64())))
    return pa.concat_tables(tables, promote_options="default")


def overlap(run_root: str | Path, sample: int = DEFAULT_SAMPLE) -> dict:
    run = RunDir(run_root)
    manifest = read_json(run.manifest)
    seed = int(manifest.get("seed", 0))
    refs, filters, skipped = [], [], []
    for i, s in enumerate(manifest["stages"]):
        meta = run.stage_meta(s["label"])
        ref = StageRef(i, s["label"], s["type"], read_json(meta).get("options", {}) if meta.exists() else {})
        try:
            stage = build_filter(run, ref, {})
        except AuditError:
            continue  # not a filter
        if isinstance(stage, SampleRecords):
            skipped.append({"stage": s["label"], "why": "a random sample, not a quality filter"})
            continue
        if stage.resources.llm_engine:
            skipped.append({"stage": s["label"], "why": "needs an LLM engine (not a CPU filter)"})
            continue
        refs.append(ref)
        filters.append(stage)
    if not filters:
        raise AuditError("--overlap: this pipeline has no CPU filter")
    first = refs[0]
    table = _sample_input(run, first.index - 1, first.label, sample, seed)
    names, drops = [], []
    for ref, stage in zip(refs, filters):
        missing = [c for c in stage.input_columns() if c not in table.column_names]
        if missing:
            skipped.append(
                {"stage": ref.label, "why": f"reads {', '.join(missing)}, which the sampled input does not have"}
            )
            continue
        try:
            stage.ensure_setup()
            shard = Shard(ref.label, 0, "overlap", seed)
            looked = {c: table.column(c).to_pylist() for c in stage.input_columns()}
            scores = stage.score(table, shard)
            looked.update({k: (v.to_pylist() if hasattr(v, "to_pylist") else list(v)) for k, v in scores.items()})
            keys = list(looked)
            reasons = (
                [stage.decide(dict(zip(keys, vals))) for vals in zip(*looked.values())]
                if keys
                else [None] * table.num_rows
            )
        except Exception as exc:  # noqa: BLE001 - one filter failing is reported, the others still count
            skipped.append({"stage": ref.label, "why": f"{type(exc).__name__}: {exc}"})
            continue
        names.append(ref.label)
        drops.append(np.array([r is not None for r in reasons], dtype=bool))
    if not names:
        raise AuditError(
            "--overlap: no filter could score the sample ("
            + "; ".join(f"{s['stage']}: {s['why']}" for s in skipped)
            + ")"
        )
    m = np.stack(drops)
    matrix = (m[:, None, :] & m[None, :, :]).sum(axis=2).tolist()
    by_count = m.sum(axis=0)
    alone = [int((row & (by_count == 1)).sum()) for row in m]
    return {
        "sample": int(table.num_rows),
        "sampled_from": manifest["stages"][first.index - 1]["label"],
        "seed": seed,
        "filters": names,
        "drops": [int(row.sum()) for row in m],
        "matrix": matrix,
        "alone": alone,
        "dropped_by_any": int(m.any(axis=0).sum()),
        "skipped": skipped,
    }
