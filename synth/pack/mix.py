"""Mixture by tokens: mix.yaml -> how many times each record is written.

    by: source            # or domain, or kind: what the weights name
    weights: {web-synthetic: 0.5, books: 0.2, tool_use: 0.3}
    budget_tokens: 2000000   # optional; default: the largest mix that repeats nothing
    max_repeats: 1           # how many epochs of one group an up-sampled mix may take

Each group g gets a ratio q_g = target tokens / available tokens; a record is written
floor(q_g) times plus once more when a seeded hash of its id falls below the fraction,
so the decision is per record, streaming and deterministic (no global shuffle), and
the tokens written land within a few documents of the target. The actual mix is
measured after writing and reported beside the target.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class MixError(ValueError):
    pass


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Literal["source", "domain", "kind"] = Field("source", description="What the weights name.")
    weights: dict[str, float] = Field(..., min_length=1, description="Relative token share per group.")
    budget_tokens: int | None = Field(
        None, gt=0, description="Total tokens to write (default: all the data the weights allow)."
    )
    max_repeats: float = Field(
        1.0, ge=1.0, description="Most times one group's data may be repeated to reach its share."
    )


def load_mix(path: str | Path) -> MixConfig:
    p = Path(path)
    if not p.is_file():
        raise MixError(f"--mix {path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MixError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    try:
        cfg = MixConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise MixError(
            f"{path}: field {field}: {err['msg']} (allowed keys: by, weights, budget_tokens, max_repeats)"
        ) from None
    bad = {k: v for k, v in cfg.weights.items() if not (v >= 0 and math.isfinite(v))}
    if bad or sum(cfg.weights.values()) <= 0:
        raise MixError(f"{path}: field weights: weights must be non-negative and not all zero")
    return cfg


def group_of(by: str, source: str, domain: str, kind: str) -> str:
    return {"source": source, "domain": domain, "kind": kind}[by]


def plan_ratios(
    cfg: MixConfig | None, available: dict[str, int], label: str = "--mix"
) -> tuple[dict[str, float], dict[str, int]]:
    """Ratio per group and target tokens per group. Groups the weights leave out get 0."""
    if cfg is None:
        return {g: 1.0 for g in available}, dict(available)
    missing = [g for g in cfg.weights if g not in available]
    if missing:
        have = ", ".join(sorted(available)) or "none"
        raise MixError(f"{label}: weights name {cfg.by} {missing[0]!r}, which is not in the inputs (present: {have})")
    total_w = sum(cfg.weights.values())
    shares = {g: w / total_w for g, w in cfg.weights.items() if w > 0}
    empty = [g for g in shares if available[g] == 0]
    if empty:
        raise MixError(f"{label}: {cfg.by} {empty[0]!r} has weight but no tokens (all its records were skipped)")
    budget = min(available[g] / s for g, s in shares.items()) if cfg.budget_tokens is None else float(cfg.budget_tokens)
    ratios = {g: 0.0 for g in available}
    targets = {g: 0 for g in available}
    for g, s in shares.items():
        want = s * budget
        q = want / available[g]
        if q > cfg.max_repeats + 1e-9:
            raise MixError(
                f"{label}: budget_tokens {int(budget):,} needs {int(want):,} tokens of {cfg.by} {g!r}, "
                f"which has {available[g]:,} (max_repeats {cfg.max_repeats:g}): lower the budget or raise max_repeats"
            )
        ratios[g] = q
        targets[g] = round(want)
    return ratios, targets


def repeats_for(record_id: str, source: str, ratio: float, seed: int) -> int:
    whole = math.floor(ratio)
    frac = ratio - whole
    if frac <= 0:
        return whole
    h = hashlib.blake2b(f"{seed}\x00{source}\x00{record_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "little") / 2**64
    return whole + (1 if u < frac else 0)
