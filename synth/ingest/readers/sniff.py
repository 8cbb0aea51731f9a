"""Which reader a file needs, decided by its bytes first and its name second.

Names lie (a `.gz` that is not gzip, a `.txt` that is JSON lines); the first
bytes rarely do. The extension only breaks ties between formats whose openings
look alike (a WET file is a WARC file of conversion records).

Compression is told the same way: gzip, or zstd (the zstd WARC convention: one
frame per record, optionally a dictionary in a skippable frame at the start).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from synth.ingest.readers import zstd

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 4096


def _gunzip_head(head: bytes) -> bytes:
    """Decompress what we can of the first bytes of a gzip stream."""
    try:
        return zlib.decompressobj(31).decompress(head, SNIFF_BYTES)
    except zlib.error:
        return b""


def sniff_format(path: Path) -> tuple[str, bool | str]:
    """(format, compression): format is warc, wet, arc, jsonl, parquet, text, empty or
    unknown; compression is False, True (gzip) or "zstd"."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        return "empty", False
    gz: bool | str = head.startswith(GZIP_MAGIC)
    if head.startswith(PARQUET_MAGIC):
        return "parquet", False
    if zstd.is_zstd(head):
        gz = "zstd"
        try:
            body = zstd.decompress_head(path, SNIFF_BYTES)
        except Exception:  # noqa: BLE001 - a broken frame or dictionary: not readable as zstd
            body = b""
    else:
        body = _gunzip_head(head) if gz else head
    if gz and not body:
        return "unknown", gz
    name = path.name.lower()
    stripped = body.lstrip()
    if stripped.startswith(b"WARC/"):
        return ("wet" if ".wet" in name else "warc"), gz
    if stripped.startswith(b"filedesc://"):
        return "arc", gz
    if stripped.startswith(b"{"):
        return "jsonl", gz
    if _looks_textual(body):
        return "text", gz
    return "unknown", gz


def _looks_textual(sample: bytes) -> bool:
    if not sample:
        return False
    if b"\x00" in sample[:1024]:
        # UTF-16 text has NULs too; a BOM says so.
        return sample.startswith((b"\xff\xfe", b"\xfe\xff"))
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return control / len(sample) < 0.01


def open_maybe_gzip(path: Path, gz: bool | str):
    """A binary file object of the decompressed bytes (gzip, zstd or none)."""
    if gz == "zstd":
        return zstd.open_stream(path)
    return gzip.open(path, "rb") if gz else open(path, "rb")
