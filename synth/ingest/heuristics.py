"""Rule-based quality filters in the style of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020).

Each computed statistic is kept as a score column, so a team can re-tune a
threshold by re-reading the columns instead of recomputing; each rule that
fails is its own drop reason. Defaults are the published thresholds.

Language awareness: when the table has a language column (from `langid`), each
row is judged by its language's rules: words come from a segmenter for languages
written without spaces (jieba via rjieba for Chinese, fugashi for Japanese: see
`synth.ingest.segment`), the stop-word list and thresholds come from
`languages` (default: FineWeb-2's published per-language values in
`data/language_rules.yaml`). No-space languages without a segmenter skip the
word rules (their scores are null). Without the column, `default_language` applies.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import yaml
from pydantic import Field, ValidationError

from synth.core.stage import Filter, FilterOptions, Shard
from synth.ingest import segment
from synth.ingest import textstats as ts

LANGUAGE_RULES_FILE = Path(__file__).parent / "data" / "language_rules.yaml"


@lru_cache(maxsize=1)
def language_rules() -> dict[str, dict]:
    """The built-in per-language thresholds: {language: {filter type: {option: value}, source}}."""
    return yaml.safe_load(LANGUAGE_RULES_FILE.read_text(encoding="utf-8")) or {}


class _TextFilterOptions(FilterOptions):
    text_column: str = "text"
    # Read when present (written by `langid`); not required.
    language_column: str = "language"
    default_language: str = "en"
    no_space_languages: list[str] = Field(default_factory=lambda: sorted(ts.NO_SPACE_LANGUAGES))
    # Segment no-space languages that have a segmenter (zh, ja) instead of skipping
    # their word rules.
    segment_words: bool = True
    # language -> options that differ for it (e.g. {zh: {min_mean_word_length: 1}});
    # None = the built-in table (data/language_rules.yaml, FineWeb-2's values).
    languages: dict[str, dict[str, Any]] | None = None


class _TextFilter(Filter):
    Options: ClassVar[type[FilterOptions]] = _TextFilterOptions
    score_types: ClassVar[dict[str, pa.DataType]] = {}

    def input_columns(self):
        return (self.options.text_column,)

    def decide_columns(self):
        return (self.options.language_column,) if self.options.language_column else ()

    def row_options(self, row: dict):
        """The options that judge this row: its language's overrides on top of the stage's."""
        lang = row.get(self.options.language_column) if self.options.language_column else None
        return self.options_for(lang or self.options.default_language)

    def options_for(self, language: str):
        cache = self.__dict__.setdefault("_per_language", {})
        if language not in cache:
            cache[language] = self._build_language_options(language)
        return cache[language]

    def _build_language_options(self, language: str):
        o = self.options
        table = (
            o.languages if o.languages is not None else {k: v.get(self.type, {}) for k, v in language_rules().items()}
        )
        overrides = dict(table.get(language) or {})
        if not overrides:
            return o
        if isinstance(overrides.get("stop_words"), list):
            overrides["stop_words"] = {**getattr(o, "stop_words", {}), language: overrides["stop_words"]}
        merged = {**o.model_dump(), **overrides, "languages": None}
        try:
            return type(o).model_validate(merged)
        except ValidationError as e:
            where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"{self.type}: languages.{language}: {where}") from None

    def segmented(self, language: str) -> bool:
        return self.options.segment_words and segment.can_segment(language)

    def has_words(self, language: str) -> bool:
        return language not in set(self.options.no_space_languages) or self.segmented(language)

    def output_columns(self):
        return tuple(self.column_types())

    def column_types(self) -> dict[str, pa.DataType]:
        return dict(self.score_types)

    def _texts_and_languages(self, table: pa.Table) -> tuple[list[str], list[str]]:
        texts = [t or "" for t in table.column(self.options.text_column).to_pylist()]
        opts = self.options
        if opts.language_column and opts.language_column in table.column_names:
            languages = [lang or opts.default_language for lang in table.column(opts.language_column).to_pylist()]
        else:
            languages = [opts.default_language] * len(texts)
        return texts, languages


def _over(value, limit) -> bool:
    return value is not None and limit is not None and value > limit


def _append_word_and_line_ratios(cols: dict[str, list], text: str, n_words: int, word_chars) -> None:
    """Gopher's per-word and per-line ratios, however the words were found (whitespace or a
    segmenter). `word_chars()` gives the characters counted for mean word length; with no
    words (or words that do not count, as in unsegmented scripts) the per-word ratios are null."""
    if n_words:
        cols["gopher_mean_word_length"].append(word_chars() / n_words)
        cols["gopher_hash_ratio"].append(text.count("#") / n_words)
        cols["gopher_ellipsis_ratio"].append((text.count("...") + text.count("…")) / n_words)
    else:
        cols["gopher_mean_word_length"].append(None)
        cols["gopher_hash_ratio"].append(None)
        cols["gopher_ellipsis_ratio"].append(None)
    lines = max(1, sum(1 for line in text.split("\n") if line.strip()))
    cols["gopher_bullet_lines_ratio"].append(ts.count_bullet_lines(text) / lines)
    cols["gopher_ellipsis_lines_ratio"].append(ts.count_ellipsis_lines(text) / lines)


def _under(value, limit) -> bool:
    return value is not None and limit is not None and value < limit


# ---------------------------------------------------------------------------
class GopherQualityOptions(_TextFilterOptions):
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    # hash symbols and ellipses, each per word
    max_hash_ratio: float | None = 0.1
    max_ellipsis_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    # language -> stop words; a language missing here skips the stop-word rule
    stop_words: dict[str, list[str]] = Field(default_factory=lambda: dict(ts.DEFAULT_STOP_WORDS))


class GopherQualityFilter(_TextFilter):
    """Gopher's document quality rules: length, word shape, symbols, bullets, stop words."""

    type = "gopher_quality"
    Options = GopherQualityOptions
    score_types = {
        "gopher_words": pa.int64(),
        "gopher_mean_word_length": pa.float32(),
        "gopher_hash_ratio": pa.float32(),
        "gopher_ellipsis_ratio": pa.float32(),
        "gopher_bullet_lines_ratio": pa.float32(),
        "gopher_ellipsis_lines_ratio": pa.float32(),
        "gopher_alpha_words_ratio": pa.float32(),
        "gopher_stop_words": pa.int32(),
    }

    def score(self, table: pa.Table, shard: Shard) -> dict:
        texts, languages = self._texts_and_languages(table)
        no_space = set(self.options.no_space_languages)
        cols: dict[str, list] = {name: [] for name in self.score_types}
        for text, lang in zip(texts, languages):
            if self.segmented(lang):
                self._score_segmented(text, lang, cols)
                continue
            stop_lists = self.options_for(lang).stop_words
            words = text.split()
            n_words = len(words)
            spaced = lang not in no_space
            cols["gopher_words"].append(n_words if spaced else None)
            _append_word_and_line_ratios(
                cols, text, n_words if spaced else 0, lambda words=words: ts.letters_and_digits_length(words)
            )
            cols["gopher_alpha_words_ratio"].append(1.0 - ts.count_non_alpha_tokens(text) / n_words if n_words else 0.0)
            stops = stop_lists.get(lang) if spaced else None
            if stops:
                pattern = ts.stop_word_pattern(tuple(w.lower() for w in stops))
                cols["gopher_stop_words"].append(len(pattern.findall(text.lower())))
            else:
                cols["gopher_stop_words"].append(None)
        return cols

    def _score_segmented(self, text: str, lang: str, cols: dict[str, list]) -> None:
        """Gopher's statistics on segmenter tokens, as FineWeb-2 computes them for
        such languages: word count and length over tokens with a letter or digit,
        the alphabetic share and stop words over all tokens."""
        tokens = segment.tokens(text, lang)
        words = [t for t in tokens if segment._WORDLIKE.search(t)]
        n_words = len(words)
        cols["gopher_words"].append(n_words)
        _append_word_and_line_ratios(cols, text, n_words, lambda: sum(map(len, words)))
        alpha = sum(1 for t in tokens if any(c.isalpha() for c in t))
        cols["gopher_alpha_words_ratio"].append(alpha / len(tokens) if tokens else 0.0)
        stops = self.options_for(lang).stop_words.get(lang)
        if stops:
            stop_set = frozenset(w.lower() for w in stops)
            cols["gopher_stop_words"].append(sum(1 for t in tokens if t.lower() in stop_set))
        else:
            cols["gopher_stop_words"].append(None)

    def decide(self, row: dict) -> str | None:
        o = self.row_options(row)
        words = row["gopher_words"]
        if _under(words, o.min_words):
            return "gopher_too_few_words"
        if _over(words, o.max_words):
            return "gopher_too_many_words"
        mwl = row["gopher_mean_word_length"]
        if _under(mwl, o.min_mean_word_length) or _over(mwl, o.max_mean_word_length):
            return "gopher_mean_word_length"
        if _over(row["gopher_hash_ratio"], o.max_hash_ratio):
            return "gopher_hash_ratio"
        if _over(row["gopher_ellipsis_ratio"], o.max_ellipsis_ratio):
            return "gopher_ellipsis_ratio"
        if _over(row["gopher_bullet_lines_ratio"], o.max_bullet_lines_ratio):
            return "gopher_bullet_lines"
        if _over(row["gopher_ellipsis_lines_ratio"], o.max_ellipsis_lines_ratio):
            return "gopher_ellipsis_lines"
        if _under(row["gopher_alpha_words_ratio"], o.min_alpha_words_ratio):
            return "gopher_alpha_words"
        if _under(row["gopher_stop_words"], o.min_stop_words):
            return "gopher_stop_words"
        return None


# ---------------------------------------------------------------------------
class GopherRepetitionOptions(_TextFilterOptions):
    max_dup_line_frac: float | None = 0.30
    max_dup_para_frac: float | None = 0.30
    max_dup_line_char_frac: float | None = 0.20
    max_dup_para_char_frac: float | None = 0.20
    # n -> max fraction of word chars in the most frequent repeated n-gram
    max_top_ngram_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # n -> max fraction of word chars inside repeated n-grams
    max_dup_ngram_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


class GopherRepetitionFilter(_TextFilter):
    """Gopher's repetition rules: duplicate lines and paragraphs, repeated word n-grams.

    The n-gram statistics are computed for the whole shard at once (hashed
    words, one hash-table pass per n), which is where the speed comes from.
    """

    type = "gopher_repetition"
    Options = GopherRepetitionOptions
    _LINE_COLUMNS = {
        "gopher_dup_line_frac": pa.float32(),
        "gopher_dup_para_frac": pa.float32(),
        "gopher_dup_line_char_frac": pa.float32(),
        "gopher_dup_para_char_frac": pa.float32(),
    }

    def column_types(self) -> dict[str, pa.DataType]:
        types = dict(self._LINE_COLUMNS)
        for n in sorted(self.options.max_top_ngram_frac):
            types[f"gopher_top_{n}gram_frac"] = pa.float32()
        for n in sorted(self.options.max_dup_ngram_frac):
            types[f"gopher_dup_{n}gram_frac"] = pa.float32()
        return types

    def score(self, table: pa.Table, shard: Shard) -> dict:
        texts, languages = self._texts_and_languages(table)
        cols: dict[str, list] = {name: [] for name in self._LINE_COLUMNS}
        for text in texts:
            n, dup, chars, dup_chars = ts.duplicate_counts(ts.nonblank_lines(text))
            cols["gopher_dup_line_frac"].append(dup / n if n else 0.0)
            cols["gopher_dup_line_char_frac"].append(dup_chars / chars if chars else 0.0)
            n, dup, chars, dup_chars = ts.duplicate_counts(ts.paragraphs(text))
            cols["gopher_dup_para_frac"].append(dup / n if n else 0.0)
            cols["gopher_dup_para_char_frac"].append(dup_chars / chars if chars else 0.0)

        spaced = [self.has_words(lang) for lang in languages]
        words = ts.ShardWords(
            [
                (segment.words(t, lang) if self.segmented(lang) else t.split()) if ok else ()
                for t, lang, ok in zip(texts, languages, spaced)
            ]
        )
        stats = words.ngram_stats(self.options.max_top_ngram_frac, self.options.max_dup_ngram_frac)
        for n in sorted(self.options.max_top_ngram_frac):
            cols[f"gopher_top_{n}gram_frac"] = _null_where_not(stats[("top", n)], spaced)
        for n in sorted(self.options.max_dup_ngram_frac):
            cols[f"gopher_dup_{n}gram_frac"] = _null_where_not(stats[("dup", n)], spaced)
        return cols

    def decide(self, row: dict) -> str | None:
        o = self.row_options(row)
        if _over(row["gopher_dup_line_frac"], o.max_dup_line_frac):
            return "gopher_dup_line_frac"
        if _over(row["gopher_dup_para_frac"], o.max_dup_para_frac):
            return "gopher_dup_para_frac"
        if _over(row["gopher_dup_line_char_frac"], o.max_dup_line_char_frac):
            return "gopher_dup_line_char_frac"
        if _over(row["gopher_dup_para_char_frac"], o.max_dup_para_char_frac):
            return "gopher_dup_para_char_frac"
        for n, limit in sorted(o.max_top_ngram_frac.items()):
            if _over(row.get(f"gopher_top_{n}gram_frac"), limit):
                return f"gopher_top_{n}gram"
        for n, limit in sorted(o.max_dup_ngram_frac.items()):
            if _over(row.get(f"gopher_dup_{n}gram_frac"), limit):
                return f"gopher_dup_{n}gram"
        return None


def _null_where_not(values, mask) -> list:
    return [float(v) if ok else None for v, ok in zip(values.tolist(), mask)]


# ---------------------------------------------------------------------------
DEFAULT_POLICY_PHRASES = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
]


class C4QualityOptions(_TextFilterOptions):
    # A line is a newline-separated line ("line"), a blank-line separated block
    # ("paragraph", for hard-wrapped books), or chosen per document ("auto").
    unit: Literal["auto", "line", "paragraph"] = "auto"
    terminal_punctuation: str = ".!?\"'”’»。！？।؟"
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    min_sentences: int | None = 5
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    javascript_lines: bool = True
    policy_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_POLICY_PHRASES))
    # C4 removes the failing lines from the text; off by default so the filter
    # only decides (the counts say what would be removed).
    remove_lines: bool = False


class C4QualityFilter(_TextFilter):
    """C4's page rules: keep lines that end in terminal punctuation and are not
    javascript/policy notices; drop pages with lorem ipsum, curly brackets or too
    few sentences left."""

    type = "c4_quality"
    Options = C4QualityOptions
    score_types = {
        "c4_lines": pa.int32(),
        "c4_lines_kept": pa.int32(),
        "c4_no_terminal_punct_lines": pa.int32(),
        "c4_short_lines": pa.int32(),
        "c4_long_word_lines": pa.int32(),
        "c4_javascript_lines": pa.int32(),
        "c4_policy_lines": pa.int32(),
        "c4_sentences": pa.int32(),
        "c4_lorem_ipsum": pa.bool_(),
        "c4_curly_bracket": pa.bool_(),
    }

    def output_columns(self):
        cols = tuple(self.score_types)
        return cols + (self.options.text_column,) if self.options.remove_lines else cols

    def column_types(self) -> dict[str, pa.DataType]:
        types = dict(self.score_types)
        if self.options.remove_lines:
            types[self.options.text_column] = pa.string()
        return types

    def score(self, table: pa.Table, shard: Shard) -> dict:
        texts, languages = self._texts_and_languages(table)
        cols: dict[str, list] = {name: [] for name in self.score_types}
        cleaned: list[str] = []
        for text, lang in zip(texts, languages):
            stats, kept = self._page(text, self.has_words(lang), lang)
            for name, value in stats.items():
                cols[name].append(value)
            cleaned.append(kept)
        if self.options.remove_lines:
            cols[self.options.text_column] = cleaned
        return cols

    def _page(self, text: str, spaced: bool, language: str | None = None) -> tuple[dict, str]:
        """`spaced`: the language has words (written with spaces, or segmented)."""
        o = self.options_for(language) if language else self.options
        segmented = language is not None and self.segmented(language)
        lower = text.lower()
        lines = ts.nonblank_lines(text)
        unit = o.unit
        if unit == "auto":
            unit = "paragraph" if ts.looks_hard_wrapped(lines) else "line"
        if unit == "paragraph":
            blocks = ts.paragraphs(text)
            units = [" ".join(b.split()) for b in blocks]
            joiner = "\n\n"
        else:
            blocks = units = lines
            joiner = "\n"
        terminal = tuple(o.terminal_punctuation)
        policy = [p.lower() for p in o.policy_phrases]
        counts = {"no_punct": 0, "short": 0, "long_word": 0, "js": 0, "policy": 0}
        kept_blocks: list[str] = []
        kept_units: list[str] = []
        for block, line in zip(blocks, units):
            line_lower = line.lower()
            if o.javascript_lines and "javascript" in line_lower:
                counts["js"] += 1
                continue
            if policy and any(p in line_lower for p in policy):
                counts["policy"] += 1
                continue
            if not line.endswith(terminal):
                counts["no_punct"] += 1
                continue
            if spaced:
                words = segment.words(line, language) if segmented else line.split()
                if o.min_words_per_line is not None and len(words) < o.min_words_per_line:
                    counts["short"] += 1
                    continue
                if o.max_word_length is not None and any(len(w) > o.max_word_length for w in words):
                    counts["long_word"] += 1
                    continue
            kept_blocks.append(block)
            kept_units.append(line)
        stats = {
            "c4_lines": len(units),
            "c4_lines_kept": len(kept_units),
            "c4_no_terminal_punct_lines": counts["no_punct"],
            "c4_short_lines": counts["short"],
            "c4_long_word_lines": counts["long_word"],
            "c4_javascript_lines": counts["js"],
            "c4_policy_lines": counts["policy"],
            "c4_sentences": sum(ts.count_sentences(u) for u in kept_units),
            "c4_lorem_ipsum": "lorem ipsum" in lower,
            "c4_curly_bracket": "{" in text,
        }
        return stats, joiner.join(kept_blocks)

    def decide(self, row: dict) -> str | None:
        o = self.row_options(row)
        if o.drop_lorem_ipsum and row["c4_lorem_ipsum"]:
            return "c4_lorem_ipsum"
        if o.drop_curly_bracket and row["c4_curly_bracket"]:
            return "c4_curly_bracket"
        if _under(row["c4_sentences"], o.min_sentences):
            return "c4_too_few_sentences"
        return None


# ---------------------------------------------------------------------------
class C4BadWordsOptions(_TextFilterOptions):
    # Drop a page with more than this many bad-word hits (C4: any hit drops it).
    max_bad_words: int = Field(0, ge=0)
    # Lists applied to every page whatever its language: spam pages mix languages
    # (an English page under a Chinese adult title), so a Chinese-English team
    # sets [en, zh].
    also_languages: list[str] = Field(default_factory=list)
    # Further columns searched when present (e.g. title).
    also_columns: list[str] = Field(default_factory=list)
    # language -> the team's own words, added to the shipped lists
    words: dict[str, list[str]] = Field(default_factory=dict)
    # Use the lists that ship with badwords-py (and synth's Chinese list).
    shipped_lists: bool = True


class C4BadWordsFilter(_TextFilter):
    """C4's bad-words rule (Raffel et al. 2020): drop a page that contains a word of
    the language's bad-word list. Lists are the ones `badwords-py` ships (LDNOOBW
    and washyourmouthoutwithsoap, 25 languages) plus synth's own Chinese list
    (badwords-py has none); words match whole words in spaced languages and as
    substrings in languages written without spaces. A language with no list
    gets a null score and is kept."""

    type = "c4_badwords"
    Options = C4BadWordsOptions
    score_types = {"c4_badwords": pa.int32(), "c4_badwords_found": pa.string()}

    def score(self, table: pa.Table, shard: Shard) -> dict:
        from synth.ingest import badwords

        texts, languages = self._texts_and_languages(table)
        o = self.options
        extra = [table.column(c).to_pylist() for c in o.also_columns if c in table.column_names]
        no_space = set(o.no_space_languages)
        counts: list[int | None] = []
        found: list[str | None] = []
        for i, (text, lang) in enumerate(zip(texts, languages)):
            haystack = "\n".join([text, *(str(col[i]) for col in extra if col[i])]).lower()
            total, hits, any_list = 0, [], False
            for code in dict.fromkeys([lang, *o.also_languages]):
                pattern = badwords.pattern(code, code in no_space, tuple(o.words.get(code, ())), o.shipped_lists)
                if pattern is None:
                    continue
                any_list = True
                matches = pattern.findall(haystack)
                total += len(matches)
                hits.extend(matches)
            counts.append(total if any_list else None)
            found.append(", ".join(list(dict.fromkeys(hits))[:5]) if hits else None)
        return {"c4_badwords": counts, "c4_badwords_found": found}

    def decide(self, row: dict) -> str | None:
        if _over(row["c4_badwords"], self.options.max_bad_words):
            return "c4_badwords"
        return None
