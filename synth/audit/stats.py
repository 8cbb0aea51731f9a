"""Per-shard statistics over every record a stage saw, mergeable at audit time.

Numbers are summarised in a log-bucketed sketch (the DDSketch idea: bucket
`k` holds values in (gamma^(k-1), gamma^k]), so quantiles are within 1% relative
error at any corpus size, shards merge by adding bucket counts, and memory does
not grow with the record count. Categorical columns are value counts, with the
records' token (or word) total per value so the audit can say how much of the
output each language, domain or kind is.

One `part-XXXXX.profile.json` is written beside each shard's ledger entry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PROFILE_VERSION = 1
RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
# Values smaller than this in magnitude share the zero bucket.
MIN_MAGNITUDE = 1e-9
# Columns whose values name a group; summarised per stage wherever present.
CATEGORICAL_COLUMNS = (
    "language",
    "domain",
    "kind",
    "evolution",
    "critique_grade",
    "pattern",
    "route_model",
    "quality_label",
    "exec_status",
    "finish_reason",
    "source",
)
# Columns whose length distribution is kept (characters and words).
TEXT_COLUMNS = ("text", "instruction", "response")
# A per-record token count, when a stage writes one, is preferred to words.
TOKEN_COLUMNS = ("tokens", "num_tokens", "completion_tokens", "response_tokens")
MAX_CATEGORIES = 500  # beyond this many values per shard, the rest is "(other)"


def enabled() -> bool:
    """Statistics are on unless SYNTH_AUDIT_STATS=0 (used by the overhead benchmark)."""
    return os.environ.get("SYNTH_AUDIT_STATS", "1") not in ("0", "false", "off")


# -- numeric sketch -----------------------------------------------------------------


def sketch(values) -> dict | None:
    """Summarise a numeric (or boolean) array; None when it is not numeric."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if not isinstance(values, pa.Array):
        try:
            values = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
    typ = values.type
    integer = pa.types.is_integer(typ) or pa.types.is_boolean(typ)
    if pa.types.is_boolean(typ):
        values = values.cast(pa.int8())
    elif not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
        return None
    nulls = values.null_count
    arr = values.to_numpy(zero_copy_only=False)
    if nulls or arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
        arr = arr[~np.isnan(arr)]
    count = int(arr.size)
    out = {"count": count, "nulls": int(nulls + (len(values) - nulls - count)), "integer": integer, "buckets": {}}
    if count == 0:
        return out
    arr = arr.astype(np.float64, copy=False)
    out.update(min=float(arr.min()), max=float(arr.max()), sum=float(arr.sum()))
    mag = np.abs(arr)
    small = mag < MIN_MAGNITUDE
    keys = np.zeros(arr.size, dtype=np.int64)
    big = ~small
    if big.any():
        k = np.ceil(np.log(mag[big]) / _LOG_GAMMA).astype(np.int64)
        keys[big] = np.where(arr[big] < 0, -(k + 100_000), k + 100_000)
    uniq, counts = np.unique(keys, return_counts=True)
    # Key 0 is the zero bucket; +/-(k + 100000) are positive/negative log buckets.
    out["buckets"] = {str(int(u)): int(c) for u, c in zip(uniq, counts)}
    return out


def subtract_sketch(a: dict, b: dict | None) -> dict:
    """`a` without the values summarised in `b` (b's values must be a subset of a's)."""
    if not b or not b.get("count"):
        return a
    buckets = {k: c - b["buckets"].get(k, 0) for k, c in a["buckets"].items()}
    buckets = {k: c for k, c in buckets.items() if c > 0}
    out = {
        "count": a["count"] - b["count"],
        "nulls": a["nulls"] - b.get("nulls", 0),
        "integer": a.get("integer", False),
        "buckets": buckets,
    }
    if out["count"] <= 0 or not buckets:
        return {"count": 0, "nulls": out["nulls"], "integer": out["integer"], "buckets": {}}
    values = [v for v, _ in _sorted_buckets(out)]
    # min/max stay exact unless the removed values reached them; then the bucket bound.
    out["min"] = a["min"] if b["min"] > a["min"] else max(a["min"], values[0])
    out["max"] = a["max"] if b["max"] < a["max"] else min(a["max"], values[-1])
    out["sum"] = a["sum"] - b["sum"]
    return out


def subtract_categorical(a: dict, b: dict) -> dict:
    out = {k: list(v) for k, v in a.items()}
    for value, (n, size) in b.items():
        slot = out.get(value) or out.get("(other)")
        if slot is not None:
            slot[0] -= n
            slot[1] -= size
    return {k: v for k, v in out.items() if v[0] > 0}


def merge_sketches(sketches: Iterable[dict]) -> dict:
    total: dict = {"count": 0, "nulls": 0, "integer": True, "buckets": {}}
    for s in sketches:
        if not s:
            continue
        total["integer"] = total["integer"] and s.get("integer", False)
        total["count"] += s["count"]
        total["nulls"] += s.get("nulls", 0)
        if s["count"]:
            total["min"] = min(total.get("min", s["min"]), s["min"])
            total["max"] = max(total.get("max", s["max"]), s["max"])
            total["sum"] = total.get("sum", 0.0) + s["sum"]
        for k, c in s["buckets"].items():
            total["buckets"][k] = total["buckets"].get(k, 0) + c
    return total


def _bucket_value(key: int) -> float:
    """A representative value of a bucket (its midpoint in relative terms)."""
    if key == 0:
        return 0.0
    k = abs(key) - 100_000
    value = 2 * GAMMA**k / (GAMMA + 1)
    return value if key > 0 else -value


def _sorted_buckets(s: dict) -> list[tuple[float, int]]:
    # Integer columns: a bucket 2% wide holds one integer below ~50, so rounding is exact there.
    value = (lambda k: float(round(_bucket_value(k)))) if s.get("integer") else _bucket_value
    items = [(value(int(k)), c) for k, c in s["buckets"].items()]
    items.sort()
    return items


def quantiles(s: dict, qs: Iterable[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)) -> dict[str, float]:
    """Quantiles within 1% relative error (clamped to the exact min and max)."""
    if not s or not s.get("count"):
        return {}
    items = _sorted_buckets(s)
    cum = np.cumsum([c for _, c in items])
    out = {}
    for q in qs:
        rank = round(q * (s["count"] - 1))  # nearest rank, 0-based
        i = int(np.searchsorted(cum, rank, side="right"))
        value = items[min(i, len(items) - 1)][0]
        out[f"p{round(q * 100):d}"] = float(min(max(value, s["min"]), s["max"]))
    return out


def summary(s: dict) -> dict:
    """What the audit reports of a merged sketch."""
    if not s or not s.get("count"):
        return {"count": 0, "nulls": s.get("nulls", 0) if s else 0}
    return {
        "count": s["count"],
        "nulls": s["nulls"],
        "min": s["min"],
        "max": s["max"],
        "mean": s["sum"] / s["count"],
        "quantiles": quantiles(s),
        "histogram": histogram(s),
    }


def histogram(s: dict, bins: int = 40) -> dict:
    """Re-bin the sketch into equal-width bins between min and max, for charts."""
    lo, hi = s["min"], s["max"]
    if hi <= lo:
        return {"edges": [lo, hi], "counts": [s["count"]]}
    if s.get("integer"):  # whole-number bins, so no bin holds one more integer than its neighbour
        step = max(1, math.ceil((hi - lo + 1) / bins))
        edges = np.arange(lo - 0.5, hi + 0.5 + step, step)
        bins = len(edges) - 1
    else:
        edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for value, c in _sorted_buckets(s):
        i = int(np.clip(np.searchsorted(edges, min(max(value, lo), hi), side="right") - 1, 0, bins - 1))
        counts[i] += c
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def fraction_at_most(s: dict, threshold: float) -> float:
    """Share of values <= threshold, from the sketch (for sweep curves without data)."""
    if not s or not s.get("count"):
        return 0.0
    below = sum(c for v, c in _sorted_buckets(s) if v <= threshold)
    return below / s["count"]


# -- categorical -----------------------------------------------------------------------


def _measure(table: pa.Table, words_of: dict | None = None) -> tuple[str, pa.Array | None]:
    """The per-record size used for shares: a token column if a stage wrote one, else words."""
    for name in TOKEN_COLUMNS:
        if name in table.column_names:
            col = table.column(name)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                return "tokens", pc.fill_null(col, 0)
    words = None
    for name in TEXT_COLUMNS:
        if _is_text(table, name):
            n = words_of[name] if words_of and name in words_of else _word_counts(table.column(name))
            words = n if words is None else pc.add(words, n)
    return "words", words


def _is_text(table: pa.Table, name: str) -> bool:
    if name not in table.column_names:
        return False
    typ = table.schema.field(name).type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _word_counts(col) -> pa.Array:
    """Whitespace-separated words per string, vectorised over the raw UTF-8 buffer
    (ASCII whitespace; ~10x faster than splitting). Nulls count 0."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 0:
            return pa.array([], pa.int64())
        return (
            pa.concat_arrays([_word_counts(c) for c in col.chunks])
            if col.num_chunks > 1
            else _word_counts(col.chunk(0))
        )
    n = len(col)
    if n == 0:
        return pa.array([], pa.int64())
    wide = pa.types.is_large_string(col.type)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int64 if wide else np.int32)[
        col.offset : col.offset + n + 1
    ].astype(np.int64)
    base, end = int(offsets[0]), int(offsets[-1])
    if end == base:
        return pa.array(np.zeros(n, dtype=np.int64))
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[base:end]
    space = data <= 32  # ASCII whitespace and control characters separate words
    # start[i]: a word begins at byte i; one extra False slot lets empty trailing strings index it
    start = np.zeros(len(data) + 1, dtype=bool)
    start[1 : len(data)] = space[:-1]
    start[0] = True
    first = offsets[:-1] - base
    start[first] = True
    start[: len(data)] &= ~space
    start[len(data)] = False
    counts = np.add.reduceat(start, first, dtype=np.int64)
    counts[offsets[1:] == offsets[:-1]] = 0  # reduceat yields start[i] for empty segments
    return pa.array(counts)


def categorical(table: pa.Table, column: str, measure: pa.Array | None) -> dict:
    """{value: [records, size]} for one column (nulls under "(null)")."""
    col = table.column(column)
    if not (
        pa.types.is_string(col.type)
        or pa.types.is_large_string(col.type)
        or pa.types.is_boolean(col.type)
        or pa.types.is_integer(col.type)
    ):
        return {}
    col = pc.cast(col, pa.string())
    t = pa.table(
        {
            "v": pc.fill_null(col, "(null)"),
            "m": measure if measure is not None else pa.array(np.zeros(len(col)), pa.float64()),
        }
    )
    grouped = t.group_by("v").aggregate([("m", "sum"), ("m", "count")])
    values = grouped.column("v").to_pylist()
    sums = grouped.column("m_sum").to_pylist()
    counts = grouped.column("m_count").to_pylist()
    out: dict[str, list] = {}
    order = sorted(range(len(values)), key=lambda i: -counts[i])
    for rank, i in enumerate(order):
        key = values[i] if rank < MAX_CATEGORIES else "(other)"
        slot = out.setdefault(key, [0, 0])
        slot[0] += int(counts[i])
        slot[1] += int(sums[i] or 0)
    return out


def merge_categorical(parts: Iterable[dict]) -> dict:
    total: dict[str, list] = {}
    for part in parts:
        for value, (n, size) in part.items():
            slot = total.setdefault(value, [0, 0])
            slot[0] += n
            slot[1] += size
    return dict(sorted(total.items(), key=lambda kv: -kv[1][0]))


# -- one shard ---------------------------------------------------------------------------


def profile_table(
    table: pa.Table,
    written: Iterable[str],
    seen_scores: pa.Table | None = None,
    base: dict | None = None,
    removed: pa.Table | None = None,
) -> dict:
    """The statistics of one shard of one stage.

    `written`: the columns the stage writes (their numeric values are sketched over
    the output); `seen_scores`: a filter's score columns over every record it saw,
    kept and dropped. With `base` (the input's profile) and `removed` (the dropped
    records), lengths and categories are the base minus the removed records.
    """
    profile: dict = {
        "version": PROFILE_VERSION,
        "rows": table.num_rows,
        "seen": {},
        "columns": {},
        "lengths": {},
        "categorical": {},
    }
    if seen_scores is not None:
        for name in seen_scores.column_names:
            s = sketch(seen_scores.column(name))
            if s is not None:
                profile["seen"][name] = s
    for name in written:
        if name in table.column_names and name not in profile["seen"]:
            s = sketch(table.column(name))
            if s is not None:
                profile["columns"][name] = s
    if base is not None and removed is not None:
        gone = profile_table(removed, [])
        profile["lengths"] = {
            name: {m: subtract_sketch(parts[m], gone["lengths"].get(name, {}).get(m)) for m in parts}
            for name, parts in base["lengths"].items()
        }
        profile["unit"] = base.get("unit")
        profile["size_total"] = base.get("size_total", 0) - gone.get("size_total", 0)
        profile["categorical"] = {
            name: subtract_categorical(cats, gone["categorical"].get(name, {}))
            for name, cats in base["categorical"].items()
        }
        profile["derived"] = True
        return profile
    words_of = {}
    for name in TEXT_COLUMNS:
        if _is_text(table, name):
            col = table.column(name)
            words_of[name] = _word_counts(col)
            profile["lengths"][name] = {"chars": sketch(pc.utf8_length(col)), "words": sketch(words_of[name])}
    unit, measure = _measure(table, words_of)
    profile["unit"] = unit
    if measure is not None:
        profile["size_total"] = int(pc.sum(measure).as_py() or 0)
    for name in CATEGORICAL_COLUMNS:
        if name in table.column_names:
            cats = categorical(table, name, measure)
            if cats:
                profile["categorical"][name] = cats
    return profile


def merge_profiles(profiles: list[dict]) -> dict:
    """Merge shard profiles of one stage into one (sketches stay mergeable)."""
    merged: dict = {
        "rows": 0,
        "seen": {},
        "columns": {},
        "lengths": {},
        "categorical": {},
        "size_total": 0,
        "unit": None,
    }
    for p in profiles:
        merged["rows"] += p.get("rows", 0)
        merged["size_total"] += p.get("size_total", 0)
        merged["unit"] = merged["unit"] or p.get("unit")
        for section in ("seen", "columns"):
            for name, s in p.get(section, {}).items():
                merged[section].setdefault(name, []).append(s)
        for name, parts in p.get("lengths", {}).items():
            slot = merged["lengths"].setdefault(name, {"chars": [], "words": []})
            slot["chars"].append(parts["chars"])
            slot["words"].append(parts["words"])
        for name, cats in p.get("categorical", {}).items():
            merged["categorical"].setdefault(name, []).append(cats)
    for section in ("seen", "columns"):
        merged[section] = {k: merge_sketches(v) for k, v in merged[section].items()}
    merged["lengths"] = {k: {m: merge_sketches(v[m]) for m in v} for k, v in merged["lengths"].items()}
    merged["categorical"] = {k: merge_categorical(v) for k, v in merged["categorical"].items()}
    return merged
