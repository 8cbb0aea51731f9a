"""Source stage `read`: crawls (WARC, ARC, WET), document files (JSONL, Parquet) and books.

One shard per input file, in sorted path order, so a rerun plans the same shards.
Formats are told apart by content first (see readers/sniff.py), so a mislabelled
file is still read. Nothing a file contains can stop the run: a fault inside a file
is counted under a reason and reading goes on after it; a file that cannot be read
at all is one counted drop (`unreadable_file`, with the error) for its shard.

Hostile files cost bounded memory: every record, line and decompressed body is
read as a stream with a cap of `max_document_bytes + 1`, so a small file that
decompresses into gigabytes becomes a counted `too_large`, not an allocation.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pyarrow as pa
from pydantic import Field

from synth.core.errors import InputError
from synth.core.records import content_id
from synth.core.stage import Shard, SourceStage, StageOptions
from synth.ingest.readers.archive import ArchiveFault, iter_archive
from synth.ingest.readers.sniff import open_maybe_gzip, sniff_format
from synth.ingest.readers.text import decode_text, parse_book

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("html", pa.binary()),
        ("url", pa.string()),
        ("source", pa.string()),
        ("format", pa.string()),
        ("offset", pa.int64()),
        ("title", pa.string()),
        ("author", pa.string()),
        ("date", pa.string()),
        ("declared_language", pa.string()),
        ("content_type", pa.string()),
        ("charset", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
_log = logging.getLogger(__name__)
_GLOB_CHARS = set("*?[")
_HTML_SNIFF = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
# How much of a dropped record the reject sample keeps: enough to recognise it.
_SAMPLE_CHARS = 500
# An archive block holds HTTP headers before the page: room for them above the cap.
_HTTP_HEAD_ROOM = 64 * 1024
# Oversize lines are skipped in pieces of this size, never held whole.
_SKIP_CHUNK = 1 << 20


class ReadOptions(StageOptions):
    # JSONL field / Parquet column holding the document text
    text_field: str = "text"
    # JSONL/Parquet fields copied into the metadata columns when present
    url_field: str = "url"
    title_field: str = "title"
    # Records larger than this are dropped as `too_large` (a 50 MB "page" is a
    # dump or a binary, and would stall extraction and dedup).
    max_document_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # A record cut short by the end of a truncated file is dropped unless kept.
    keep_truncated: bool = False
    # HTTP responses outside 2xx (redirects, errors) carry no page.
    only_ok_status: bool = True
    # WARC/WET/ARC files larger than this are read as several shards of about
    # this many (compressed) bytes, each starting at its first record: more
    # parallelism, bounded memory per shard. None: one shard per file.
    split_bytes: int | None = Field(default=256 * 1024 * 1024, gt=0)
    # Basenames skipped when a glob or a directory expands (licences, notes).
    exclude: tuple[str, ...] = ("*LICENSE*", "*LICENCE*", "PROVENANCE*", "README*", ".*")


class ReadDocuments(SourceStage):
    type = "read"
    Options = ReadOptions
    writes = COLUMNS
    options: ReadOptions
    # drops that mean "this file gave nothing": a run made only of them is an error
    unreadable_reasons = ("unreadable_file", "unknown_format", "empty_file")

    def schema(self) -> pa.Schema:
        return SCHEMA

    def column_types(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in SCHEMA}

    # -- planning ------------------------------------------------------------
    def list_shards(self, inputs: Sequence[str]) -> list[dict]:
        specs = []
        split = self.options.split_bytes
        skipped: dict[str, int] = {}
        for path in expand_inputs(inputs, self.options.exclude, skipped=skipped):
            size = os.path.getsize(path)
            if split and size > split and _is_splittable(Path(path)):
                specs.extend(
                    {"path": path, "size": size, "begin": b, "end": min(size, b + split)} for b in range(0, size, split)
                )
            else:
                specs.append({"path": path, "size": size})
        if skipped and specs:
            # counted in the ledger by the first shard (see read())
            specs[0]["skipped_inputs"] = dict(sorted(skipped.items()))
        return specs

    # -- reading -------------------------------------------------------------
    def read(self, spec: dict, shard: Shard) -> pa.Table:
        path = Path(spec["path"])
        rows: list[dict] = []
        try:
            fmt, gz = sniff_format(path)
        except OSError as exc:
            shard.drop({"source": str(path)}, "unreadable_file", {"error": _one_line(exc)})
            return pa.Table.from_pylist([], schema=SCHEMA)
        for reason, n in (spec.get("skipped_inputs") or {}).items():
            shard.count(f"inputs.skipped.{reason}", n)
        if not spec.get("begin"):  # a file split in byte ranges is counted by its first
            shard.count(f"files.{fmt}")
            if gz == "zstd":
                shard.count("files.zstd")
            elif gz and not path.name.lower().endswith((".gz", ".tgz")):
                shard.count("files.gzip_without_gz_name")
            if not gz and path.name.lower().endswith(".gz"):
                # named .gz but not gzip: read as what it is
                shard.count("files.gz_name_not_gzip")
        if "begin" in spec:
            if fmt not in ("warc", "wet", "arc") or gz == "zstd":
                shard.drop(
                    {"source": str(path)},
                    "unreadable_file",
                    {
                        "error": f"planned as a byte range of an archive but is now {fmt}; the file changed since planning"
                    },
                )
                return pa.Table.from_pylist([], schema=SCHEMA)
            reader = partial(self._read_archive, begin=spec["begin"], end=spec["end"])
        else:
            reader = None
        reader = reader or {
            "warc": self._read_archive,
            "wet": self._read_archive,
            "arc": self._read_archive,
            "jsonl": self._read_jsonl,
            "parquet": self._read_parquet,
            "text": self._read_text,
        }.get(fmt)
        if reader is None:
            reason = "empty_file" if fmt == "empty" else "unknown_format"
            shard.drop({"source": str(path)}, reason)
            return pa.Table.from_pylist([], schema=SCHEMA)
        try:
            for row in reader(path, fmt, gz, shard):
                rows.append(row)
        except (ImportError, NameError):
            raise  # a broken install or a bug: not a fault of this file
        except Exception as exc:  # noqa: BLE001 - the records read so far are kept
            shard.drop(
                {"source": str(path), "offset": rows[-1]["offset"] if rows else 0},
                "unreadable_file",
                {"error": _one_line(exc)},
            )
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    def _too_large(self, shard: Shard, size: int, record: dict) -> bool:
        if size <= self.options.max_document_bytes:
            return False
        shard.drop(_sample(record), "too_large", {"bytes": size})
        return True

    def _read_archive(
        self, path: Path, fmt: str, gz: bool, shard: Shard, begin: int = 0, end: int | None = None
    ) -> Iterator[dict]:
        source = str(path)
        cap = self.options.max_document_bytes
        for rec in iter_archive(path, gz, fmt, begin, end, max_bytes=cap + _HTTP_HEAD_ROOM):
            if isinstance(rec, ArchiveFault):
                shard.drop({"source": source, "offset": rec.offset}, "corrupt_record", {"error": _one_line(rec.error)})
                continue
            if rec.malformed:
                shard.drop(
                    {"source": source, "offset": rec.offset, "url": rec.url},
                    "corrupt_record",
                    {"error": "unreadable record header"},
                )
                continue
            if fmt == "wet" or rec.record_type == "conversion":
                if rec.record_type != "conversion":
                    shard.count(f"skipped.{rec.record_type}_records")
                    continue
                if rec.oversize or len(rec.body) > cap:
                    self._too_large(
                        shard,
                        max(len(rec.body), rec.declared_length or 0),
                        {"source": source, "offset": rec.offset, "url": rec.url},
                    )
                    continue
                row = self._row(
                    source,
                    "wet",
                    rec.offset,
                    text=rec.body.decode("utf-8", "replace"),
                    url=rec.url,
                    date=rec.date,
                    content_type=rec.content_type or "text/plain",
                    charset="utf-8",
                )
                if rec.truncated and not self.options.keep_truncated:
                    shard.drop(
                        _sample(row),
                        "truncated_record",
                        {"declared_bytes": rec.declared_length, "read_bytes": len(rec.body)},
                    )
                    continue
                if not self._too_large(shard, len(rec.body), row):
                    yield row
                continue
            if rec.record_type != "response":
                shard.count(f"skipped.{rec.record_type}_records")
                continue
            if rec.oversize:
                self._too_large(
                    shard,
                    max(len(rec.body), rec.declared_length or 0),
                    {"source": source, "offset": rec.offset, "url": rec.url, "html": rec.body[:_SAMPLE_CHARS]},
                )
                continue
            body = _decode_content_encoding(rec.body, cap)
            if body is None:
                shard.drop(
                    {"source": source, "offset": rec.offset, "url": rec.url, "html": rec.body[:_SAMPLE_CHARS]},
                    "too_large",
                    {"bytes": f">{cap} decompressed"},
                )
                continue
            row = self._row(
                source,
                fmt,
                rec.offset,
                html=body,
                url=rec.url,
                date=rec.date,
                content_type=rec.content_type,
                charset=rec.charset,
            )
            if rec.truncated:
                # judged before the content checks: a cut record has lost its headers too
                if not self.options.keep_truncated or not body:
                    shard.drop(
                        _sample(row),
                        "truncated_record",
                        {"declared_bytes": rec.declared_length, "read_bytes": len(rec.body)},
                    )
                    continue
                shard.count("kept_truncated_records")
            if self.options.only_ok_status and rec.status is not None and not 200 <= rec.status < 300:
                shard.count(f"skipped.http_{rec.status // 100}xx")
                continue
            if not _is_html(rec.content_type, rec.body):
                shard.count("skipped.non_html_responses")
                continue
            if not body.strip():
                shard.drop(_sample(row), "empty_record")
                continue
            if not self._too_large(shard, len(body), row):
                yield row

    def _read_jsonl(self, path: Path, fmt: str, gz: bool, shard: Shard) -> Iterator[dict]:
        source, opts = str(path), self.options
        with open_maybe_gzip(path, gz) as fh:
            lineno = 0
            while True:
                try:
                    raw = fh.readline(opts.max_document_bytes + 1)
                    if len(raw) > opts.max_document_bytes and not raw.endswith(b"\n"):
                        raw_size = len(raw) + _skip_rest_of_line(fh)
                        lineno += 1
                        shard.drop(
                            {
                                "source": source,
                                "offset": lineno,
                                "text": raw[:_SAMPLE_CHARS].decode("utf-8", "replace"),
                            },
                            "too_large",
                            {"bytes": raw_size},
                        )
                        continue
                except (EOFError, OSError, zlib.error) as exc:
                    # a cut or corrupt gzip stream: what was read before is kept
                    shard.drop({"source": source, "offset": lineno + 1}, "truncated_file", {"error": _one_line(exc)})
                    return
                if not raw:
                    return
                lineno += 1
                if not raw.strip():
                    shard.count("skipped.blank_lines")
                    continue
                if len(raw) > opts.max_document_bytes:
                    shard.drop(
                        {"source": source, "offset": lineno, "text": raw[:_SAMPLE_CHARS].decode("utf-8", "replace")},
                        "too_large",
                        {"bytes": len(raw)},
                    )
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = raw.decode("utf-8", "replace")
                    shard.count("repaired.invalid_utf8_lines")
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    shard.drop(
                        {"source": source, "offset": lineno, "text": line[:_SAMPLE_CHARS]},
                        "malformed_json",
                        {"line": lineno, "error": _one_line(exc)},
                    )
                    continue
                if not isinstance(obj, dict):
                    shard.drop(
                        {"source": source, "offset": lineno, "text": line[:_SAMPLE_CHARS]},
                        "malformed_json",
                        {"line": lineno, "error": "not a JSON object"},
                    )
                    continue
                text = obj.get(opts.text_field)
                if not isinstance(text, str):
                    shard.drop(
                        {"source": source, "offset": lineno, "text": line[:_SAMPLE_CHARS]},
                        "missing_text",
                        {"line": lineno, "field": opts.text_field},
                    )
                    continue
                if not text.strip():
                    shard.drop({"source": source, "offset": lineno}, "empty_text", {"line": lineno})
                    continue
                yield self._record_row(source, "jsonl", lineno, text, obj)

    def _read_parquet(self, path: Path, fmt: str, gz: bool, shard: Shard) -> Iterator[dict]:
        import pyarrow.parquet as pq

        source, opts = str(path), self.options
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if opts.text_field not in names:
            shard.drop(
                {"source": source},
                "unreadable_file",
                {
                    "error": f"no column {opts.text_field!r} to read text from (columns: {', '.join(names)}); set the read stage's text_field"
                },
            )
            return
        wanted = [
            c
            for c in dict.fromkeys([opts.text_field, opts.url_field, opts.title_field, "author", "date"])
            if c in names
        ]
        row_index = 0
        for batch in pf.iter_batches(columns=wanted, batch_size=4096):
            for obj in batch.to_pylist():
                row_index += 1
                text = obj.get(opts.text_field)
                if not isinstance(text, str) or not text.strip():
                    shard.drop(
                        {"source": source, "offset": row_index},
                        "missing_text" if not isinstance(text, str) else "empty_text",
                    )
                    continue
                row = self._record_row(source, "parquet", row_index, text, obj)
                if not self._too_large(shard, len(text.encode("utf-8", "surrogatepass")), row):
                    yield row

    def _read_text(self, path: Path, fmt: str, gz: bool, shard: Shard) -> Iterator[dict]:
        source = str(path)
        size = os.path.getsize(path)
        if not gz and self._too_large(shard, size, {"source": source, "offset": 0}):
            return
        with open_maybe_gzip(path, gz) as fh:
            data = fh.read(self.options.max_document_bytes + 1)
        if self._too_large(shard, len(data), {"source": source, "offset": 0}):
            return
        decoded = decode_text(data)
        if decoded.replaced:
            shard.count("repaired.invalid_bytes", decoded.replaced)
        book = parse_book(decoded.text)
        if not book.text.strip():
            shard.drop({"source": source, "offset": 0}, "empty_text")
            return
        meta = book.meta
        yield self._row(
            source,
            "gutenberg" if book.is_gutenberg else "text",
            0,
            text=book.text,
            title=meta.get("title"),
            author=meta.get("author"),
            date=meta.get("release_date") or meta.get("posting_date"),
            declared_language=meta.get("language"),
            content_type="text/plain",
            charset=decoded.encoding,
        )

    def _record_row(self, source: str, fmt: str, offset: int, text: str, obj: dict) -> dict:
        """A row from one record of a JSONL or Parquet file: its text and metadata fields."""
        opts = self.options
        return self._row(
            source,
            fmt,
            offset,
            text=text,
            url=_str_or_none(obj.get(opts.url_field)),
            title=_str_or_none(obj.get(opts.title_field)),
            author=_str_or_none(obj.get("author")),
            date=_str_or_none(obj.get("date")),
        )

    @staticmethod
    def _row(source: str, fmt: str, offset: int, *, text: str | None = None, html: bytes | None = None, **meta) -> dict:
        row = dict.fromkeys(COLUMNS)
        row.update(meta)
        row.update(
            # The file's name, not its full path: moving a corpus keeps its ids.
            id=content_id(os.path.basename(source), offset, html if html is not None else text),
            text=text,
            html=html,
            source=source,
            format=fmt,
            offset=offset,
        )
        return row


def describe_inputs(inputs: Sequence[str], exclude: Sequence[str] = ReadOptions().exclude) -> list[dict]:
    """What `read` would do with each input file: for a `synth inputs GLOB...` command."""
    out = []
    for path in expand_inputs(inputs, exclude):
        fmt, gz = sniff_format(Path(path))
        out.append(
            {
                "path": path,
                "format": fmt,
                "gzip": gz is True,
                "compression": "gzip" if gz is True else (gz or None),
                "bytes": os.path.getsize(path),
            }
        )
    return out


def expand_inputs(
    inputs: Sequence[str], exclude: Sequence[str] = (), skipped: dict[str, int] | None = None
) -> list[str]:
    """Paths, directories and globs -> sorted files, each real file once; nothing found is an error.

    Directory links are followed, but never into a directory the walk is already
    inside (`loop -> ..`, `self -> .`) nor twice into the same directory; a file
    reached by several paths is read once (under its smallest path). What was
    left out is counted in `skipped` by reason and logged once.
    """
    if not inputs:
        raise InputError("no inputs given: pass --input PATH_OR_GLOB (or set `inputs` in the pipeline)")
    skips: dict[str, int] = {}
    by_real: dict[str, str] = {}
    seen: set[str] = set()
    for item in inputs:
        item = os.path.expanduser(str(item))
        if _GLOB_CHARS & set(item):
            matches = [m for m in _glob_files(item, skips) if not _excluded(m, exclude)]
            if not matches:
                raise InputError(f"input {item!r} matched no files")
        elif os.path.isdir(item):
            matches = [m for m in _walk_files(item, skips) if not _excluded(m, exclude)]
            if not matches:
                raise InputError(f"input directory {item!r} holds no files")
        elif os.path.isfile(item):
            matches = [item]
        else:
            raise InputError(f"input path {item!r} does not exist")
        for m in matches:
            path = os.path.normpath(os.path.abspath(m))
            if path in seen:
                continue  # the same path named twice (overlapping globs): nothing to say
            seen.add(path)
            real = os.path.realpath(path)
            known = by_real.get(real)
            if known is None:
                by_real[real] = path
            else:
                skips["same_file"] = skips.get("same_file", 0) + 1
                by_real[real] = min(known, path)
    if skips:
        _log.warning(
            "inputs: skipped %s",
            ", ".join(f"{n} path(s) ({reason.replace('_', ' ')})" for reason, n in sorted(skips.items())),
        )
        if skipped is not None:
            for reason, n in skips.items():
                skipped[reason] = skipped.get(reason, 0) + n
    return sorted(by_real.values())


def _glob_files(pattern: str, skips: dict[str, int]) -> list[str]:
    if "**" not in pattern:
        # without `**` a glob descends a fixed depth: links cannot loop it
        return [m for m in glob.glob(pattern) if os.path.isfile(m)]
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) - 1 and not (_GLOB_CHARS & set(parts[fixed])):
        fixed += 1
    root = os.sep.join(parts[:fixed]) or ("/" if pattern.startswith(os.sep) else ".")
    wanted = [p for p in parts[fixed:] if p]
    if not os.path.isdir(root):
        return []
    out = []
    for path in _walk_files(root, skips):
        rel = os.path.relpath(path, root).split(os.sep)
        if _glob_match(wanted, rel):
            out.append(path)
    return out


def _glob_match(pattern: list[str], parts: list[str]) -> bool:
    """glob's recursive semantics on path segments: `**` is any number of directories,
    and a wildcard does not match a hidden name unless it starts with a dot."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        if _glob_match(pattern[1:], parts):
            return True
        return bool(parts) and not parts[0].startswith(".") and _glob_match(pattern, parts[1:])
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _glob_match(pattern[1:], parts[1:])


def _walk_files(root: str, skips: dict[str, int]) -> Iterator[str]:
    """Every file under `root`, following directory links except into a loop or twice."""

    def skip(reason: str) -> None:
        skips[reason] = skips.get(reason, 0) + 1

    visited = {os.path.realpath(root)}
    stack = [(root, os.path.realpath(root))]
    while stack:
        here, real_here = stack.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            skip("unreadable_directory")
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
                is_link = entry.is_symlink()
            except OSError:
                skip("unreadable_entry")
                continue
            if is_dir:
                real = os.path.realpath(entry.path)
                if is_link and (real_here == real or real_here.startswith(real.rstrip(os.sep) + os.sep)):
                    skip("directory_link_loop")  # a link to a directory the walk is inside
                    continue
                if real in visited:
                    skip("directory_seen_twice")
                    continue
                visited.add(real)
                stack.append((entry.path, real))
            elif is_file:
                yield entry.path
            elif is_link:
                skip("broken_link")


def _is_splittable(path: Path) -> bool:
    """An archive whose byte ranges can be read apart: WARC/WET/ARC, plain or gzip."""
    try:
        fmt, gz = sniff_format(path)
    except OSError:
        return False
    return fmt in ("warc", "wet", "arc") and gz != "zstd"


def _skip_rest_of_line(fh) -> int:
    """Read past the rest of an oversize line in bounded pieces; bytes skipped."""
    skipped = 0
    while True:
        piece = fh.readline(_SKIP_CHUNK)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _is_html(content_type: str | None, body: bytes) -> bool:
    if content_type:
        ct = content_type.lower()
        if "html" in ct:
            return True
        if not any(t in ct for t in ("text/plain", "octet-stream", "unknown")):
            return False
    head = body[:1024].lstrip().lower()
    return head.startswith(_HTML_SNIFF) or b"<html" in head


def _decode_content_encoding(body: bytes, cap: int) -> bytes | None:
    """The page, gunzipped when the body is gzip; None when it inflates beyond `cap` bytes.

    Some crawls store the body still gzip-compressed, others decompressed but with
    the Content-Encoding header kept (ClueWeb): trust the bytes, not the header.
    Inflated as a stream with a cap, so a gzip bomb costs `cap` bytes, not its size.
    """
    if body[:2] != b"\x1f\x8b":
        return body
    out = bytearray()
    data = body
    try:
        while data[:2] == b"\x1f\x8b":  # one gzip member after another
            inflater = zlib.decompressobj(31)
            out += inflater.decompress(data, cap + 1 - len(out))
            if len(out) > cap:
                return None
            if not inflater.eof:
                break  # cut short: keep what inflated
            data = inflater.unused_data
    except zlib.error:
        return bytes(out) if out else body
    return bytes(out)


def _sample(record: dict) -> dict:
    out = {}
    for k, v in record.items():
        if isinstance(v, (bytes, str)) and len(v) > _SAMPLE_CHARS:
            v = v[:_SAMPLE_CHARS]
        out[k] = v
    return out


def _str_or_none(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _one_line(error) -> str:
    return " ".join(str(error).split())[:300]
