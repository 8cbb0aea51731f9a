"""Plain-text documents and Project Gutenberg books: encodings, header, footer.

Decoding order, cheapest and surest first: a byte-order mark; strict UTF-8; the
charset a Gutenberg header declares ("Character set encoding: ISO-8859-1");
UTF-8 with a few bad bytes (many valid multi-byte sequences, few invalid ones:
a damaged UTF-8 file, not another encoding); otherwise charset-normalizer's guess.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]{1,3}")
_DECLARED_CHARSET = re.compile(rb"^Character set encoding:\s*([A-Za-z0-9_\-]+)", re.M)
_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)\b.*$", re.M | re.I)
_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)\b.*$", re.M | re.I)
# The "End of (the) Project Gutenberg EBook of ..." line just above the END marker
_END_NOTE = re.compile(r"^End of (?:the )?Project Gutenberg.*$", re.M | re.I)
_HEADER_FIELD = re.compile(r"^(Title|Author|Language|Release Date|Posting Date):[ \t]*(.*(?:\n[ \t]+\S.*)*)", re.M)
_PRODUCED_BY = re.compile(r"\A\s*(?:Produced by|E-text prepared by|Transcribed by)[^\n]*(?:\n[^\n]+)*\n\s*\n", re.I)


@dataclass
class DecodedText:
    text: str
    encoding: str
    # bytes that could not be decoded and were replaced with U+FFFD
    replaced: int = 0


def decode_text(data: bytes) -> DecodedText:
    if data.startswith(codecs.BOM_UTF8):
        return _utf8(data[3:], "utf-8-sig")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return DecodedText(data.decode("utf-16", "replace"), "utf-16")
    try:
        return DecodedText(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    declared = _DECLARED_CHARSET.search(data[:20000])
    if declared:
        name = declared.group(1).decode("ascii").lower()
        try:
            return DecodedText(data.decode(name), codecs.lookup(name).name)
        except (LookupError, UnicodeDecodeError):
            pass
    valid = len(_UTF8_MULTIBYTE.findall(data))
    if valid:
        repaired = data.decode("utf-8", "replace")
        bad = repaired.count("\ufffd") - data.decode("utf-8", "ignore").count("\ufffd")
        if bad * 20 <= valid:
            return DecodedText(repaired, "utf-8", replaced=bad)
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    if best is not None and best.encoding:
        try:
            return DecodedText(data.decode(best.encoding), best.encoding)
        except (LookupError, UnicodeDecodeError):
            pass
    repaired = data.decode("utf-8", "replace")
    return DecodedText(repaired, "utf-8", replaced=repaired.count("\ufffd"))


def _utf8(data: bytes, name: str) -> DecodedText:
    try:
        return DecodedText(data.decode("utf-8"), name)
    except UnicodeDecodeError:
        repaired = data.decode("utf-8", "replace")
        return DecodedText(repaired, name, replaced=repaired.count("\ufffd"))


@dataclass
class Book:
    text: str
    is_gutenberg: bool
    # character offset of `text` inside the decoded file
    body_offset: int = 0
    meta: dict = field(default_factory=dict)


def parse_book(text: str) -> Book:
    """Strip a Project Gutenberg header and footer and keep the header's metadata."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _START.search(text)
    if not start:
        return Book(text, False)
    header = text[: start.start()]
    meta = {}
    for key, value in _HEADER_FIELD.findall(header):
        key = key.lower().replace(" ", "_")
        if key not in meta:
            meta[key] = " ".join(value.split())
    body_from = start.end()
    end = _END.search(text, body_from)
    body_to = end.start() if end else len(text)
    notes = list(_END_NOTE.finditer(text, body_from, body_to))
    note = notes[-1] if notes else None
    if note is not None and body_to - note.start() < 400:
        body_to = note.start()
    body = text[body_from:body_to]
    credit = _PRODUCED_BY.match(body)
    if credit:
        body_from += credit.end()
        body = body[credit.end() :]
    stripped = body.strip()
    lead = len(body) - len(body.lstrip())
    return Book(stripped, True, body_from + lead, meta)
