"""`synth decontaminate INPUT... --benchmark FILE... --output RUN`.

A two-stage pipeline (read records, decontaminate) run by the ordinary executor,
so it resumes like any run and writes the same layout: kept rows in
`RUN/output/*.parquet`, every removed row in full under
`RUN/rejected/01-decontaminate/removed/` (with `decontam_match`: benchmark, item
id and the matching n-gram), and the usual bounded reject sample and ledger.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from pydantic import Field

from synth.core.records import content_id
from synth.core.stage import Shard, SourceStage, StageOptions

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
REJECT_SAMPLE = 10_000  # per shard and reason: with shards of <= 5,000 rows the sample is complete


class ReadRecordsOptions(StageOptions):
    rows_per_shard: int = Field(5000, ge=1, le=REJECT_SAMPLE)
    bytes_per_shard: int = Field(64 << 20, ge=1 << 16, description="Plain JSONL files are split at line starts near this size.")
    columns: list[str] = Field(default_factory=list, description="Columns the records are expected to have (declared to later stages).")


class ReadRecords(SourceStage):
    """Rows of Parquet and JSONL files, as they are (an `id` is added when missing)."""

    type = "read_records"
    Options = ReadRecordsOptions
    writes = ("id",)

    def output_columns(self):
        return ("id", *self.options.columns)

    def list_shards(self, inputs):
        specs = []
        for path in expand_inputs(inputs):
            name = path.name
            if name.endswith(PARQUET_SUFFIXES):
                rows = pq.ParquetFile(path).metadata.num_rows
                step = self.options.rows_per_shard
                specs += [{"path": str(path), "format": "parquet", "start": a, "stop": min(rows, a + step)} for a in range(0, max(rows, 1), step)]
            elif name.endswith(".gz"):
                specs.append({"path": str(path), "format": "jsonl", "start": 0, "stop": -1})
            else:
                size = path.stat().st_size
                step = self.options.bytes_per_shard
                specs += [{"path": str(path), "format": "jsonl", "start": a, "stop": a + step} for a in range(0, max(size, 1), step)]
        return specs

    def read(self, spec, shard: Shard):
        path = Path(spec["path"])
        if spec["format"] == "parquet":
            table = pq.read_table(path).slice(spec["start"], spec["stop"] - spec["start"])
            if "id" not in table.column_names:
                ids = [content_id(path.name, spec["start"] + i) for i in range(table.num_rows)]
                table = table.append_column("id", pa.array(ids, pa.string()))
            return table
        return self._read_jsonl(path, spec, shard)

    def _read_jsonl(self, path: Path, spec: dict, shard: Shard):
        rows = []
        for offset, line in _lines(path, spec["start"], spec["stop"]):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                shard.drop({"id": f"{path.name}@{offset}", "line": line[:500].decode("utf-8", "replace")}, "malformed_jsonl")
                continue
            if not isinstance(row, dict):
                shard.drop({"id": f"{path.name}@{offset}"}, "not_an_object")
                continue
            row.setdefault("id", content_id(line))
            rows.append(row)
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{path}: rows do not share one schema ({exc}); convert the file to Parquet first") from None

    def schema(self):
        return pa.schema([("id", pa.string())])


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


def expand_inputs(inputs) -> list[Path]:
    """The JSONL/Parquet files among the inputs (expanded like `read` does); a file
    named explicitly in another format is an error rather than a silent skip."""
    from synth.ingest.read import expand_inputs as expand

    suffixes = JSONL_SUFFIXES + PARQUET_SUFFIXES
    for item in map(str, inputs):
        if not any(c in item for c in "*?[") and os.path.isfile(item) and not item.endswith(suffixes):
            raise ValueError(f"{item}: inputs must be Parquet or JSONL ({', '.join(suffixes)})")
    return [Path(p) for p in expand([str(i) for i in inputs]) if p.endswith(suffixes)]


def run_decontaminate(
    inputs: list[Path],
    benchmarks: list[str],
    output: Path,
    columns: list[str] | None = None,
    action: str = "drop",
    n: int = 13,
    cut_chars: int = 200,
    fields: list[str] | None = None,
    workers: int = 1,
    cache_dir: str | None = None,
    say=lambda _msg: None,
) -> dict:
    """Run the decontamination pipeline; returns rows in/kept/removed and matches per benchmark."""
    from synth.core.config import build_pipeline
    from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
    from synth.core.ledger import stage_totals
    from synth.core.rundir import RunDir

    output = Path(output).resolve()
    label = "01-decontaminate"
    stage = {
        "type": "decontaminate",
        "benchmarks": [_abs_spec(b) for b in benchmarks],
        "columns": columns or ["text"],
        "action": action,
        "n": n,
        "cut_chars": cut_chars,
        "removed_rows_dir": str(output / "rejected" / label / "removed"),
    }
    if fields:
        stage["fields"] = fields
    if cache_dir:
        stage["cache_dir"] = cache_dir
    raw = {
        "name": "decontaminate",
        "reject_sample_per_reason": REJECT_SAMPLE,
        "stages": [{"type": "synth.filters.decontaminate_cli:ReadRecords", "columns": stage["columns"]}, stage],
    }
    inputs_s = [str(Path(p).resolve()) if not any(c in str(p) for c in "*?[") else str(p) for p in inputs]
    expand_inputs(inputs_s)  # a missing or unsupported input is one clear error, before any work
    pipe = build_pipeline(raw)
    result = run_pipeline(pipe, PipelineSource(raw=raw, path=None, seed=pipe.seed), output, inputs=inputs_s, executor=LocalExecutor(workers), say=say)
    totals = stage_totals(RunDir(output), label)
    source = stage_totals(RunDir(output), "00-read_records")
    matched = Counter({k.split(".", 1)[1]: v for k, v in totals["counters"].items() if k.startswith("matched.")})
    return {
        "rows": totals["in"],
        "kept": totals["out"],
        "removed": sum(totals["dropped"].values()),
        "unreadable": sum(source["dropped"].values()),
        "matched": dict(sorted(matched.items())),
        "output": [str(p) for p in result.output],
    }


def _abs_spec(spec: str) -> str:
    name, sep, path = spec.partition("=")
    if sep and not os.path.exists(spec):
        return f"{name}={Path(path).resolve()}"
    return str(Path(spec).resolve())


def decontaminate(
    inputs: list[Path] = typer.Argument(..., help="Parquet or JSONL files, folders or globs."),
    benchmark: list[str] = typer.Option(..., "--benchmark", "-b", help="Benchmark file or folder (JSONL, JSONL.gz, CSV), optionally NAME=PATH; repeatable."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory: kept rows in RUN/output, removed rows in RUN/rejected."),
    column: Optional[list[str]] = typer.Option(None, "--column", "-c", help="Column(s) to check (default text); message lists are checked per message."),
    action: str = typer.Option("drop", help="drop: remove rows with a hit; cut: remove the text around each hit."),
    ngram: int = typer.Option(13, help="n-gram length in normalised tokens (GPT-3: 13)."),
    cut_chars: int = typer.Option(200, help="With --action cut: characters removed on each side of a hit."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Benchmark fields with the item text (default question, prompt, problem)."),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = one per core)."),
) -> None:
    """Remove rows that overlap evaluation benchmarks (GPT-3's 13-gram rule)."""
    from rich.console import Console

    console = Console(stderr=True)
    if action not in ("drop", "cut"):
        console.print(f"[bold red]error:[/] --action must be drop or cut, not {action!r}")
        raise typer.Exit(2)
    try:
        summary = run_decontaminate(
            inputs, benchmark, output, column, action, ngram, cut_chars, field, workers or (os.cpu_count() or 1), say=lambda m: console.print(m, highlight=False)
        )
    except Exception as exc:  # noqa: BLE001 - one clear line; finished shards are kept for the rerun
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for bench, rows in summary["matched"].items():
        print(f"{bench}: {rows:,} rows matched")
    verb = "removed" if action == "drop" else "removed (cut emptied them)"
    print(f"{summary['rows']:,} rows checked, {summary['kept']:,} kept, {summary['removed']:,} {verb}; kept rows in {Path(output) / 'output'}")
