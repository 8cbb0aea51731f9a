"""The run directory: where every stage's shards, statistics and rejects live.

    RUN/run.json                          pipeline snapshot, inputs, stage fingerprints
    RUN/stages/NN-name/part-XXXXX.parquet a stage's output for one shard
    RUN/stages/NN-name/part-XXXXX.stats.json   its ledger entry
    RUN/stages/NN-name/_summaries/, _state/    global stages (dedup) only
    RUN/rejected/NN-name/part-XXXXX.parquet    a bounded sample of dropped records
    RUN/rejected/NN-name/scores/               scores of dropped records (see synth.audit.collect)
    (a completed fused run merges these per stage: synth.audit.compact)
    RUN/output/part-XXXXX.parquet         the final stage's shards: the run's output
    RUN/logs/                             errors and engine logs

A shard is done exactly when its parquet file exists: it is written under a
temporary name and renamed into place (atomic on POSIX), after its statistics and
rejects. A kill at any moment therefore loses only shards in flight.

Consecutive shard-by-shard stages are fused (see synth.core.executor): only the
group's last stage writes parquet. A stage inside a group writes its statistics,
profile and rejects as usual plus `part-XXXXX.fused.json`, naming the stage whose
parquet commits the group; it is done exactly when that parquet exists. A kill
before the group's commit leaves the whole group undone for that shard. A global
stage's `_summaries/*.parquet` are deleted once `_state.done` is written (their
`.counters.json` stay), and once the run completes, the shards written only as a
global stage's input are deleted too, leaving `part-XXXXX.released.json` (done; a
rerun that needs them recomputes them). `--keep-intermediate` keeps everything.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode())


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    writer = AtomicParquetWriter(path, table.schema)
    writer.write(table)
    writer.commit()


class AtomicParquetWriter:
    """A parquet file written table by table (a row group each) under a temporary name,
    renamed into place by `commit`: memory holds one table, not the whole file, and a
    kill before the commit leaves no file under the final name."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._writer = pq.ParquetWriter(self.tmp, schema, compression=PARQUET_COMPRESSION)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def commit(self) -> None:
        self._writer.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- layout ----------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / "run.json"

    def stage_dir(self, label: str) -> Path:
        return self.root / "stages" / label

    def part(self, label: str, name: str) -> Path:
        return self.stage_dir(label) / f"{name}.parquet"

    def stats(self, label: str, name: str) -> Path:
        return self.stage_dir(label) / f"{name}.stats.json"

    def summary(self, label: str, name: str) -> Path:
        return self.stage_dir(label) / "_summaries" / f"{name}.parquet"

    def state_dir(self, label: str) -> Path:
        return self.stage_dir(label) / "_state"

    def state_done(self, label: str) -> Path:
        return self.stage_dir(label) / "_state.done"

    def shards_file(self, label: str) -> Path:
        return self.stage_dir(label) / "_shards.json"

    def stage_meta(self, label: str) -> Path:
        return self.stage_dir(label) / "_stage.json"

    def rejected(self, label: str, name: str) -> Path:
        return self.root / "rejected" / label / f"{name}.parquet"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def fused_marker(self, label: str, name: str) -> Path:
        return self.stage_dir(label) / f"{name}.fused.json"

    def released_marker(self, label: str, name: str) -> Path:
        return self.stage_dir(label) / f"{name}.released.json"

    def is_done(self, label: str, name: str) -> bool:
        if self.part(label, name).exists() or self.released_marker(label, name).exists():
            return True
        marker = self.fused_marker(label, name)
        if not marker.exists():
            return False
        try:
            committed_by = read_json(marker)["committed_by"]
        except (ValueError, KeyError, OSError):
            return False
        return self.part(committed_by, name).exists() or self.released_marker(committed_by, name).exists()

    def is_materialized(self, label: str, name: str) -> bool:
        """Done with its parquet on disk (not only through a fused group's commit)."""
        return self.part(label, name).exists()

    def release(self, label: str, name: str) -> None:
        """Delete a finished shard no later step reads (a completed run's input of a
        global stage): marked done first, so a kill in between loses nothing; whatever
        needs it again recomputes it (synth.core.recompute)."""
        if self.part(label, name).exists():
            atomic_write_json(self.released_marker(label, name), {"released": True})
            self.part(label, name).unlink()

    # -- housekeeping ------------------------------------------------------------
    def lock(self):
        """Hold an exclusive lock so two runs never write the same directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / ".lock", "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RuntimeError(f"{self.root}: another synth run is writing this directory") from None
        return fh

    def clean_temporaries(self) -> int:
        """Remove files left half-written by a killed run."""
        removed = 0
        for tmp in self.root.rglob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    def invalidate_from(self, labels: list[str]) -> None:
        for label in labels:
            shutil.rmtree(self.stage_dir(label), ignore_errors=True)
            shutil.rmtree(self.root / "rejected" / label, ignore_errors=True)
        shutil.rmtree(self.output_dir, ignore_errors=True)

    def stage_labels_on_disk(self) -> list[str]:
        base = self.root / "stages"
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []

    def publish_output(self, label: str, names: list[str]) -> list[Path]:
        """Expose the final stage's non-empty shards as RUN/output (hard links, no copy).

        Empty shards are left out: `datasets` refuses a zero-row parquet file
        ("BatchSize must be greater than 0"), and they carry no records anyway."""
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        names = [n for n in names if pq.ParquetFile(self.part(label, n)).metadata.num_rows > 0]
        wanted = {f"{n}.parquet" for n in names}
        for stale in out.glob("*.parquet"):
            if stale.name not in wanted:
                stale.unlink()
        paths = []
        for name in names:
            src = self.part(label, name)
            dst = out / f"{name}.parquet"
            tmp = out / f".{name}.parquet.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            paths.append(dst)
        return paths
