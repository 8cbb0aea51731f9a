"""Re-tuning a filter from the run alone: `--what-if STAGE.OPTION=VALUE` and `--sweep STAGE.OPTION`.

A filter's decision depends on the columns it reads and the scores it computed.
Both are in the run: the stage's input is the previous stage's output shard, the
scores of kept records are columns of the stage's own output, and the scores of
dropped records (with their row in the input) are in `RUN/rejected/<stage>/
*.scores.parquet`. Re-running `decide` with other options on those rows gives the
exact count the stage would keep, without scoring anything again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pydantic import ValidationError

from synth.audit.compact import read_scores
from synth.audit.report import AuditError, _threshold_columns
from synth.core.registry import StageImportError, UnknownStageType, stage_class
from synth.core.rundir import RunDir, read_json
from synth.core.stage import Filter, PipelineContext

EXAMPLES = 5
SWEEP_POINTS = 21
# Beyond this many input records a sweep scores a seeded sample (said in the report).
SWEEP_MAX_ROWS = 200_000
TEXT_HINT = ("text", "instruction", "response")


@dataclass
class StageRef:
    index: int
    label: str
    type: str
    options: dict


def resolve_stage(run: RunDir, name: str) -> StageRef:
    """A stage named by label (03-rules), name (rules) or index (3)."""
    manifest = read_json(run.manifest)
    stages = manifest["stages"]
    matches = [i for i, s in enumerate(stages) if name in (s["label"], s["label"].split("-", 1)[1], str(i), s["type"])]
    if not matches:
        raise AuditError(f"unknown stage '{name}'; stages of this run: {', '.join(s['label'] for s in stages)}")
    if len(matches) > 1:
        raise AuditError(
            f"stage '{name}' is ambiguous ({', '.join(stages[i]['label'] for i in matches)}); use the full label"
        )
    i = matches[0]
    meta_path = run.stage_meta(stages[i]["label"])
    options = read_json(meta_path).get("options", {}) if meta_path.exists() else {}
    return StageRef(i, stages[i]["label"], stages[i]["type"], options)


def split_assignment(text: str, with_value: bool = True) -> tuple[str, str, str | None]:
    head, eq, value = text.partition("=")
    if with_value and not eq:
        raise AuditError(f"--what-if {text!r}: expected STAGE.OPTION=VALUE, e.g. gopher_quality.min_words=30")
    stage, dot, option = head.strip().rpartition(".")
    if not dot or not stage or not option:
        raise AuditError(
            f"{text!r}: expected STAGE.OPTION{'=VALUE' if with_value else ''} (e.g. gopher_quality.min_words)"
        )
    return stage, option, (value.strip() if eq else None)


def build_filter(run: RunDir, ref: StageRef, changes: dict, any_stage: bool = False) -> Filter:
    try:
        cls = stage_class(ref.type)
    except (UnknownStageType, StageImportError) as exc:
        raise AuditError(f"stage {ref.label}: its type {ref.type} cannot be loaded here ({exc})") from None
    if not issubclass(cls, Filter) and not any_stage:
        raise AuditError(
            f"stage {ref.label} ({ref.type}) is not a filter: only a filter's thresholds can be re-tuned from the run"
        )
    for option in changes:
        if option not in cls.Options.model_fields:
            raise AuditError(
                f"stage {ref.label} ({ref.type}) has no option '{option}'; options: {', '.join(sorted(cls.Options.model_fields))}"
            )
    try:
        opts = cls.Options.model_validate({**ref.options, **changes})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise AuditError(f"{ref.label}.{where}={changes.get(where, '')!r}: {err['msg']}") from None
    manifest = read_json(run.manifest)
    config = manifest.get("config") or {}
    path = manifest.get("config_path")
    ctx = PipelineContext(
        seed=manifest.get("seed", 0),
        run_dir=run.root,
        config_path=Path(path) if path else None,
        settings=dict(config.get("settings") or {}),
    )
    cls = cls.configured(opts)  # the class the run used (decontaminate with action: cut is a transform)
    if not issubclass(cls, Filter) and not any_stage:
        raise AuditError(
            f"stage {ref.label} ({ref.type}) is not a filter with these options: only a filter's thresholds can be re-tuned from the run"
        )
    return cls(opts, ctx)


def _parse_value(raw: str):
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


class StageRows:
    """Every record a filter stage saw, with the columns its decide reads and its scores.

    From the stage's input and output shards when both are on disk; else (a fused
    stage, or a global stage's input released by a finished run) from its stored
    scores of every row, recomputing its input only for a column its decide reads
    that was too long to store (the text `rules` checks), and only when the stored
    columns do not reproduce the run's decisions."""

    def __init__(self, run: RunDir, ref: StageRef, stage: Filter, max_rows: int | None = None, seed: int = 0):
        if ref.index == 0:
            raise AuditError(f"stage {ref.label} is the source: it has no input to re-decide")
        manifest = read_json(run.manifest)
        upstream = manifest["stages"][ref.index - 1]["label"]
        score_cols = [c for c in stage.output_columns()]
        inputs = [c for c in dict.fromkeys([*stage.input_columns(), *stage.decide_columns()]) if c not in score_cols]
        self.run, self.ref = run, ref
        self.columns: dict[str, list] = {}
        self.reasons: list[str | None] = []
        self.where: list[tuple[str, int]] = []  # (shard, row) of each record
        self.upstream = upstream
        self.sampled = False
        self._pipeline = None
        names = sorted(p.name[: -len(".stats.json")] for p in run.stage_dir(ref.label).glob("part-*.stats.json"))
        names = [n for n in names if run.is_done(ref.label, n)]
        if not names:
            raise AuditError(f"stage {ref.label} has no finished shard yet: nothing to re-decide")
        blocks = []
        missing_inputs: set[str] = set()
        for name in names:
            stats = read_json(run.stats(ref.label, name)) if run.stats(ref.label, name).exists() else {}
            rej = read_scores(run, ref.label, name)
            if not stats.get("in"):
                continue  # an empty shard: nothing to re-decide
            if not (run.part(upstream, name).exists() and run.part(ref.label, name).exists()):
                if rej is None or rej.num_rows != stats.get("in", -1):
                    raise AuditError(
                        f"stage {ref.label}: {name} kept neither its input and output shards nor the scores of every row "
                        "(a run by an older synth, or with statistics off); rerun with `--keep-intermediate` to re-tune it"
                    )
                block = {
                    col: rej.column(col).to_pylist() for col in [*inputs, "id", *score_cols] if col in rej.column_names
                }
                missing_inputs.update(c for c in inputs if c not in rej.column_names)
                blocks.append((name, rej.num_rows, block, rej.column("reason").to_pylist()))
                continue
            out = pq.read_table(run.part(ref.label, name))
            up = run.part(upstream, name)
            have_inputs = [c for c in inputs + ["id"] if c in pq.ParquetFile(up).schema_arrow.names]
            inp = pq.read_table(up, columns=have_inputs)
            n = inp.num_rows
            if sum(stats.get("dropped", {}).values()) and rej is None:
                raise AuditError(
                    f"stage {ref.label}: {name} has no rejected scores (the run was made with statistics off or by an older synth); rerun that stage to re-tune it"
                )
            if rej is not None:
                rej = rej.filter(
                    pc.is_valid(rej.column("reason"))
                )  # when every row is stored, the dropped ones have a reason
            dropped_rows = rej.column("row").to_pylist() if rej is not None else []
            if any(r is None for r in dropped_rows):
                raise AuditError(
                    f"stage {ref.label}: dropped records were not recorded with their input row; it cannot be re-decided"
                )
            kept_pos = np.setdiff1d(np.arange(n), np.array(dropped_rows, dtype=np.int64), assume_unique=False)
            if len(kept_pos) != out.num_rows:
                raise AuditError(
                    f"stage {ref.label} {name}: {n} input rows, {out.num_rows} kept and {len(dropped_rows)} dropped do not add up; was the run changed after it finished?"
                )
            block = {}
            for col in [*have_inputs, *score_cols]:
                values = [None] * n
                if col in have_inputs:
                    values = inp.column(col).to_pylist()
                else:
                    if col in out.column_names:
                        for pos, v in zip(kept_pos.tolist(), out.column(col).to_pylist()):
                            values[pos] = v
                    if rej is not None and col in rej.column_names:
                        for pos, v in zip(dropped_rows, rej.column(col).to_pylist()):
                            values[pos] = v
                block[col] = values
            reasons = [None] * n
            if rej is not None:
                for pos, r in zip(dropped_rows, rej.column("reason").to_pylist()):
                    reasons[pos] = r
            blocks.append((name, n, block, reasons))
        if missing_inputs and not self._reproduces(stage, blocks):
            # decide reads a long column that was not stored: recompute the input for it
            for name, _n, block, _ in blocks:
                table = self.upstream_table(name, sorted(missing_inputs))
                for col in missing_inputs:
                    if col in table.column_names:
                        block[col] = table.column(col).to_pylist()
        total = sum(n for _, n, _, _ in blocks)
        keep_mask = None
        if max_rows is not None and total > max_rows:
            self.sampled = True
            rng = np.random.default_rng(seed)
            keep_mask = np.zeros(total, dtype=bool)
            keep_mask[rng.choice(total, max_rows, replace=False)] = True
        offset = 0
        all_cols = list(dict.fromkeys(col for _, _, block, _ in blocks for col in block))
        for name, n, block, reasons in blocks:
            idx = range(n) if keep_mask is None else np.flatnonzero(keep_mask[offset : offset + n]).tolist()
            offset += n
            for col in all_cols:
                values = block.get(col) or [None] * n
                self.columns.setdefault(col, []).extend(values[i] for i in idx)
            self.reasons.extend(reasons[i] for i in idx)
            self.where.extend((name, i) for i in idx)
        self.total = total
        self.n = len(self.reasons)

    @staticmethod
    def _reproduces(stage: Filter, blocks: list) -> bool:
        """Do the stored columns alone give the run's decisions?"""
        if getattr(stage.options, "annotate_only", False):
            return False
        try:
            for _, _n, block, reasons in blocks:
                cols = list(block)
                for values, recorded in zip(zip(*(block[c] for c in cols)), reasons):
                    if _decide(stage, dict(zip(cols, values))) != recorded:
                        return False
        except Exception:  # noqa: BLE001 - a column it reads is missing
            return False
        return True

    def upstream_table(self, name: str, columns: list[str]):
        """The stage's input shard (read, or recomputed when it was not kept)."""
        from synth.core.recompute import pipeline_of, stage_table

        part = self.run.part(self.upstream, name)
        if part.exists():
            have = pq.ParquetFile(part).schema_arrow.names
            return pq.read_table(part, columns=[c for c in columns if c in have])
        if self._pipeline is None:
            self._pipeline = pipeline_of(self.run)
        table = stage_table(self._pipeline, self.run, self.ref.index - 1, name)
        return table.select([c for c in columns if c in table.column_names])

    def rows(self):
        cols = list(self.columns)
        for values in zip(*(self.columns[c] for c in cols)):
            yield dict(zip(cols, values))

    def decide_all(self, stage: Filter) -> list[str | None]:
        if getattr(stage.options, "annotate_only", False):
            return [None] * self.n
        try:
            return [_decide(stage, row) for row in self.rows()]
        except Exception as exc:  # noqa: BLE001 - a stored row the filter cannot judge
            raise AuditError(
                f"{type(stage).type or type(stage).__name__}: its decide failed on a stored row ({type(exc).__name__}: {exc}); "
                "the columns it reads were not kept by this run"
            ) from None


def _decide(stage: Filter, row: dict) -> str | None:
    try:
        return stage.decide(row)
    except AttributeError:
        if stage._ready:
            raise
        stage.ensure_setup()  # a decide that uses what setup prepares (langid's language set)
        return stage.decide(row)


def _text_of(data: StageRows, shard: str, row: int, cache: dict) -> tuple[str, str | None]:
    """(text, id) of one input row, for an example."""
    if shard not in cache:
        try:
            cache[shard] = data.upstream_table(shard, [*TEXT_HINT, "id"])
        except Exception:  # noqa: BLE001 - an example without its text is still an example
            cache[shard] = None
    table = cache[shard]
    if table is None:
        return "", None
    cols = [c for c in TEXT_HINT if c in table.column_names][:2]
    parts = [str(table.column(c)[row].as_py() or "") for c in cols]
    rid = table.column("id")[row].as_py() if "id" in table.column_names else None
    return " | ".join(p for p in parts if p)[:200].replace("\n", " "), rid


def _example(run: RunDir, data: StageRows, i: int, score_cols: list[str], cache: dict, **extra) -> dict:
    shard, row = data.where[i]
    text, rid = _text_of(data, shard, row, cache)
    stored = data.columns.get("id", [None] * data.n)[i]
    return {
        "id": stored if stored is not None else rid,
        "shard": shard,
        "row": row,
        "scores": {c: data.columns[c][i] for c in score_cols if c in data.columns},
        "text": text,
        **extra,
    }


def _downstream_note(report: dict, label: str) -> tuple[str, float | None]:
    stages = report["stages"]
    i = next(k for k, s in enumerate(stages) if s["stage"] == label)
    later = stages[i + 1 :]
    if not later:
        return "this is the last stage: the figure is exact for the run's output", 1.0
    if any(s["creates_records"] for s in later):
        return (
            f"exact for {label}; later stages ({', '.join(s['stage'] for s in later)}) create records, so the effect on the final output is not estimated",
            None,
        )
    survive = stages[-1]["out"] / stages[i]["out"] if stages[i]["out"] else None
    pct = f"{100 * survive:.1f}%" if survive is not None else "an unknown share"
    return (
        f"exact for {label}; later stages kept {pct} of its output, so the change in the final output is an estimate (records newly kept were never seen by {', '.join(s['stage'] for s in later)})",
        survive,
    )


def what_if(run_root: str | Path, report: dict, assignments: list[str]) -> list[dict]:
    run = RunDir(run_root)
    per_stage: dict[str, tuple[StageRef, dict]] = {}
    for text in assignments:
        stage_name, option, raw = split_assignment(text)
        ref = resolve_stage(run, stage_name)
        per_stage.setdefault(ref.label, (ref, {}))[1][option] = _parse_value(raw)
    results = []
    for label, (ref, changes) in per_stage.items():
        stage = build_filter(run, ref, changes, any_stage=True)  # validates names and types
        if not isinstance(stage, Filter):
            results.append(_threshold_what_if(run, report, ref, stage, changes))
            continue
        current = build_filter(run, ref, {})
        changed = build_filter(run, ref, changes)
        data = StageRows(run, ref, current)
        before = data.decide_all(current)
        recorded = data.reasons
        mismatch = sum(
            1 for a, b in zip(before, recorded) if a != b and not getattr(current.options, "annotate_only", False)
        )
        after = data.decide_all(changed)
        score_cols = list(current.output_columns())
        cache: dict = {}
        newly_dropped = [i for i in range(data.n) if before[i] is None and after[i] is not None]
        newly_kept = [i for i in range(data.n) if before[i] is not None and after[i] is None]
        reasons_after: dict[str, int] = {}
        for r in after:
            if r is not None:
                reasons_after[r] = reasons_after.get(r, 0) + 1
        kept_before = sum(1 for r in before if r is None)
        kept_after = sum(1 for r in after if r is None)
        note, survive = _downstream_note(report, label)
        if mismatch:
            note += (
                f"; {mismatch:,} records decide differently now than when the run was made (the stage's code changed?)"
            )
        results.append(
            {
                "stage": label,
                "changes": changes,
                "records": data.n,
                "kept_before": kept_before,
                "kept_after": kept_after,
                "dropped_after": dict(sorted(reasons_after.items(), key=lambda kv: -kv[1])),
                "newly_dropped": len(newly_dropped),
                "newly_kept": len(newly_kept),
                "final_output_estimate": round(report["stages"][-1]["out"] + (kept_after - kept_before) * survive)
                if survive is not None
                else None,
                "exact": mismatch == 0,
                "note": note,
                "examples": {
                    "newly_dropped": [
                        _example(run, data, i, score_cols, cache, reason=after[i]) for i in newly_dropped[:EXAMPLES]
                    ],
                    "newly_kept": [
                        _example(run, data, i, score_cols, cache, was=before[i]) for i in newly_kept[:EXAMPLES]
                    ],
                },
            }
        )
    return results


def sweep(run_root: str | Path, report: dict, target: str, points: int = SWEEP_POINTS) -> dict:
    run = RunDir(run_root)
    stage_name, option, _ = split_assignment(target, with_value=False)
    ref = resolve_stage(run, stage_name)
    current = build_filter(run, ref, {})
    if option not in type(current).Options.model_fields:
        raise AuditError(
            f"stage {ref.label} ({ref.type}) has no option '{option}'; options: {', '.join(sorted(type(current).Options.model_fields))}"
        )
    value = getattr(current.options, option)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuditError(
            f"{ref.label}.{option} is {type(value).__name__} {value!r}: only a numeric threshold can be swept; use --what-if for other values"
        )
    data = StageRows(run, ref, current, max_rows=SWEEP_MAX_ROWS, seed=int(read_json(run.manifest).get("seed", 0)))
    score_cols = list(current.output_columns())
    column = next(iter(_threshold_columns({option: value}, score_cols)), None)
    values = [
        v
        for v in (data.columns.get(column) or [])
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
    ]
    if values:
        lo, hi = float(min(values)), float(max(values))
    else:
        lo, hi = (0.0, 2.0 * value) if value > 0 else (2.0 * value, 0.0) if value < 0 else (0.0, 1.0)
    lo, hi = min(lo, value), max(hi, value)
    grid = sorted(set(np.linspace(lo, hi, points).tolist() + [float(value)]))
    if isinstance(value, int):
        grid = sorted({round(g) for g in grid})
    field = type(current).Options.model_fields[option]
    curve = []
    for g in grid:
        try:
            stage = build_filter(run, ref, {option: g})
        except AuditError:  # outside the option's allowed range
            continue
        kept = sum(1 for r in data.decide_all(stage) if r is None)
        curve.append({"value": g, "kept": kept, "kept_pct": round(100 * kept / data.n, 2) if data.n else None})
    cache: dict = {}
    decisions = data.decide_all(current)
    inside, outside = [], []
    if column:
        order = sorted(
            (i for i in range(data.n) if isinstance(data.columns[column][i], (int, float))),
            key=lambda i: abs(data.columns[column][i] - value),
        )
        for i in order:
            bucket = inside if decisions[i] is None else outside
            if len(bucket) < EXAMPLES:
                bucket.append(_example(run, data, i, score_cols, cache, reason=decisions[i]))
            if len(inside) >= EXAMPLES and len(outside) >= EXAMPLES:
                break
    return {
        "stage": ref.label,
        "option": option,
        "current": value,
        "column": column,
        "description": field.description,
        "records": data.n,
        "of_records": data.total,
        "sampled": data.sampled,
        "curve": curve,
        "examples": {"just_inside": inside, "just_outside": outside},
    }


def _threshold_what_if(run: RunDir, report: dict, ref: StageRef, changed, changes: dict) -> dict:
    """What-if for a stage that is not a `Filter` but drops on a score it writes (an LLM
    critique's `min_grade` on `critique_grade`): the score of kept records is in its
    output, that of dropped records in its rejected scores; a record is taken to be
    dropped by the threshold exactly when its score is on the wrong side of it."""
    if len(changes) != 1:
        raise AuditError(f"stage {ref.label} is not a filter: change one threshold at a time")
    ((option, value),) = changes.items()
    written = list(changed.output_columns())
    mapping = _threshold_columns({option: value}, written)
    if not mapping or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuditError(
            f"stage {ref.label} ({ref.type}) is not a filter and {option} is not a min_/max_ threshold on a score it writes ({', '.join(written)}): "
            "only a filter's options can be re-decided from the run"
        )
    column = next(iter(mapping))
    old = ref.options.get(option)
    low = option.startswith("min_")

    def fails(v, threshold) -> bool:
        return v is not None and threshold is not None and (v < threshold if low else v > threshold)

    kept: list = []
    dropped: list[tuple] = []  # (id, reason, score)
    for part in sorted(run.stage_dir(ref.label).glob("part-*.parquet")):
        name = part.name[: -len(".parquet")]
        if name.startswith("part-") and column in pq.ParquetFile(part).schema_arrow.names:
            t = pq.read_table(part, columns=[c for c in ("id", column) if c in pq.ParquetFile(part).schema_arrow.names])
            ids = t.column("id").to_pylist() if "id" in t.column_names else [None] * t.num_rows
            kept.extend(zip(ids, t.column(column).to_pylist()))
        t = read_scores(run, ref.label, name)
        if t is not None:
            t = t.filter(pc.is_valid(t.column("reason")))  # a file of every row stores kept ones with no reason
            scores = t.column(column).to_pylist() if column in t.column_names else [None] * t.num_rows
            dropped.extend(zip(t.column("id").to_pylist(), t.column("reason").to_pylist(), scores))
    newly_dropped = [(i, v) for i, v in kept if fails(v, value)]
    newly_kept = [(i, r, v) for i, r, v in dropped if fails(v, old) and not fails(v, value)]
    kept_before = len(kept)
    kept_after = kept_before - len(newly_dropped) + len(newly_kept)
    note, survive = _downstream_note(report, ref.label)
    return {
        "stage": ref.label,
        "changes": changes,
        "records": len(kept) + len(dropped),
        "kept_before": kept_before,
        "kept_after": kept_after,
        "dropped_after": {},
        "newly_dropped": len(newly_dropped),
        "newly_kept": len(newly_kept),
        "final_output_estimate": round(report["stages"][-1]["out"] + (kept_after - kept_before) * survive)
        if survive is not None
        else None,
        "exact": False,
        "note": f"{ref.label} is not a filter: taken to drop exactly the records whose {column} is {'below' if low else 'above'} {option}; "
        + note,
        "examples": {
            "newly_dropped": [
                {"id": i, "scores": {column: v}, "text": "", "reason": f"{column} {'<' if low else '>'} {value}"}
                for i, v in newly_dropped[:EXAMPLES]
            ],
            "newly_kept": [{"id": i, "scores": {column: v}, "text": "", "was": r} for i, r, v in newly_kept[:EXAMPLES]],
        },
    }
