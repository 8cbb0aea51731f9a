"""WARC, WET and ARC records, surviving broken files.

Measured on the shared crawls (see benchmarks/extractors.py --warc): FastWARC
reads WARC 2.5-3x faster than warcio and, with quirks mode, also reads
`bad-length.warc` to its end (8 records; warcio stops after 4 with "Unknown
archive format") and the ClueWeb LF-only headers (warcio parses them too,
FastWARC only in quirks mode). FastWARC cannot read ARC, so ARC goes through
warcio's ARC-to-WARC conversion.

A fault in the middle of a file (a corrupt gzip member, a garbled header) does
not end the file: we count it, look for the next record start after the last good
record (the next gzip member that inflates to a record header, or the next
`WARC/x.y` line), and read on from there.

No record is read whole: a block is read up to `max_bytes` (the caller's
document cap plus room for HTTP headers) and the rest of it is skipped as a
stream, so a record that decompresses to gigabytes is an `oversize` record of a
few megabytes in memory. zstd archives (see zstd.py) are read as one stream;
a fault inside one ends that file (counted), since frames carry no record offsets.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from fastwarc.warc import WarcRecordType
from warcio.archiveiterator import ArchiveIterator as WarcioIterator  # ARC only: FastWARC does not read ARC

_CHARSET_RE = re.compile(rb"charset\s*=\s*[\"']?([A-Za-z0-9_\-.:]+)", re.I)
_WARC_LINE = re.compile(rb"(?:^|\n)(WARC/[01]\.\d{1,2}\r?\n)")
_ARC_LINE = re.compile(rb"(?:^|\n)((?:https?|ftp|dns|filedesc|whois)://\S+ \d{1,3}(?:\.\d{1,3}){3} \d{14} )")
_SCAN_CHUNK = 1 << 20


@dataclass
class ArchiveRecord:
    offset: int
    record_type: str
    url: str | None
    date: str | None
    status: int | None
    content_type: str | None
    charset: str | None
    body: bytes
    declared_length: int | None
    # the stream ended before the declared length: a cut-off record
    truncated: bool = False
    # the header is unusable (a Content-Length that is not a number)
    malformed: bool = False
    # the block is longer than the reader's cap: `body` holds only its start
    oversize: bool = False


class ArchiveFault(Exception):
    """One fault inside an archive: reading resumes after it."""

    def __init__(self, offset: int, error: str):
        super().__init__(error)
        self.offset = offset
        self.error = error


def _charset_of(content_type: str | None) -> str | None:
    if not content_type:
        return None
    m = _CHARSET_RE.search(content_type.encode("latin-1", "replace"))
    return m.group(1).decode("ascii").lower() if m else None


def _read_capped(stream, cap: int | None) -> tuple[bytes, bool]:
    """(the first `cap` bytes, whether there were more): the rest stays unread."""
    if cap is None:
        return stream.read(), False
    parts, size = [], 0
    while size < cap:
        chunk = stream.read(min(cap - size, 1 << 20))
        if not chunk:
            return b"".join(parts), False
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), bool(stream.read(1))


def _fast_records(fh, start: int, cap: int | None = None) -> Iterator[ArchiveRecord]:
    # HTTP is parsed here, not by FastWARC, so the whole block is read and a
    # block shorter than the WARC Content-Length reliably marks a cut record.
    it = FastArchiveIterator(fh, record_types=WarcRecordType.any_type, parse_http=False, quirks_mode=True)
    for rec in it:
        offset = rec.stream_pos if rec.stream_pos >= start else start + rec.stream_pos
        block, oversize = _read_capped(rec.reader, cap)
        rtype = str(rec.record_type)
        length_field = rec.headers.get("Content-Length")
        declared = _int_or_none(length_field)
        malformed = length_field is not None and declared is None
        # no Content-Length at all: the file ended inside the record's header
        truncated = not malformed and not oversize and (declared is None or len(block) < declared)
        status = content_type = None
        body = block
        if rtype in ("response", "request", "revisit") and block[:5] in (b"HTTP/", b"http/"):
            status, content_type, body = _split_http(block)
        elif rtype != "response":
            content_type = rec.headers.get("Content-Type")
        yield ArchiveRecord(
            offset=offset,
            record_type=rtype,
            url=rec.headers.get("WARC-Target-URI"),
            date=rec.headers.get("WARC-Date"),
            status=status,
            content_type=content_type,
            charset=_charset_of(content_type),
            body=body,
            declared_length=declared,
            truncated=truncated,
            malformed=malformed,
            oversize=oversize,
        )


_HTTP_END = re.compile(rb"\r?\n\r?\n")


def _split_http(block: bytes) -> tuple[int | None, str | None, bytes]:
    """(status, content type, payload) of an HTTP message, tolerant of LF-only headers."""
    m = _HTTP_END.search(block, 0, 65536)
    if not m:
        return None, None, b""
    head = block[: m.start()].decode("latin-1").splitlines()
    status = None
    parts = head[0].split(None, 2) if head else []
    if len(parts) >= 2 and parts[1][:3].isdigit():
        status = int(parts[1][:3])
    content_type = None
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "content-type":
            content_type = value.strip()
    body = block[m.end() :]
    if any(line.lower().startswith("transfer-encoding:") and "chunked" in line.lower() for line in head[1:]):
        body = _dechunk(body)
    return status, content_type, body


def _dechunk(data: bytes) -> bytes:
    """Undo HTTP chunked transfer coding; data that is not really chunked comes back as is."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\n", pos)
        if eol == -1:
            return data
        size_text = data[pos:eol].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return data
        if size == 0:
            return bytes(out)
        out += data[eol + 1 : eol + 1 + size]
        pos = eol + 1 + size
        if data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos : pos + 1] == b"\n":
            pos += 1


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _arc_records(fh, start: int, cap: int | None = None) -> Iterator[ArchiveRecord]:
    it = WarcioIterator(fh, arc2warc=True)
    for rec in it:
        body, oversize = _read_capped(rec.content_stream(), cap)
        offset = start + it.get_record_offset() if it.get_record_offset() < start else it.get_record_offset()
        http = rec.http_headers
        ctype = http.get_header("Content-Type") if http is not None else rec.rec_headers.get_header("Content-Type")
        status = None
        if http is not None:
            try:
                status = int((http.get_statuscode() or "0")[:3])
            except ValueError:
                status = None
        yield ArchiveRecord(
            offset=offset,
            record_type=rec.rec_type,
            url=rec.rec_headers.get_header("WARC-Target-URI"),
            date=rec.rec_headers.get_header("WARC-Date"),
            status=status,
            content_type=ctype,
            charset=_charset_of(ctype),
            body=body,
            declared_length=rec.length,
            oversize=oversize,
        )


def _next_record_start(path: Path, after: int, gz: bool, kind: str) -> int | None:
    """Offset of the first plausible record start at or after `after`, or None."""
    line_re = _ARC_LINE if kind == "arc" else _WARC_LINE
    with open(path, "rb") as fh:
        pos = after
        while True:
            fh.seek(pos)
            chunk = fh.read(_SCAN_CHUNK + 64)
            if not chunk:
                return None
            if gz:
                i = chunk.find(b"\x1f\x8b\x08")
                while i != -1:
                    if i >= _SCAN_CHUNK:
                        break
                    fh.seek(pos + i)
                    head = fh.read(4096)
                    try:
                        inflated = zlib.decompressobj(31).decompress(head, 256)
                    except zlib.error:
                        inflated = b""
                    if line_re.match(inflated):
                        return pos + i
                    i = chunk.find(b"\x1f\x8b\x08", i + 1)
            else:
                m = line_re.search(chunk, 0, _SCAN_CHUNK + 16)
                if m:
                    return pos + m.start(1)
            if len(chunk) <= _SCAN_CHUNK:
                return None
            pos += _SCAN_CHUNK


def _iter_zstd(path: Path, kind: str, cap: int | None) -> Iterator[ArchiveRecord | ArchiveFault]:
    from synth.ingest.readers.zstd import open_stream

    reader = _arc_records if kind == "arc" else _fast_records
    last = 0
    with open_stream(path, stop_at_damage=True) as stream:
        records = reader(stream, 0, cap)
        while True:
            try:
                rec = next(records)
            except StopIteration:
                if stream.raw.error is not None:
                    yield ArchiveFault(last, stream.raw.error)
                return
            except (ImportError, NameError):
                raise
            except Exception as exc:  # noqa: BLE001 - one fault; a zstd stream cannot be resynchronised
                yield ArchiveFault(last, f"{type(exc).__name__}: {exc}")
                return
            last = rec.offset
            yield rec


def iter_archive(
    path: Path, gz: bool | str, kind: str, begin: int = 0, end: int | None = None, max_bytes: int | None = None
) -> Iterator[ArchiveRecord | ArchiveFault]:
    """Every readable record of a WARC/WET/ARC file, with a fault marker where some were lost.

    With `begin`/`end`, only records starting in [begin, end): reading starts at
    the first record start at or after `begin`, so byte ranges of one file are
    independent shards that together yield each record exactly once.
    Faults are yielded (not raised) so the caller counts them and keeps going.
    `max_bytes` caps how much of each record block is held in memory (see `oversize`).
    """
    if gz == "zstd":
        yield from _iter_zstd(path, kind, max_bytes)
        return
    reader = partial(_arc_records if kind == "arc" else _fast_records, cap=max_bytes)
    start = begin if begin == 0 else _next_record_start(path, begin, gz, kind)
    if start is None or (end is not None and start >= end):
        return
    last_good: int | None = None
    in_fault = False
    while True:
        made_progress = False
        with open(path, "rb") as fh:
            fh.seek(start)
            records = reader(fh, start)
            while True:
                try:
                    rec = next(records)
                except StopIteration:
                    error = None
                    break
                except (ImportError, NameError):
                    raise  # a broken install or a bug, never a fault in the data
                except Exception as exc:  # noqa: BLE001 - any parser error is one fault, reading goes on
                    error = f"{type(exc).__name__}: {exc}"
                    break
                if end is not None and rec.offset >= end:
                    return  # the next range's first record
                made_progress = True
                in_fault = False
                last_good = rec.offset
                yield rec
        # A reader may also stop quietly at a fault; a later record start proves it did.
        resume_from = (last_good + 1) if (made_progress and last_good is not None) else start + 1
        nxt = _next_record_start(path, resume_from, gz, kind)
        if error is None and nxt is None:
            return
        if not in_fault:
            yield ArchiveFault(
                resume_from - 1 if made_progress else start, error or "reader stopped before the end of the file"
            )
            in_fault = True
        if nxt is None or (end is not None and nxt >= end):
            return
        start = nxt
