"""Which text a dedup stage looks at, and how it is normalised before hashing.

Dedup runs on passages first, and later on instructions and responses, which
sit in other columns (`instruction`) or inside nested values (`messages`, a list
of {role, content}, stored either as Arrow lists of structs or, following
the synth convention for nested values that vary per row, as JSON strings). A small path
language picks the text:

    field: "-1.content"               the last message's content
    field: "[role=user].content"      every user turn, joined by newlines
    field: "*.content"                every message
    field: "meta.title"               a key inside a struct or JSON object

Segments are separated by dots: a key, an integer index (negative counts from
the end), `*` for every element of a list, or `[key=value]` to keep the list
elements whose key equals value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_FILTER = re.compile(r"^\[([^=\]]+)=([^\]]*)\]$")
_INDEX = re.compile(r"^-?\d+$")
# Unicode letters, digits and underscore make a word; RE2 (inside Arrow) has no
# Unicode-aware \w, so spell the classes out.
NON_WORD = r"[^\p{L}\p{N}_]+"


class FieldPathError(ValueError):
    pass


def parse_field(path: str) -> list[tuple[str, Any]]:
    """Compile a field path into steps; raises FieldPathError naming the bad segment."""
    pieces = re.findall(r"\[[^\]]*\]|[^.\[\]]+|\.|.", path)
    steps: list[tuple[str, Any]] = []
    for part in pieces:
        if part == ".":
            continue
        m = _FILTER.match(part)
        if m:
            steps.append(("filter", (m.group(1).strip(), m.group(2).strip())))
        elif part == "*":
            steps.append(("all", None))
        elif _INDEX.match(part):
            steps.append(("index", int(part)))
        elif part.startswith("[") or part in ("]", "["):
            raise FieldPathError(f"bad segment {part!r} in field path {path!r}: use [key=value]")
        else:
            steps.append(("key", part))
    if not steps:
        raise FieldPathError(f"empty field path {path!r}")
    return steps


def _walk(value: Any, steps: list[tuple[str, Any]], out: list[str]) -> None:
    if value is None:
        return
    if not steps:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                _walk(v, steps, out)
        else:
            out.append(json.dumps(value, ensure_ascii=False, sort_keys=True))
        return
    kind, arg = steps[0]
    rest = steps[1:]
    if kind == "key":
        if isinstance(value, dict):
            _walk(value.get(arg), rest, out)
        elif isinstance(value, list):  # a key applied to a list maps over it
            for v in value:
                _walk(v, steps, out)
    elif kind == "index":
        if isinstance(value, list) and -len(value) <= arg < len(value):
            _walk(value[arg], rest, out)
    elif kind == "all":
        if isinstance(value, list):
            for v in value:
                _walk(v, rest, out)
    elif kind == "filter":
        key, want = arg
        if isinstance(value, list):
            for v in value:
                if isinstance(v, dict) and str(v.get(key)) == want:
                    _walk(v, rest, out)


def extract_texts(table: pa.Table, column: str, field: str | None) -> pa.Array:
    """The text each row contributes to dedup, as a string array (null = nothing to hash)."""
    if column not in table.column_names:
        raise KeyError(f"dedup: column {column!r} not in the table (columns: {', '.join(table.column_names)})")
    col = table.column(column).combine_chunks() if table.num_rows else pa.array([], pa.string())
    if field is None:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return col.cast(pa.string()) if pa.types.is_large_string(col.type) else col
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            return pc.cast(col, pa.string(), safe=False)
        steps: list = []
    else:
        steps = parse_field(field)
    texts: list[str | None] = []
    is_text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    for value in col.to_pylist():
        if is_text and value is not None and steps:
            try:
                value = json.loads(value)
            except ValueError:
                texts.append(None)
                continue
        out: list[str] = []
        _walk(value, steps, out)
        texts.append("\n".join(out) if out else None)
    return pa.array(texts, pa.string())


def normalize_for_exact(
    texts: pa.Array,
    *,
    nfkc: bool = True,
    lowercase: bool = True,
    strip_punctuation: bool = True,
    collapse_whitespace: bool = True,
) -> pa.Array:
    """Vectorised (Arrow C++) normalisation so trivially different copies hash alike."""
    if nfkc:
        texts = pc.utf8_normalize(texts, "NFKC")
    if lowercase:
        texts = pc.utf8_lower(texts)
    if strip_punctuation:
        # Punctuation and symbols (quotes, dashes, bullets) are what copies most
        # often differ in; letters, digits and spacing stay.
        texts = pc.replace_substring_regex(texts, r"[\p{P}\p{S}]+", "")
    if collapse_whitespace:
        texts = pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, r"\s+", " "))
    return texts


def word_lists(texts: pa.Array, lowercase: bool = True) -> pa.ListArray:
    """Split into words (letters, digits, underscore); empty pieces are left in, callers skip them."""
    if lowercase:
        texts = pc.utf8_lower(texts)
    return pc.split_pattern_regex(pc.fill_null(texts, ""), NON_WORD)
