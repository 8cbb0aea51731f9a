"""Cheap stages for audit tests and the audit benchmark: synthetic text with
language/domain/kind columns, and two threshold filters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from synth.core.records import content_id
from synth.core.stage import Filter, FilterOptions, SourceStage, Stage, StageOptions

LANGS = ("en", "fr", "de", "sw")
DOMAINS = ("math", "code", "history")
KINDS = ("qa", "dialogue")
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "42", "7", "zeta")


class TextOptions(StageOptions):
    per_shard: int = 200
    shards: int = 3
    variant: int = 0  # changes a few records, for comparisons between runs


class SyntheticText(SourceStage):
    type = "toy_text"
    Options = TextOptions
    writes = ("id", "text", "language", "domain", "kind")

    def list_shards(self, inputs):
        return [{"shard": i} for i in range(self.options.shards)]

    def read(self, spec, shard):
        n = self.options.per_shard
        start = spec["shard"] * n
        rng = np.random.default_rng(spec["shard"])
        lengths = rng.integers(1, 60, n)
        picks = rng.integers(0, len(WORDS), int(lengths.sum()))
        texts, pos = [], 0
        for k in lengths.tolist():
            texts.append(" ".join(WORDS[j] for j in picks[pos : pos + k].tolist()))
            pos += k
        ids = [content_id("toy", start + i) for i in range(n)]
        return pa.table(
            {
                "id": ids,
                "text": texts,
                "language": [LANGS[(start + i) % len(LANGS)] for i in range(n)],
                "domain": [DOMAINS[(start + i + self.options.variant) % len(DOMAINS)] for i in range(n)],
                "kind": [KINDS[(start + i) % 2] for i in range(n)],
            }
        )

    def schema(self):
        return pa.schema([(c, pa.string()) for c in self.writes])


class WordsOptions(FilterOptions):
    min_words: int = Field(10, ge=0, description="Fewer words than this: dropped.")


class MinWords(Filter):
    type = "toy_min_words"
    Options = WordsOptions
    reads = ("text",)
    writes = ("toy_words",)

    def column_types(self):
        return {"toy_words": pa.int32()}

    def score(self, table, shard):
        import pyarrow.compute as pc

        return {"toy_words": pc.list_value_length(pc.utf8_split_whitespace(table.column("text"))).cast(pa.int32())}

    def decide(self, row):
        return "too_few_words" if row["toy_words"] < self.options.min_words else None


class DigitsOptions(FilterOptions):
    max_digit_frac: float = Field(0.3, ge=0, le=1, description="Share of digit characters allowed.")


class MaxDigits(Filter):
    type = "toy_max_digits"
    Options = DigitsOptions
    reads = ("text",)
    writes = ("toy_digit_frac",)

    def column_types(self):
        return {"toy_digit_frac": pa.float32()}

    def score(self, table, shard):
        import pyarrow.compute as pc

        text = table.column("text")
        digits = pc.count_substring_regex(text, r"\d")
        length = pc.max_element_wise(pc.utf8_length(text), 1)
        return {
            "toy_digit_frac": pc.divide(pc.cast(digits, pa.float64()), pc.cast(length, pa.float64())).cast(pa.float32())
        }

    def decide(self, row):
        return "too_many_digits" if row["toy_digit_frac"] > self.options.max_digit_frac else None


class GradeOptions(StageOptions):
    min_grade: int = Field(3, ge=1, le=5)


class GradeLikeCritique(Stage):
    """Like the LLM critique: not a `Filter`; writes a grade and drops below `min_grade`
    through `Shard.drop` with the grade among the scores."""

    type = "toy_grade"
    Options = GradeOptions
    reads = ("text",)
    writes = ("toy_grade",)

    def process(self, table, shard):
        keep, grades = [], []
        for row in table.to_pylist():
            grade = 1 + len(row["text"]) % 5
            if grade < self.options.min_grade:
                shard.drop(row, "grade_below_min", {"toy_grade": grade, "rationale": "short " * 30})
                continue
            keep.append(row)
            grades.append(grade)
        out = pa.Table.from_pylist(keep, schema=table.schema) if keep else table.slice(0, 0)
        return out.append_column("toy_grade", pa.array(grades, pa.int64()))
