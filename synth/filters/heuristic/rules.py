"""Rule filters on responses (stage `rules`): truncation, repetition, garbled
text, format errors, refusals. Each rule is its own drop reason and its measure a
column, so thresholds can be re-tuned on a finished run.

Reads `response_column` (default `response`; a messages column works too: the
last assistant turn is used) and, when present, `finish_reason_column`
(default `finish_reason`; the value "length" means the engine hit max tokens).
Writes `rule_truncated` (null, "max_tokens" or "code_fence"), `rule_repeated_lines`, `rule_repeated_ngrams`,
`rule_non_letter`, `rule_mojibake` (fractions/counts) and `rule_refusal` (the
matched pattern or null).

Refusal patterns are regular expressions in `data/refusals.txt` (or the file
named by `refusal_patterns_file`), plus `extra_refusal_patterns`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Filter, FilterOptions
from synth.filters import turn_text

DEFAULT_REFUSALS = Path(__file__).with_name("data") / "refusals.txt"
_WORD = re.compile(r"\w+")
_FENCED = re.compile(r"```.*?(```|\Z)", re.S)
# UTF-8 read as Latin-1/cp1252: "Ã©", "â€™", "Â ", "ðŸ..." and friends.
_MOJIBAKE = re.compile(r"Ã[\u0080-\u00bf¡-¿]|â€[\u0080-\u00bf™œ˜”“¢¦]|Â[\u00a0-\u00bf ]|ðŸ|ï»¿")
_ONLY_PUNCT = re.compile(r"^[\W_]*$")


def _unclosed_fence(text: str) -> bool:
    fences = sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))
    return fences % 2 == 1


class RulesOptions(FilterOptions):
    response_column: str = "response"
    finish_reason_column: str | None = Field(
        "finish_reason", description="Used when present; 'length' = hit max tokens."
    )
    max_repeated_lines: float = Field(
        0.3, ge=0, le=1, description="Max share of characters in lines that occur more than once."
    )
    min_line_chars: int = Field(12, ge=1, description="Shorter lines (braces, blank) are not counted as repeats.")
    repeated_ngram: int = Field(6, ge=2, description="Word n-gram size for the repetition measure.")
    max_repeated_ngrams: float = Field(0.4, ge=0, le=1, description="Max share of words inside repeated word n-grams.")
    max_non_letter: float = Field(
        0.5, ge=0, le=1, description="Max share of non-letter, non-space characters outside code fences."
    )
    max_replacement_chars: int = Field(0, ge=0, description="U+FFFD characters allowed.")
    max_mojibake: int = Field(1, ge=0, description="Mojibake sequences (UTF-8 decoded as Latin-1) allowed.")
    min_chars: int = Field(1, ge=0)
    refusal_patterns_file: str | None = Field(
        None, description="Regex per line; default synth/filters/heuristic/data/refusals.txt."
    )
    extra_refusal_patterns: list[str] = Field(default_factory=list)
    refusal_head_chars: int = Field(400, ge=1, description="Refusals are looked for in this many leading characters.")


class ResponseRules(Filter):
    type = "rules"
    Options = RulesOptions
    writes = (
        "rule_truncated",
        "rule_repeated_lines",
        "rule_repeated_ngrams",
        "rule_non_letter",
        "rule_mojibake",
        "rule_refusal",
    )

    def __init__(self, options, pipeline=None):
        super().__init__(options, pipeline)
        path = Path(options.refusal_patterns_file) if options.refusal_patterns_file else DEFAULT_REFUSALS
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        patterns = [ln for ln in lines if ln and not ln.startswith("#")] + list(options.extra_refusal_patterns)
        try:
            self.refusals = [re.compile(p, re.I | re.M) for p in patterns]
        except re.error as exc:
            raise ValueError(f"refusal pattern {exc.pattern!r}: {exc}") from None

    def input_columns(self):
        return (self.options.response_column,)

    def column_types(self):
        return {
            "rule_truncated": pa.string(),
            "rule_repeated_lines": pa.float32(),
            "rule_repeated_ngrams": pa.float32(),
            "rule_non_letter": pa.float32(),
            "rule_mojibake": pa.int32(),
            "rule_refusal": pa.string(),
        }

    # -- measures -------------------------------------------------------------------
    def repeated_lines(self, text: str) -> float:
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if len(ln) >= self.options.min_line_chars]
        total = sum(len(ln) for ln in lines)
        if not total:
            return 0.0
        counts = Counter(lines)
        return sum(len(ln) * (c - 1) for ln, c in counts.items() if c > 1) / total

    def repeated_ngrams(self, text: str) -> float:
        words = _WORD.findall(text.lower())
        n = self.options.repeated_ngram
        if len(words) < 2 * n:
            return 0.0
        seen: set[tuple] = set()
        covered = [False] * len(words)
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                covered[i : i + n] = [True] * n
            else:
                seen.add(gram)
        return sum(covered) / len(words)

    @staticmethod
    def non_letter(text: str) -> float:
        prose = _FENCED.sub(" ", text)
        chars = [c for c in prose if not c.isspace()]
        if not chars:
            return 0.0
        return sum(1 for c in chars if not c.isalpha()) / len(chars)

    def refusal(self, text: str) -> str | None:
        head = text[: self.options.refusal_head_chars]
        for pattern in self.refusals:
            if pattern.search(head):
                return pattern.pattern
        return None

    def score(self, table, shard):
        col = table.column(self.options.response_column).to_pylist()
        finish_col = self.options.finish_reason_column
        finishes = (
            table.column(finish_col).to_pylist()
            if finish_col and finish_col in table.column_names
            else [None] * table.num_rows
        )
        out = {name: [] for name in self.writes}
        for value, finish in zip(col, finishes):
            text = turn_text(value) or ""
            truncated = "max_tokens" if finish == "length" else ("code_fence" if _unclosed_fence(text) else None)
            out["rule_truncated"].append(truncated)
            out["rule_repeated_lines"].append(self.repeated_lines(text))
            out["rule_repeated_ngrams"].append(self.repeated_ngrams(text))
            out["rule_non_letter"].append(self.non_letter(text))
            out["rule_mojibake"].append(len(_MOJIBAKE.findall(text)))
            out["rule_refusal"].append(self.refusal(text))
        return out

    def decide(self, row):
        o = self.options
        text = turn_text(row.get(o.response_column)) or ""
        if len(text.strip()) < max(o.min_chars, 1):
            return "empty_response"
        if _ONLY_PUNCT.match(text):
            return "only_punctuation"
        if row["rule_truncated"]:
            return f"truncated_{row['rule_truncated']}"
        if row["rule_refusal"]:
            return "refusal"
        if text.count("\ufffd") > o.max_replacement_chars:
            return "garbled_replacement_chars"
        if row["rule_mojibake"] > o.max_mojibake:
            return "garbled_mojibake"
        if row["rule_non_letter"] > o.max_non_letter:
            return "garbled_non_letter"
        if row["rule_repeated_lines"] > o.max_repeated_lines:
            return "repeated_lines"
        if row["rule_repeated_ngrams"] > o.max_repeated_ngrams:
            return "repeated_ngrams"
        return None
