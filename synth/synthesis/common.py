"""Pieces the synthesis stages share: the instruction schema, text checks."""

from __future__ import annotations

import re

import pyarrow as pa

# Columns every instruction record carries from `instruct` on.
INSTRUCTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("task_type", pa.string()),
        ("domain", pa.string()),
        ("source_id", pa.string()),
        ("source_url", pa.string()),
        ("source_title", pa.string()),
        ("source_path", pa.string()),
        ("evolution", pa.list_(pa.string())),
        ("provenance", pa.string()),
        # the source passage's language (from `langid`), kept through every later stage
        ("language", pa.string()),
    ]
)

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_overlap(text: str, source: str, n: int = 8) -> float:
    """Share of `text`'s word n-grams that also occur in `source` (copy detection)."""
    tw, sw = words(text), words(source)
    if len(tw) < n:
        joined = " ".join(tw)
        return 1.0 if joined and joined in " ".join(sw) else 0.0
    grams = {tuple(tw[i : i + n]) for i in range(len(tw) - n + 1)}
    source_grams = {tuple(sw[i : i + n]) for i in range(len(sw) - n + 1)}
    return len(grams & source_grams) / len(grams)
