"""Text statistics shared by the heuristic and model-based filters.

Everything here works on plain Python strings with C-level primitives
(`str.split`, `str.count`, compiled regexes) or on whole shards at once with
NumPy, because the filters run on every passage of a crawl.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import chain

import numpy as np

# Languages written without spaces between words: whitespace "words" there are
# whole clauses, so word-count, word-length and word n-gram rules do not apply.
NO_SPACE_LANGUAGES: frozenset[str] = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu", "dz"})

# Gopher's stop-word rule (Rae et al. 2021) lists eight English words; for other
# common languages we use their most frequent function words. A language with no
# list here skips the rule instead of failing it.
DEFAULT_STOP_WORDS: dict[str, list[str]] = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "de": ["der", "die", "das", "und", "ist", "nicht", "zu", "den", "mit", "von", "ein", "sich"],
    "fr": ["le", "la", "les", "de", "et", "est", "que", "un", "une", "des", "du", "dans"],
    "es": ["el", "la", "de", "que", "y", "en", "los", "las", "un", "por", "con", "para"],
    "it": ["il", "la", "di", "che", "e", "è", "un", "per", "non", "con", "del", "una"],
    "nl": ["de", "het", "een", "en", "van", "is", "dat", "niet", "op", "te", "met", "zijn"],
    "pt": ["o", "a", "de", "que", "e", "do", "da", "em", "um", "para", "com", "não"],
}

# The em dash is left out: French and Dutch dialogue lines start with it.
BULLETS = "•●○◦‣▪▫■□➢➤►▶–-*·"
_BULLET_LINE = re.compile(r"^[ \t]*[" + re.escape(BULLETS) + r"]", re.M)
_ELLIPSIS_LINE = re.compile(r"(?:\.\.\.|…)[ \t\r]*$", re.M)
# A whitespace token with no letter in it (digits, symbols, punctuation only).
_NON_ALPHA_TOKEN = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
# Sentence ends: terminal marks, optional closing quotes/brackets, then space or end;
# CJK full-width marks end a sentence without a following space.
_SENTENCE_END = re.compile(r"[.!?।؟]+[\"'”’»)\]]*(?=\s|$)|[。！？]+[\"'”’»)\]」』）]*")

_PUNCT_CHARS = "".join(
    chr(c) for c in range(0x20, 0x3000) if not chr(c).isalnum() and not chr(c).isspace() and chr(c).isprintable()
)
_DELETE_PUNCT = str.maketrans("", "", _PUNCT_CHARS)


def nonblank_lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def paragraphs(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _PARAGRAPH_BREAK.split(text)) if s]


def count_bullet_lines(text: str) -> int:
    return len(_BULLET_LINE.findall(text))


def count_ellipsis_lines(text: str) -> int:
    return len(_ELLIPSIS_LINE.findall(text))


def count_non_alpha_tokens(text: str) -> int:
    return len(_NON_ALPHA_TOKEN.findall(text))


def count_sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(text))


def letters_and_digits_length(words: Sequence[str]) -> int:
    """Characters of the words without punctuation, for the mean word length."""
    return len("".join(words).translate(_DELETE_PUNCT))


@lru_cache(maxsize=64)
def stop_word_pattern(words: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    # callers lowercase the text: cheaper than an IGNORECASE scan
    return re.compile(r"\b(?:" + alternatives + r")\b")


def looks_hard_wrapped(lines: Sequence[str]) -> bool:
    """True for fixed-width text (Gutenberg books, RFCs) where a newline is not a line end.

    Hard-wrapped paragraphs have many lines of similar, moderate length; web text
    has one paragraph per line (long lines) or menus (short lines).
    """
    if len(lines) < 4:
        return False
    lengths = sorted(len(s) for s in lines)
    median = lengths[len(lengths) // 2]
    p90 = lengths[min(len(lengths) - 1, (len(lengths) * 9) // 10)]
    return median >= 40 and p90 <= 80


def duplicate_counts(items: Iterable[str]) -> tuple[int, int, int, int]:
    """(items, duplicate items, chars, duplicate chars); a duplicate repeats an earlier item."""
    seen: set[str] = set()
    n = dup = chars = dup_chars = 0
    for item in items:
        n += 1
        size = len(item)
        chars += size
        if item in seen:
            dup += 1
            dup_chars += size
        else:
            seen.add(item)
    return n, dup, chars, dup_chars


class ShardWords:
    """All whitespace words of a shard as hashed integers, for vectorised n-gram stats.

    Words are hashed once with Python's string hash (consistent within a
    process, which is all one call needs); an n-gram's key is a polynomial hash
    of its words mixed with its document index, so one hash-table pass per n
    serves every document of the shard. An n-gram can only repeat where both of
    its (n-1)-grams repeat, so each n only looks at the survivors of n-1: after
    the first few n almost nothing is left to hash.
    """

    _MULT = np.uint64(0x9E3779B97F4A7C15)
    _DOC_MULT = np.uint64(0xC2B2AE3D27D4EB4F)

    def __init__(self, word_lists: Sequence[Sequence[str]]):
        counts = np.fromiter((len(w) for w in word_lists), dtype=np.int64, count=len(word_lists))
        self.n_docs = len(word_lists)
        self.starts = np.zeros(self.n_docs + 1, dtype=np.int64)
        np.cumsum(counts, out=self.starts[1:])
        self.total = total = int(self.starts[-1])
        flat = list(chain.from_iterable(word_lists))
        self.hashes = np.fromiter(map(hash, flat), dtype=np.int64, count=total).view(np.uint64)
        self.lengths = np.fromiter(map(len, flat), dtype=np.int64, count=total)
        self.doc_of = np.repeat(np.arange(self.n_docs, dtype=np.int64), counts)
        self.doc_end = self.starts[1:][self.doc_of]
        self.char_prefix = np.zeros(total + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.char_prefix[1:])
        self.doc_chars = self.char_prefix[self.starts[1:]] - self.char_prefix[self.starts[:-1]]

    def ngram_stats(self, top_ns: Iterable[int], dup_ns: Iterable[int]) -> dict[tuple[str, int], np.ndarray]:
        """Per-document fractions of word characters, keyed ("top", n) and ("dup", n).

        top: chars covered by the most frequent repeated n-gram (ties: the longest)
        times its count. dup: chars inside any repeat of an n-gram (not its first
        occurrence), overlapping repeats counted once.
        """
        top_ns, dup_ns = set(top_ns), set(dup_ns)
        out: dict[tuple[str, int], np.ndarray] = {}
        for n in top_ns:
            out[("top", n)] = np.zeros(self.n_docs)
        for n in dup_ns:
            out[("dup", n)] = np.zeros(self.n_docs)
        max_n = max(top_ns | dup_ns, default=0)
        if max_n == 0 or self.total == 0:
            return out
        # hash of the n-gram starting at each position, valid at candidate positions only
        ngram = self.hashes.copy()
        candidates = np.arange(self.total, dtype=np.int64)
        repeated = np.zeros(self.total + 1, dtype=bool)
        with np.errstate(over="ignore"):
            for n in range(1, max_n + 1):
                if n > 1:
                    nxt = candidates + 1
                    candidates = candidates[(candidates + n <= self.doc_end[candidates]) & repeated[nxt]]
                    ngram[candidates] = ngram[candidates] * self._MULT + self.hashes[candidates + n - 1]
                if len(candidates) == 0:
                    break
                keys = ngram[candidates] ^ (self.doc_of[candidates].astype(np.uint64) * self._DOC_MULT)
                codes, is_first = _factorize(keys)
                counts = np.bincount(codes)
                multi = counts[codes] >= 2
                repeated[:] = False
                repeated[candidates[multi]] = True
                if n in top_ns:
                    self._top(out[("top", n)], candidates, codes, is_first, counts, n)
                if n in dup_ns:
                    self._dup(out[("dup", n)], candidates[~is_first], n)
                candidates = candidates[multi]
        for key, values in out.items():
            out[key] = safe_divide(values, self.doc_chars)
        return out

    def _top(self, into: np.ndarray, candidates, codes, is_first, counts, n: int) -> None:
        first_pos = candidates[is_first]  # codes number keys in order of first appearance
        keep = counts >= 2
        pos, cnt = first_pos[keep], counts[keep]
        if len(pos) == 0:
            return
        docs = self.doc_of[pos]
        chars = self.char_prefix[pos + n] - self.char_prefix[pos]
        order = np.lexsort((chars, cnt, docs))
        docs_sorted = docs[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = docs_sorted[:-1] != docs_sorted[1:]
        pick = order[last]
        into[docs[pick]] = cnt[pick] * chars[pick]

    def _dup(self, into: np.ndarray, starts: np.ndarray, n: int) -> None:
        if len(starts) == 0:
            return
        size = self.total + 1
        depth = np.bincount(starts, minlength=size) - np.bincount(starts + n, minlength=size)
        covered = np.cumsum(depth[: self.total]) > 0
        into += np.bincount(self.doc_of[covered], weights=self.lengths[covered], minlength=self.n_docs)


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes in order of first appearance and a first-occurrence mask.

    pandas' hash-table factorize is several times faster than the sort behind np.unique.
    """
    import pandas as pd

    codes, _ = pd.factorize(keys)
    seen_before = np.empty(len(codes), dtype=codes.dtype)
    seen_before[0] = -1
    np.maximum.accumulate(codes[:-1], out=seen_before[1:])
    return codes, codes > seen_before


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0."""
    out = np.zeros(len(num), dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out
