"""Settings of a knowledge-graph walk, shared by the CLI, the stage and the benchmark."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kg.query import PATTERNS


class WalkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    patterns: dict[str, float] = Field(
        default_factory=lambda: {p: 1.0 for p in PATTERNS},
        description="Relative share of each query structure (1p, 2p, ... pni).",
    )
    max_answers: int = Field(10, ge=1, le=1000, description="Largest answer set a question may have.")
    max_intermediate: int = Field(30, ge=1, le=10000, description="Largest set any step may produce.")
    allow_inverse: bool = Field(True, description="Walk relations backwards too (inverse tools).")
    query_attempts: int = Field(100, ge=1, le=10000, description="Groundings tried per sample before dropping it.")
    distractors: tuple[int, int] = Field((2, 6), description="Range of extra, unneeded tools offered.")
    error_share: float = Field(0.15, ge=0, le=1, description="Share with a wrong call, its error and the fix.")
    irrelevance_share: float = Field(0.05, ge=0, le=1, description="Share asking what no offered tool can answer.")
    lookup_share: float = Field(0.25, ge=0, le=1, description="Share that first resolves anchors with lookup_entity.")
    verbalizer: Literal["template", "llm"] = "template"
    llm_model: str | None = Field(None, description="Model name in the models config (llm verbaliser).")
    llm_retries: int = Field(2, ge=0, le=10)
    back_translate: bool = Field(
        True,
        description="LLM verbaliser: keep a paraphrase only if the model, asked "
        "for its query tree, gives back one with the same answer set.",
    )
    allow_trivial: bool = Field(
        False,
        description="Keep queries whose answer holds an anchor or that go along "
        "a relation and straight back (rejected and re-sampled by default).",
    )
    probe_attempts: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Groundings tried, once per run, before a "
        "pattern is declared impossible on this graph and its share redistributed.",
    )
    eval_split: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of samples (and of anchor entities) held out "
        "as an evaluation split that shares no anchor with training samples.",
    )
    eval_relations: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of relations also held out: training "
        "samples never use them, evaluation samples use at least one.",
    )

    @field_validator("patterns")
    @classmethod
    def _known_patterns(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(PATTERNS))
        if unknown:
            raise ValueError(f"unknown pattern(s) {unknown}; allowed: {', '.join(PATTERNS)}")
        if not value or sum(value.values()) <= 0 or any(v < 0 for v in value.values()):
            raise ValueError("pattern shares must be non-negative with a positive sum")
        return value

    @field_validator("distractors")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if lo < 0 or hi < lo:
            raise ValueError("distractors must be (low, high) with 0 <= low <= high")
        return value


def parse_patterns(text: str | None) -> dict[str, float] | None:
    """`1p,2i` (equal shares) or `1p:2,2i:1` (weighted) from the command line."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition(":")
        out[name.strip()] = float(weight) if weight else 1.0
    return out
