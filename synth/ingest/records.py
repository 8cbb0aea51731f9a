"""`read_records`: bring your own data. Rows of JSONL, Parquet and saved `datasets`
folders (`Dataset.save_to_disk` / `DatasetDict.save_to_disk`) enter a pipeline as they
are, every column kept, so any synthesis or filter stage runs on existing instruction
data. With `messages_column` set, chat conversations also get the `instruction` and
`response` columns the instruction stages read.

`read` is for documents (crawls, books: one `text` per record); this is for records.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from synth.core.records import content_id
from synth.core.stage import Shard, SourceStage, StageOptions

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
REJECT_SAMPLE = 10_000  # per shard and reason: with shards of <= 5,000 rows the sample is complete


class ReadRecordsOptions(StageOptions):
    rows_per_shard: int = Field(
        5000, ge=1, le=REJECT_SAMPLE, description="Parquet and datasets inputs are split into shards of this many rows."
    )
    bytes_per_shard: int = Field(
        64 << 20, ge=1 << 16, description="Plain JSONL files are split at line starts near this size."
    )
    columns: list[str] = Field(
        default_factory=list, description="Columns the records are expected to have (declared to later stages)."
    )
    messages_column: str | None = Field(
        None,
        description="A column of chat turns ({role, content}); derives `instruction` (first user turn) and `response` (the reply to it) where missing.",
    )
    split: list[str] = Field(
        default_factory=list, description="Splits of a saved DatasetDict to read (default: all, in saved order)."
    )


class ReadRecords(SourceStage):
    """Rows of Parquet, JSONL and saved `datasets` folders, every column kept (an `id`
    is added when missing: a content hash for JSONL, file and row for the others)."""

    type = "read_records"
    Options = ReadRecordsOptions
    writes = ("id",)

    def output_columns(self):
        derived = ("instruction", "response") if self.options.messages_column else ()
        return tuple(dict.fromkeys(("id", *self.options.columns, *derived)))

    def list_shards(self, inputs):
        specs = []
        step = self.options.rows_per_shard
        for path in expand_inputs(inputs):
            name = path.name
            if path.is_dir():
                for split, rows in _dataset_splits(path, self.options.split):
                    specs += [
                        {
                            "path": str(path),
                            "format": "datasets",
                            "split": split,
                            "start": a,
                            "stop": min(rows, a + step),
                        }
                        for a in range(0, max(rows, 1), step)
                    ]
            elif name.endswith(PARQUET_SUFFIXES):
                rows = pq.ParquetFile(path).metadata.num_rows
                specs += [
                    {"path": str(path), "format": "parquet", "start": a, "stop": min(rows, a + step)}
                    for a in range(0, max(rows, 1), step)
                ]
            elif name.endswith(".gz"):
                specs.append({"path": str(path), "format": "jsonl", "start": 0, "stop": -1})
            else:
                size = path.stat().st_size
                bstep = self.options.bytes_per_shard
                specs += [
                    {"path": str(path), "format": "jsonl", "start": a, "stop": a + bstep}
                    for a in range(0, max(size, 1), bstep)
                ]
        return specs

    def read(self, spec, shard: Shard):
        path = Path(spec["path"])
        if spec["format"] == "jsonl":
            table = self._read_jsonl(path, spec, shard)
        else:
            if spec["format"] == "parquet":
                table = pq.read_table(path).slice(spec["start"], spec["stop"] - spec["start"])
            else:
                table = _dataset(path, spec["split"]).with_format("arrow")[spec["start"] : spec["stop"]]
            if "id" not in table.column_names:
                origin = f"{path.name}/{spec['split']}" if spec.get("split") else path.name
                ids = [content_id(origin, spec["start"] + i) for i in range(table.num_rows)]
                table = table.append_column("id", pa.array(ids, pa.string()))
        if self.options.messages_column:
            table = self._chat_columns(table, shard)
        return table

    def _read_jsonl(self, path: Path, spec: dict, shard: Shard) -> pa.Table:
        rows = []
        for offset, line in _lines(path, spec["start"], spec["stop"]):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                shard.drop(
                    {"id": f"{path.name}@{offset}", "line": line[:500].decode("utf-8", "replace")}, "malformed_jsonl"
                )
                continue
            if not isinstance(row, dict):
                shard.drop({"id": f"{path.name}@{offset}"}, "not_an_object")
                continue
            row.setdefault("id", content_id(line))
            rows.append(row)
        # Arrow takes the columns of the first row only: a key that appears later must not be lost.
        names = list(dict.fromkeys(k for r in rows for k in r))
        if any(len(r) != len(names) for r in rows):
            rows = [{k: r.get(k) for k in names} for r in rows]
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(
                f"{path}: rows do not share one schema ({exc}); convert the file to Parquet first"
            ) from None

    def _chat_columns(self, table: pa.Table, shard: Shard) -> pa.Table:
        """`instruction` and `response` from the conversation where the row has none;
        a row with no user turn answered by the assistant is a counted skip."""
        col = self.options.messages_column
        if table.num_rows == 0 or col not in table.column_names:
            missing = [c for c in ("instruction", "response") if c not in table.column_names]
            if table.num_rows and missing:
                raise ValueError(
                    f"read_records: messages_column {col!r} is not a column of the input (columns: {', '.join(table.column_names)})"
                )
            for name in missing:
                table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
            return table
        keep, instructions, responses = [], [], []
        has_i, has_r = "instruction" in table.column_names, "response" in table.column_names
        given_i = table.column("instruction").to_pylist() if has_i else None
        given_r = table.column("response").to_pylist() if has_r else None
        for i, turns in enumerate(table.column(col).to_pylist()):
            pair = _first_exchange(turns)
            if pair is None:
                shard.drop(
                    {"id": table.column("id")[i].as_py(), col: json.dumps(turns, default=str)[:500]},
                    "no_user_assistant_exchange",
                )
                continue
            if sum(1 for t in turns if isinstance(t, dict) and t.get("role") == "user") > 1:
                shard.count("read_records.multi_turn_first_exchange")
            keep.append(i)
            instructions.append(given_i[i] if has_i and given_i[i] is not None else pair[0])
            responses.append(given_r[i] if has_r and given_r[i] is not None else pair[1])
        table = table.take(pa.array(keep, pa.int64()))
        for name, values, has in (("instruction", instructions, has_i), ("response", responses, has_r)):
            array = pa.array(values, pa.string())
            table = (
                table.set_column(table.column_names.index(name), name, array)
                if has
                else table.append_column(name, array)
            )
        return table

    def schema(self):
        fields = [("id", pa.string())]
        if self.options.messages_column:
            fields += [("instruction", pa.string()), ("response", pa.string())]
        return pa.schema(fields)


def _first_exchange(turns) -> tuple[str, str] | None:
    """(first user turn, the assistant turn that answers it), or None."""
    if not isinstance(turns, list):
        return None
    for i, turn in enumerate(turns):
        if isinstance(turn, dict) and turn.get("role") == "user" and turn.get("content"):
            for later in turns[i + 1 :]:
                if isinstance(later, dict) and later.get("role") == "assistant" and later.get("content"):
                    return str(turn["content"]), str(later["content"])
                if isinstance(later, dict) and later.get("role") == "user":
                    return None  # an unanswered user turn: the pair would be made up
            return None
    return None


def _lines(path: Path, start: int, stop: int):
    """(byte offset, line) of lines that start in [start, stop); stop -1 = to the end."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        offset = 0
        if start > 0:
            fh.seek(start - 1)
            offset = start - 1
            # The line straddling `start` belongs to the previous shard.
            skipped = fh.readline()
            offset += len(skipped)
        while stop < 0 or offset < stop:
            line = fh.readline()
            if not line:
                break
            yield offset, line
            offset += len(line)


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _dataset(path: Path, split: str | None):
    import datasets

    ds = datasets.load_from_disk(str(path))
    return ds[split] if split is not None else ds


def _dataset_splits(path: Path, wanted: list[str]) -> list[tuple[str | None, int]]:
    ds = _dataset(path, None)
    if not hasattr(ds, "keys"):  # a single Dataset
        return [(None, ds.num_rows)]
    unknown = [s for s in wanted if s not in ds]
    if unknown:
        raise ValueError(f"{path}: no split {', '.join(unknown)} (splits: {', '.join(ds.keys())})")
    return [(name, ds[name].num_rows) for name in ds if not wanted or name in wanted]


def expand_inputs(inputs) -> list[Path]:
    """Saved `datasets` folders named as inputs, and the JSONL/Parquet files among the
    rest (expanded like `read` does); a file named explicitly in another format is an
    error rather than a silent skip."""
    from synth.ingest.read import expand_inputs as expand

    suffixes = JSONL_SUFFIXES + PARQUET_SUFFIXES
    folders, rest = [], []
    for item in map(str, inputs):
        if os.path.isdir(item) and is_saved_dataset(Path(item)):
            folders.append(Path(os.path.abspath(item)))
            continue
        if not any(c in item for c in "*?[") and os.path.isfile(item) and not item.endswith(suffixes):
            raise ValueError(
                f"{item}: inputs must be Parquet or JSONL files or saved datasets folders ({', '.join(suffixes)})"
            )
        rest.append(item)
    files = [Path(p) for p in expand(rest) if p.endswith(suffixes)] if rest else []
    return sorted(set(folders)) + files
