"""Response filters. `heuristic/` holds those that need no model (rules,
self-consistency, code execution, decontamination); `llm/` those that ask one
(critique). Shared helpers for reading the record shape live here.

Record shape (the synthesis output): `id`, `kind`, `domain`, `messages` (a list of
{role, content}: the user turn is the instruction, the assistant turn the
response); `instruction` and `response` string columns may also be present. Each
stage takes the column names as options; a column option may name either a plain
string column or a messages column (list or its JSON string), in which case the
stage reads the turn of the role it needs.
"""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)


def turn_text(value, role: str = "assistant") -> str | None:
    """The text of a cell: the string itself, or the last `role` turn of a messages list."""
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.lstrip()
        if not (stripped.startswith("[") and '"role"' in stripped[:200]):
            return value
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list):
        for msg in reversed(value):
            if isinstance(msg, dict) and msg.get("role") == role:
                return str(msg.get("content") or "")
        return None
    return str(value)


def with_turn(value, text: str, role: str = "assistant"):
    """A messages cell whose last `role` turn says `text` (appended when missing)."""
    as_json = isinstance(value, str)
    msgs = json.loads(value) if as_json else [dict(m) for m in (value or [])]
    for msg in reversed(msgs):
        if msg.get("role") == role:
            msg["content"] = text
            break
    else:
        template = dict(msgs[-1]) if msgs else {}
        msgs.append({**{k: None for k in template}, "role": role, "content": text})
    return json.dumps(msgs, ensure_ascii=False) if as_json else msgs


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each closed ``` fence, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text or "")]
