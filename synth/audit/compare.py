"""`--compare OTHER_RUN`: two runs side by side, stage by stage and record by record.

Stages are matched by label. Runs of different pipelines are still compared on the
stages they share, and the report says which stages it could not match.
Records are matched by id: a record dropped by a stage in one run and kept by the
same stage in the other is a flip, shown with both runs' reasons.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.audit.compact import read_scores
from synth.core.rundir import RunDir

EXAMPLES = 5
MAX_IDS = 2_000_000  # id sets larger than this per stage are not matched (memory)


def _dropped_ids(run: RunDir, label: str) -> dict:
    dropped: dict = {}
    for stats in sorted(run.stage_dir(label).glob("part-*.stats.json")):
        t = read_scores(run, label, stats.name[: -len(".stats.json")])
        if t is not None:
            t = t.filter(pc.is_valid(t.column("reason"))).select(["id", "reason"])
            dropped.update(zip(t.column("id").to_pylist(), t.column("reason").to_pylist()))
    return dropped


def _fate_unwritten(run: RunDir, label: str) -> tuple[set, dict] | None:
    """A stage whose shards were not kept (fused): what it kept is what later stages dropped
    plus the output, as long as none of them creates records (ids then carry through)."""
    from synth.core.ledger import stage_totals
    from synth.core.rundir import read_json

    labels = [s["label"] for s in read_json(run.manifest)["stages"]]
    later = labels[labels.index(label) + 1 :]
    if any(stage_totals(run, x)["creates_records"] for x in later):
        return None
    kept: set = set()
    for x in later:
        kept.update(_dropped_ids(run, x))
    for part in sorted(run.output_dir.glob("*.parquet")):
        if "id" not in pq.ParquetFile(part).schema_arrow.names:
            return None
        kept.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
    if len(kept) > MAX_IDS:
        return None
    return kept, _dropped_ids(run, label)


def _fate(run: RunDir, label: str) -> tuple[set, dict] | None:
    """(ids kept, {id: reason} dropped) of one stage, or None when ids are not available."""
    if not any(run.stage_dir(label).glob("part-*.parquet")) and any(run.stage_dir(label).glob("part-*.stats.json")):
        return _fate_unwritten(run, label)
    kept: set = set()
    dropped: dict = {}
    for part in sorted(run.stage_dir(label).glob("part-*.parquet")):
        if "id" not in pq.ParquetFile(part).schema_arrow.names:
            return None
        kept.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        t = read_scores(run, label, part.name[: -len(".parquet")])
        if t is not None:
            t = t.select(["id", "reason"])
            t = t.filter(pc.is_valid(t.column("reason")))  # kept rows, when every row is stored
            dropped.update(zip(t.column("id").to_pylist(), t.column("reason").to_pylist()))
        if len(kept) + len(dropped) > MAX_IDS:
            return None
    return kept, dropped


def _shares(report: dict) -> dict:
    return {col: {v: d["share"] for v, d in values.items()} for col, values in report["output"]["by"].items()}


def compare(a: dict, b: dict) -> dict:
    """`a` and `b` are version-2 reports (`synth.audit.report.build_report`)."""
    run_a, run_b = RunDir(a["run"]), RunDir(b["run"])
    labels_a = [s["stage"] for s in a["stages"]]
    labels_b = [s["stage"] for s in b["stages"]]
    shared = [label for label in labels_a if label in labels_b]
    if not shared:
        from synth.audit.report import AuditError

        raise AuditError(
            f"--compare: {b['run']} ({b['pipeline']}) shares no stage with {a['run']} ({a['pipeline']}); nothing to compare"
        )
    by_a = {s["stage"]: s for s in a["stages"]}
    by_b = {s["stage"]: s for s in b["stages"]}
    stages = []
    for label in shared:
        sa, sb = by_a[label], by_b[label]
        reasons = sorted(set(sa["dropped"]) | set(sb["dropped"]))
        row = {
            "stage": label,
            "type": [sa["type"], sb["type"]],
            "in": [sa["in"], sb["in"]],
            "out": [sa["out"], sb["out"]],
            "dropped": {r: [sa["dropped"].get(r, 0), sb["dropped"].get(r, 0)] for r in reasons},
            "options_changed": _options_diff(run_a, run_b, label),
        }
        fate_a, fate_b = _fate(run_a, label), _fate(run_b, label)
        if fate_a is not None and fate_b is not None and (fate_a[1] or fate_b[1]):
            kept_a, drop_a = fate_a
            kept_b, drop_b = fate_b
            a_only = [i for i in drop_b if i in kept_a]
            b_only = [i for i in drop_a if i in kept_b]
            row["flips"] = {
                "kept_in_a_dropped_in_b": len(a_only),
                "kept_in_b_dropped_in_a": len(b_only),
                "examples": [{"id": i, "kept_in": "a", "reason_in_b": drop_b[i]} for i in sorted(a_only)[:EXAMPLES]]
                + [{"id": i, "kept_in": "b", "reason_in_a": drop_a[i]} for i in sorted(b_only)[:EXAMPLES]],
            }
        stages.append(row)
    shares_a, shares_b = _shares(a), _shares(b)
    shares = {}
    for col in sorted(set(shares_a) | set(shares_b)):
        values = sorted(set(shares_a.get(col, {})) | set(shares_b.get(col, {})))
        shares[col] = {v: [shares_a.get(col, {}).get(v, 0.0), shares_b.get(col, {}).get(v, 0.0)] for v in values}
    only_a = [x for x in labels_a if x not in labels_b]
    only_b = [x for x in labels_b if x not in labels_a]
    partial = bool(only_a or only_b) or a["pipeline"] != b["pipeline"]
    return {
        "a": a["run"],
        "b": b["run"],
        "pipelines": [a["pipeline"], b["pipeline"]],
        "partial": partial,
        "note": (
            f"different pipelines: compared only the {len(shared)} stages with the same label"
            + (f"; only in a: {', '.join(only_a)}" if only_a else "")
            + (f"; only in b: {', '.join(only_b)}" if only_b else "")
        )
        if partial
        else "same pipeline",
        "stages": stages,
        "output": [a["stages"][-1]["out"], b["stages"][-1]["out"]],
        "unit": [a["output"]["unit"], b["output"]["unit"]],
        "shares": shares,
    }


def _options_diff(run_a: RunDir, run_b: RunDir, label: str) -> dict:
    from synth.core.rundir import read_json

    def opts(run: RunDir) -> dict:
        meta = run.stage_meta(label)
        return read_json(meta).get("options", {}) if meta.exists() else {}

    oa, ob = opts(run_a), opts(run_b)
    return {k: [oa.get(k), ob.get(k)] for k in sorted(set(oa) | set(ob)) if oa.get(k) != ob.get(k)}


def check_comparable(a_root: Path, b_root: Path) -> None:
    if Path(a_root).resolve() == Path(b_root).resolve():
        from synth.audit.report import AuditError

        raise AuditError(f"--compare {b_root}: that is the run being audited")
