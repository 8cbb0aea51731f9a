"""Final-answer extraction for self-consistency voting.

`extract_answer(text)` looks, in order of how deliberate the marker is, for
`\\boxed{...}` (the last one, nested braces allowed), a GSM8K `#### X` line,
"the (final) answer is X" / "Answer: X", then (unless disabled) the last number
in the text. `normalize_answer` makes equal answers equal strings: numbers
lose thousands separators, currency and percent signs and trailing zeros, and
fractions, decimals and `\\frac{a}{b}` become one exact form (`3/4` and `0.75`
both give "3/4", `1,000.0` gives "1000"); a choice letter, alone or as "(B)",
"B)" or "B.", gives "B"; any other text is compared lowercased without spaces,
`\\left`/`\\right`, `\\!` and a trailing period.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"^\s*####\s*(.+?)\s*$", re.M)
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?:\*\*)?\s*(.+?)(?:\*\*)?\s*(?:$|\n|(?<=[^\d])\.(?:\s|$)|\.$)",
    re.I | re.M,
)
_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?|-?\$?\.\d+")
_CHOICE = re.compile(r"^\(?([A-Ja-j])\)?[.):]?$")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}")
_NUMERIC = re.compile(r"^(-?)(\d+(?:\.\d*)?|\.\d+)(?:/(\d+(?:\.\d*)?))?$")


def _boxed(text: str) -> str | None:
    last = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            last = text[m.end() : i - 1]
    return last


def extract_answer(text: str | None, last_number_fallback: bool = True) -> str | None:
    """The normalised final answer of a response, or None."""
    raw = extract_raw_answer(text, last_number_fallback)
    return normalize_answer(raw) if raw is not None else None


def extract_raw_answer(text: str | None, last_number_fallback: bool = True) -> str | None:
    """The final answer of a response as written (the first marker whose answer
    normalises to something), for equivalence checks that read LaTeX; or None."""
    if not text:
        return None
    candidates = []
    boxed = _boxed(text)
    if boxed is not None:
        candidates.append(boxed)
    gsm = _GSM8K.findall(text)
    if gsm:
        candidates.append(gsm[-1])
    said = _ANSWER_IS.findall(text)
    if said:
        candidates.append(said[-1])
    for cand in candidates:
        if normalize_answer(cand):
            return cand
    if last_number_fallback:
        numbers = _NUMBER.findall(text)
        if numbers and normalize_answer(numbers[-1]):
            return numbers[-1]
    return None


def normalize_answer(answer: str) -> str | None:
    s = answer.strip()
    s = _FRAC.sub(r"(\1)/(\2)", s)
    s = re.sub(r"\\(left|right|!|,|;|quad|displaystyle)", "", s)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.strip().strip("$").strip()
    s = s.rstrip(".").strip()
    if not s:
        return None
    choice = _CHOICE.match(s)
    if choice:
        return choice.group(1).upper()
    number = _as_number(s)
    if number is not None:
        return number
    # A number followed by a unit or words ("18 dollars", "5 apples") votes as the number.
    lead = re.match(r"^(-?\$?\s*[\d,]*\.?\d+(?:\s*/\s*\d+)?%?)\s*[A-Za-z]", s)
    if lead:
        number = _as_number(lead.group(1))
        if number is not None:
            return number
    return re.sub(r"\s+", "", s).lower()


def _as_number(s: str) -> str | None:
    t = s.replace("$", "").replace("%", "").replace(" ", "").replace("(", "").replace(")", "")
    # Thousands separators: only where they group by three ("1,000", not "1,5").
    if "," in t:
        if not re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", t):
            return None
        t = t.replace(",", "")
    m = _NUMERIC.match(t)
    if not m:
        return None
    sign, num, den = m.groups()
    try:
        value = Fraction(num) / (Fraction(den) if den else 1)
    except (ValueError, ZeroDivisionError):
        return None
    if sign:
        value = -value
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
