"""What `synth pack` reads: run directories (their `output/`), folders, Parquet and JSONL
files. Every input has a source name (the run directory's or file's name, or NAME in
NAME=PATH), which mix.yaml weights may refer to. One task per file."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RECORD_COLUMNS = ("id", "messages", "tools", "text", "domain", "kind")


@dataclass
class ReadPosition:
    """How far a reader has got into its file, in bytes of the file as stored (it may
    go back when a JSONL file is handed from Arrow to the line reader)."""

    bytes: int = 0


_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")


# The record fields are read as strings: left to inference, Arrow turns a column of
# timestamp-like strings into timestamps (an id changes, a text becomes a skip). A file
# where one of them is not a string is read line by line instead.
def _json_parse_options():
    import pyarrow.json as pj

    return pj.ParseOptions(
        explicit_schema=pa.schema([(c, pa.string()) for c in ("id", "text", "domain", "kind")]),
        unexpected_field_behavior="infer",
    )


class PackInputError(ValueError):
    """An input path that cannot be read at all."""


@dataclass(frozen=True)
class InputFile:
    source: str
    path: str


def _data_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES) and not p.name.startswith(".")
    )


def resolve_inputs(inputs: list[str]) -> list[InputFile]:
    files: list[InputFile] = []
    for raw in inputs:
        name, _, path_s = raw.partition("=") if "=" in raw and not Path(raw).exists() else ("", "", raw)
        path = Path(path_s)
        if not path.exists():
            raise PackInputError(f"input {path_s}: no such file or folder")
        if path.is_dir():
            folder = path / "output" if (path / "output").is_dir() else path
            found = _data_files(folder)
            if not found:
                raise PackInputError(f"input {path_s}: no .parquet or .jsonl files in {folder}")
            source = name or path.resolve().name
            files.extend(InputFile(source, str(f)) for f in found)
        elif path.name.endswith(_SUFFIXES):
            source = name or path.name.split(".")[0]
            files.append(InputFile(source, str(path)))
        else:
            raise PackInputError(f"input {path_s}: not a run directory, folder, .parquet or .jsonl file")
    return files


def iter_record_batches(path: str, batch_rows: int = 1024) -> Iterator[list[dict]]:
    """Batches of records as dicts; a JSONL line that is not JSON becomes a record with
    `_bad` set, so it is counted, not lost."""
    for batch in iter_batches(path, batch_rows):
        yield batch.to_pylist() if isinstance(batch, pa.Table) else batch


# Bytes per block of Arrow's streaming JSON reader: a line longer than this ends the
# Arrow path (the rest of the file is read line by line, which costs little for records
# that large).
JSON_BLOCK_BYTES = 1 << 20


def _arrow_jsonl_batches(
    path: str, batch_rows: int, batch_bytes: int, position: ReadPosition
) -> Generator[pa.Table, None, int | None]:
    """Tables of up to `batch_rows` text records read by Arrow, in file order, each
    handed out once it holds `batch_bytes` (the first can be encoded while the rest of
    the file is read). Returns None when they are the whole file, else how many
    (non-blank) lines they hold: the lines before the first block Arrow could not read
    (0 for a file of chat records)."""
    with pa.OSFile(path) as source:  # its position says how far the reader has got
        return (yield from _arrow_json_blocks(source, batch_rows, batch_bytes, position))


def _arrow_json_blocks(source: pa.NativeFile, batch_rows: int, batch_bytes: int, position: ReadPosition):
    import pyarrow.json as pj

    arrow_errors = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
    try:
        reader = pj.open_json(
            source, read_options=pj.ReadOptions(block_size=JSON_BLOCK_BYTES), parse_options=_json_parse_options()
        )
    except arrow_errors:
        return 0
    # Chat records stay on the per-line path: Arrow would merge differently shaped tool
    # schemas and arguments into one struct padded with nulls.
    if {"messages", "tools"} & set(reader.schema.names):
        return 0
    cols = [c for c in RECORD_COLUMNS if c in reader.schema.names]
    pending: list[pa.RecordBatch] = []
    n_pending = lines = 0
    try:
        for block in reader:
            pending.append(block.select(cols))
            n_pending += block.num_rows
            while n_pending >= batch_rows:
                table = pa.Table.from_batches(pending)
                position.bytes = source.tell()
                yield table.slice(0, batch_rows)
                lines += batch_rows
                rest = table.slice(batch_rows).combine_chunks()
                pending, n_pending = rest.to_batches(), rest.num_rows
            if n_pending and sum(b.nbytes for b in pending) >= batch_bytes:
                position.bytes = source.tell()
                yield pa.Table.from_batches(pending)
                lines += n_pending
                pending, n_pending = [], 0
        complete = True
    except arrow_errors:
        complete = False  # the rest of the file goes line by line
    if n_pending:
        position.bytes = source.tell()
        yield pa.Table.from_batches(pending)
        lines += n_pending
    return None if complete else lines


def iter_batches(
    path: str, batch_rows: int = 1024, position: ReadPosition | None = None, batch_bytes: int = 1 << 62
) -> Iterator[pa.Table | list[dict]]:
    """Batches of records, columnar (an Arrow table of RECORD_COLUMNS) where the file
    reads as one table, else as dicts (`iter_record_batches` explains the dicts); each
    of at most `batch_rows` records and about `batch_bytes` of data (long records make
    batches of fewer records). `position`, when given, follows the bytes read (for a
    progress bar's time left)."""
    position = position if position is not None else ReadPosition()
    if path.endswith(".parquet"):
        pf = pq.ParquetFile(path)
        cols = [c for c in RECORD_COLUMNS if c in pf.schema_arrow.names]
        size, rows, done = Path(path).stat().st_size, max(pf.metadata.num_rows, 1), 0
        row_bytes = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups)) // rows
        batch_rows = max(1, min(batch_rows, batch_bytes // max(row_bytes, 1)))
        for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
            done += batch.num_rows
            position.bytes = size * done // rows
            yield pa.Table.from_batches([batch])
        return
    skip_lines = 0
    if path.endswith(".jsonl"):
        # Arrow's JSON reader is several times faster than json.loads per line for text
        # records. It streams the file block by block (memory does not grow with the
        # file); from the first block it cannot read (a bad line, a type or field it has
        # not seen, a chat record) to the end, the file is read line by line.
        skip_lines = yield from _arrow_jsonl_batches(path, batch_rows, batch_bytes, position)
        if skip_lines is None:
            return
    batch: list[dict] = []
    n_bytes = 0
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        for line in io.TextIOWrapper(stream, encoding="utf-8", errors="replace"):
            line = line.strip()
            if not line:
                continue
            if skip_lines:  # read by Arrow already
                skip_lines -= 1
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError
            except ValueError:
                rec = {"_bad": "bad_json_line"}
            batch.append(rec)
            n_bytes += len(line)
            if len(batch) >= batch_rows or n_bytes >= batch_bytes:
                position.bytes = raw.tell()
                yield batch
                batch, n_bytes = [], 0
    position.bytes = Path(path).stat().st_size
    if batch:
        yield batch
