"""The audit report: the ledger plus the statistics, as one versioned JSON document.

Schema (`version` 2; every key below is always present unless marked optional):

- `version`, `pipeline`, `run`, `complete`, `stages`: as in version 1, the
  `stages` entries unchanged: `{stage, type, in, out, dropped, counters,
  creates_records, shards, shards_done, seconds, balanced}`.
- `status`: "complete", "in progress" (a run holds the lock), "incomplete"
  (stopped early) or "failed shards" (see `failed_shards`).
- `failed_shards`: `[{stage, shard, phase, error}]`, shards logged as failed and
  still not done.
- `funnel`: per stage `{stage, type, in, out, dropped, kept_pct, seconds,
  records_per_s, shards_done, shards}`.
- `llm`: per model `{model, stages, requests, samples, failures, cache_hits,
  prompt_tokens, completion_tokens, latency_s, tokens_per_s}`.
- `profiles`: per stage label `{rows, unit, size_total, scores: {col: summary}
  (over every record the stage saw, kept and dropped), columns: {col: summary}
  (numeric columns it wrote, over its output), lengths: {col: {chars, words}},
  categorical: {col: {value: {records, <unit>}}}, thresholds: {col: {option,
  value}}}`; a summary is `{count, nulls, min, max, mean, quantiles: {p1..p99},
  histogram: {edges, counts}}`.
- `output`: `{unit, by: {col: {value: {records, <unit>, share}}}}` over the final
  stage (language, domain, kind...).
- `notes`: what the report could not cover (shards without statistics), one line each.
- `domain_mix`: per stage that records `domain_mix.*` counters,
  `{stage, domains: [{domain, before, after, target_share}]}`.
- optional `what_if` (a list, one per stage changed), `sweep` (a list, one per
  `--sweep`), `overlap`, `compare`: see those modules.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections import defaultdict
from pathlib import Path

from synth.audit import stats
from synth.core.ledger import audit as ledger_audit
from synth.core.rundir import RunDir, read_json

REPORT_VERSION = 2
LLM_FIELDS = ("requests", "samples", "failures", "cache_hits", "prompt_tokens", "completion_tokens", "latency_s")
_ERROR_HEADER = re.compile(r"^=== \S+ \S+ (\S+) (part-\d+) \((\w+)\)$")


class AuditError(ValueError):
    """The run cannot be audited as asked; the message is the one line the user sees."""


def load_run(run_root: str | Path) -> dict:
    """The version-1 ledger report, or an AuditError saying why the directory is not auditable."""
    root = Path(run_root)
    if not root.is_dir():
        raise AuditError(f"{root}: no such directory")
    if not (root / "run.json").exists():
        raise AuditError(f"{root}: not a synth run directory (no run.json)")
    try:
        manifest = read_json(root / "run.json")
        if (
            not isinstance(manifest, dict)
            or not all("label" in s and "type" in s for s in manifest.get("stages", []))
            or "stages" not in manifest
        ):
            raise KeyError("stages[].label/type")
        return ledger_audit(root)
    except KeyError as exc:
        raise AuditError(
            f"{root}: written by an older or unknown ledger version (missing {exc}); rerun it with this synth to audit it"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"{root}: a ledger file is not valid JSON ({exc}); the run directory is damaged") from None


def run_in_progress(root: Path) -> bool:
    lock = root / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def failed_shards(run: RunDir, report: dict) -> list[dict]:
    log = run.logs_dir / "errors.log"
    if not log.exists():
        return []
    failed: dict[tuple[str, str], dict] = {}
    current = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _ERROR_HEADER.match(line)
        if m:
            label, shard, phase = m.groups()
            current = failed[(label, shard)] = {"stage": label, "shard": shard, "phase": phase, "error": ""}
        elif current is not None and line.strip():
            current["error"] = line.strip()  # the traceback's last line is the error
    labels = {s["stage"] for s in report["stages"]}
    return [f for (label, shard), f in sorted(failed.items()) if label in labels and not run.is_done(label, shard)]


def llm_table(stages: list[dict]) -> list[dict]:
    models: dict[str, dict] = {}
    for s in stages:
        for key, value in s["counters"].items():
            if not key.startswith("llm."):
                continue
            model, _, field = key[4:].rpartition(".")
            if field not in LLM_FIELDS or not model:
                continue
            row = models.setdefault(model, {"model": model, "stages": [], **{f: 0 for f in LLM_FIELDS}})
            row[field] += value
            if s["stage"] not in row["stages"]:
                row["stages"].append(s["stage"])
    for row in models.values():
        row["latency_s"] = round(row["latency_s"], 3)
        row["tokens_per_s"] = round(row["completion_tokens"] / row["latency_s"], 2) if row["latency_s"] else None
    return sorted(models.values(), key=lambda r: r["model"])


def domain_mix(stages: list[dict]) -> list[dict]:
    out = []
    for s in stages:
        mix: dict[str, dict] = defaultdict(lambda: {"before": 0, "after": 0, "target_share": None})
        for key, value in s["counters"].items():
            parts = key.split(".", 2)
            if len(parts) == 3 and parts[0] == "domain_mix" and parts[1] in ("before", "after", "target"):
                if parts[1] == "target":
                    mix[parts[2]]["target_share"] = value / 1000  # recorded in per-mille
                else:
                    mix[parts[2]][parts[1]] = value
        if mix:
            out.append({"stage": s["stage"], "domains": [{"domain": d, **v} for d, v in sorted(mix.items())]})
    return out


def _threshold_columns(options: dict, columns: list[str]) -> dict[str, dict]:
    """Which option is the cutoff of which score column (min_words -> gopher_words):
    the shortest column named like the option's stem, each column used once."""
    found: dict[str, dict] = {}
    for option, value in options.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        for prefix in ("min_", "max_"):
            if option.startswith(prefix):
                stem = option[len(prefix) :]
                matches = sorted((c for c in columns if c == stem or c.endswith("_" + stem)), key=len)
                if matches and matches[0] not in found:
                    found[matches[0]] = {"option": option, "value": value}
    return found


def stage_profile(run: RunDir, label: str) -> dict | None:
    from synth.audit.compact import read_profiles

    by_shard = read_profiles(run, label)  # a completed run's merged profiles, then any shard's own
    for path in sorted(run.stage_dir(label).glob("part-*.profile.json")):
        try:
            by_shard[path.name[: -len(".profile.json")]] = read_json(path)
        except (json.JSONDecodeError, UnicodeDecodeError):
            by_shard.pop(
                path.name[: -len(".profile.json")], None
            )  # torn by a crash: that shard is reported as not profiled
    profiles = [p for name, p in sorted(by_shard.items()) if run.is_done(label, name)]
    if not profiles:
        return None
    merged = stats.merge_profiles(profiles)
    unit = merged["unit"] or "words"
    meta = read_json(run.stage_meta(label)) if run.stage_meta(label).exists() else {}
    numeric_cols = [*merged["seen"], *merged["columns"]]
    return {
        "rows": merged["rows"],
        "unit": unit,
        "size_total": merged["size_total"],
        "scores": {k: stats.summary(v) for k, v in merged["seen"].items()},
        "columns": {k: stats.summary(v) for k, v in merged["columns"].items()},
        "lengths": {k: {m: stats.summary(s) for m, s in v.items()} for k, v in merged["lengths"].items()},
        "categorical": {
            k: {val: {"records": n, unit: size} for val, (n, size) in v.items()}
            for k, v in merged["categorical"].items()
        },
        "thresholds": _threshold_columns(meta.get("options", {}), numeric_cols),
        "shards_profiled": len(profiles),
    }


def build_report(run_root: str | Path) -> dict:
    report = load_run(run_root)
    run = RunDir(run_root)
    report["version"] = REPORT_VERSION
    stages = report["stages"]
    planned = read_json(run.manifest).get("shards") or 0  # stages not started yet have no shard count
    funnel = []
    for s in stages:
        dropped = sum(s["dropped"].values())
        funnel.append(
            {
                "stage": s["stage"],
                "type": s["type"],
                "in": s["in"],
                "out": s["out"],
                "dropped": dropped,
                "kept_pct": round(100 * s["out"] / s["in"], 2) if s["in"] else None,
                "seconds": s["seconds"],
                "records_per_s": float(f"{s['in'] / s['seconds']:.3g}") if s["seconds"] else None,
                "shards_done": s["shards_done"],
                "shards": s["shards"] or planned,
            }
        )
    report["funnel"] = funnel
    report["failed_shards"] = failed_shards(run, report)
    if run_in_progress(run.root):
        report["status"] = "in progress"
    elif report["failed_shards"]:
        report["status"] = "failed shards"
    else:
        report["status"] = "complete" if report["complete"] else "incomplete"
    report["llm"] = llm_table(stages)
    report["profiles"] = {}
    report["notes"] = []
    for s in stages:
        profile = stage_profile(run, s["stage"])
        if profile is not None:
            report["profiles"][s["stage"]] = profile
        failed_stats = s["counters"].get("audit.statistics_failed", 0)
        if failed_stats:
            kinds = ", ".join(k.rsplit(".", 1)[1] for k in s["counters"] if k.startswith("audit.statistics_failed."))
            report["notes"].append(
                f"{s['stage']}: statistics failed on {failed_stats} shards ({kinds}); their records are in the ledger but not in the distributions"
            )
        elif s["shards_done"] and (profile is None or profile["shards_profiled"] < s["shards_done"]):
            have = profile["shards_profiled"] if profile else 0
            report["notes"].append(
                f"{s['stage']}: statistics for {have} of {s['shards_done']} finished shards (the rest were made with SYNTH_AUDIT_STATS=0 or an older synth): distributions are partial"
            )
    report["output"] = output_shares(report)
    report["domain_mix"] = domain_mix(stages)
    return report


def output_shares(report: dict) -> dict:
    """Records and size per language, domain, kind... over the last profiled stage."""
    if not report["profiles"]:
        return {"unit": None, "stage": None, "by": {}}
    last = list(report["profiles"])[-1]
    profile = report["profiles"][last]
    unit = profile["unit"]
    by = {}
    for col, values in profile["categorical"].items():
        total = sum(v[unit] for v in values.values()) or 1
        by[col] = {val: {**v, "share": round(v[unit] / total, 4)} for val, v in values.items()}
    return {"unit": unit, "stage": last, "by": by}
