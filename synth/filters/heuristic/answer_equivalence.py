"""Which final answers of one row's samples are the same answer, for voting.

The hand-written normaliser (answers.py) is exact and fast for plain numbers and
choice letters, but splits equal LaTeX answers (`\\sqrt{2}` and `\\sqrt2`,
`\\frac{\\sqrt{3}}{2}` and `\\frac{1}{2}\\sqrt{3}`, `x=3` and `3`). Hugging Face's
`math-verify` parses both sides into SymPy and compares them; it is what decides
here whenever an answer is not a plain number or a letter (benchmarks/answers.py
measures both). Plain numbers that normalise to one string share a group without
any parsing, which is most votes on GSM8K-style data.
"""

from __future__ import annotations

import re
import threading

from synth.filters.heuristic.answers import normalize_answer

_PLAIN_NUMBER = re.compile(r"-?\d+(?:/\d+)?")
_CHOICE = re.compile(r"[A-J]")


def _timeouts() -> dict:
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    main = threading.current_thread() is threading.main_thread()
    return {"parsing_timeout": 5 if main else None}, {"timeout_seconds": 5 if main else None}


def parse_answer(raw: str):
    """math-verify's parse of an answer as written (inside `$...$`, so bare LaTeX
    such as `\\sqrt{2}` is read); [] when nothing parses."""
    from math_verify import parse

    text = raw.strip()
    if not (text.startswith("$") and text.endswith("$") and len(text) > 1 and not text.startswith("\\$")):
        text = f"${text}$"
    parse_kw, _ = _timeouts()
    try:
        return parse(text, **parse_kw)
    except Exception:  # noqa: BLE001 - an unparseable answer just votes on its own
        return []


def same_answer(a, b) -> bool:
    """Whether two parsed answers are equal by math-verify."""
    from math_verify import verify

    if not a or not b:
        return False
    _, verify_kw = _timeouts()
    try:
        return bool(verify(a, b, **verify_kw))
    except Exception:  # noqa: BLE001
        return False


class _Group:
    __slots__ = ("_parsed", "fast", "key", "raw")

    def __init__(self, key: str, raw: str, fast: bool):
        self.key, self.raw, self.fast, self._parsed = key, raw, fast, None

    @property
    def parsed(self):
        if self._parsed is None:
            self._parsed = parse_answer(self.raw)
        return self._parsed


def answer_keys(raws: list[str | None], method: str = "math_verify") -> list[str | None]:
    """One key per answer (None where there is none); equal answers get equal keys.

    A key is the normalised form of the group's plain number if it has one, else of
    its first answer. `method` `normalize` compares normalised strings only.
    """
    keys: list[_Group | None] = []
    groups: dict[str, _Group] = {}
    for raw in raws:
        norm = normalize_answer(raw) if raw is not None else None
        if norm is None:
            keys.append(None)
            continue
        if norm in groups or method == "normalize":
            keys.append(groups.setdefault(norm, _Group(norm, raw, True)))
            continue
        if _CHOICE.fullmatch(norm):
            groups[norm] = _Group(norm, raw, True)  # letters are never compared as maths
            keys.append(groups[norm])
            continue
        plain = bool(_PLAIN_NUMBER.fullmatch(norm))
        # Two plain numbers are equal exactly when their normal forms are: only
        # groups holding other answers need math-verify.
        distinct = {id(g): g for g in groups.values()}.values()
        others = [g for g in distinct if not g.fast or (not plain and _PLAIN_NUMBER.fullmatch(g.key))]
        found = None
        if others:
            mine = parse_answer(raw)
            found = next((g for g in others if same_answer(g.parsed, mine)), None)
        if found is None:
            groups[norm] = found = _Group(norm, raw, plain)
        else:
            groups[norm] = found  # later spellings of this form join without parsing
            if plain and not _PLAIN_NUMBER.fullmatch(found.key):
                found.key = norm  # `x=3` and `3` vote as "3"
        keys.append(found)
    return [g.key if g is not None else None for g in keys]
