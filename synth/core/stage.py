"""The stage contract every piece of a pipeline follows.

A stage does one thing to one shard (an Arrow table) at a time. It declares the
columns it reads and writes so a pipeline can be checked before it runs, and it
reports everything it drops through `Shard.drop`, the single mechanism behind the
ledger and the audit. Four shapes cover the data flow:

- `Stage`: table in, table out (transforms, splitters, LLM calls).
- `Filter`: computes scores as columns (kept, so thresholds can be re-tuned
  without recomputing), then decides keep or (drop, reason) per row; the framework
  does the counting.
- `SourceStage`: creates records from inputs (files, a graph); it also decides how
  the work is sharded.
- `GlobalStage`: needs a view over all shards (dedup): `summarize` each shard,
  `reduce` the summaries once into state, then `process` each shard with it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from synth.core.records import derive_seed, rng_for

log = logging.getLogger(__name__)


class StageOptions(BaseModel):
    """Base of every stage's options: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterOptions(StageOptions):
    # Score and keep everything: lets a team look at score columns and pick
    # thresholds before dropping anything.
    annotate_only: bool = False


@dataclass(frozen=True)
class Resources:
    """What one running copy of a stage needs, declared on the stage class; the
    executors place its work by it (instead of per-stage flags).

    `cpus`: cores one shard's work keeps busy (a Ray task reserves that many; the local
    process pool runs one shard per worker). `gpus`: GPUs one copy uses where the
    machine or cluster has them (an LLM engine takes one; on a CPU-only machine it
    runs on the CPU). `llm_engine`: the stage drives an LLM engine that lives for the
    whole run, so its shards run one at a time in the process that holds the engine
    (the driver locally, an engine actor on Ray) rather than in worker processes.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    llm_engine: bool = False


# What a stage that drives an LLM engine declares: one GPU where there is one.
LLM_ENGINE = Resources(cpus=1.0, gpus=1.0, llm_engine=True)


# The entry points the executor calls: each runs `setup` first (once), so a stage's
# own methods never need to.
_SETUP_FIRST = ("process", "score", "read", "summarize", "reduce")


def _after_setup(method):
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if not getattr(self, "_ready", False):
            self.ensure_setup()
        return method(self, *args, **kwargs)

    run.sets_up_first = True
    return run


@dataclass
class PipelineContext:
    """What every stage may know about the run it belongs to."""

    seed: int = 0
    run_dir: Path | None = None
    config_path: Path | None = None
    # Free-form settings a stage family shares (e.g. the LLM models file).
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RejectSample:
    reason: str
    record: dict
    scores: dict | None


class Shard:
    """Per-shard context handed to a stage: identity, seeds and the ledger hooks."""

    def __init__(
        self,
        stage_label: str,
        index: int,
        name: str,
        seed: int,
        reject_sample_per_reason: int = 20,
        state_dir: Path | None = None,
    ):
        self.stage_label = stage_label
        self.index = index
        self.name = name
        # One seed per (run seed, stage, shard): sources use it; per-record
        # choices should use `rng(record_id, purpose)` instead.
        self.seed = derive_seed(seed, stage_label, name)
        self.run_seed = seed
        self.state_dir = state_dir
        self.dropped: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.rejects: list[RejectSample] = []
        self._reject_limit = reject_sample_per_reason
        self._sampled: Counter[str] = Counter()
        # For the audit: (id, reason, input row, scores, record) of every dropped record, and
        # a filter's score columns over every record it saw (kept and dropped).
        self.dropped_scores: list[tuple] = []
        self.seen_scores: pa.Table | None = None
        self.dropped_table: pa.Table | None = None  # a filter's dropped rows, as columns

    def drop(self, record: dict, reason: str, scores: dict | None = None, row: int | None = None) -> None:
        """Count one dropped record under `reason` and keep it if the sample has room.
        `row` is its position in the stage's input shard, when known."""
        self.dropped[reason] += 1
        self.dropped_scores.append((record.get("id"), reason, row, scores, record))
        if self._sampled[reason] < self._reject_limit:
            self._sampled[reason] += 1
            self.rejects.append(RejectSample(reason, record, scores))

    def note(self, record: dict, reason: str, scores: dict | None = None) -> None:
        """Record a discarded by-product that is not itself a record of the shard
        (e.g. a failed evolution of an instruction that is kept): counted under
        `discarded.<reason>` and sampled with the rejects, without touching in/out."""
        self.counters[f"discarded.{reason}"] += 1
        key = f"discarded.{reason}"
        if self._sampled[key] < self._reject_limit:
            self._sampled[key] += 1
            self.rejects.append(RejectSample(key, record, scores))

    def count(self, key: str, n: int | float = 1) -> None:
        """Add to a free counter (cache hits, tokens, skipped inputs...)."""
        self.counters[key] += n

    def rng(self, *parts: str | int):
        """A random generator private to this run seed and the given parts."""
        return rng_for(self.run_seed, self.stage_label.split("-", 1)[-1], *parts)


class Stage:
    """Table in, table out. Subclasses set `type`, `Options` and the column sets."""

    type: ClassVar[str] = ""
    Options: ClassVar[type[StageOptions]] = StageOptions
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    removes: ClassVar[tuple[str, ...]] = ()
    # Written columns and their Arrow types, declared once: `writes`, `column_types()`
    # and a source's `schema()` follow from it.
    outputs: ClassVar[dict[str, pa.DataType]] = {}
    # True when out may exceed in (sources, splitters, generators): the ledger
    # then does not expect in == out + dropped.
    creates_records: ClassVar[bool] = False
    resources: ClassVar[Resources] = Resources()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "outputs" in cls.__dict__ and "writes" not in cls.__dict__:
            cls.writes = tuple(cls.outputs)
        for name in _SETUP_FIRST:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "sets_up_first", False):
                setattr(cls, name, _after_setup(method))

    def __init__(self, options: StageOptions, pipeline: PipelineContext | None = None):
        self.options = options
        self.pipeline = pipeline or PipelineContext()
        self._ready = False

    # -- declarations (override when they depend on options) -----------------
    def input_columns(self) -> Sequence[str]:
        return self.reads

    def output_columns(self) -> Sequence[str]:
        return self.writes

    def removed_columns(self) -> Sequence[str]:
        return self.removes

    def column_types(self) -> dict[str, pa.DataType]:
        """Arrow types of written columns, so empty or all-null shards keep a schema."""
        return dict(self.outputs)

    @classmethod
    def configured(cls, options: StageOptions) -> type[Stage]:
        """The class that runs these options: a type may hand a setting to another
        stage (`decontaminate` with `action: cut` runs the `decontaminate_cut` transform)."""
        return cls

    def external_state(self) -> str | None:
        """A digest of what decides this stage's output besides its options (model
        files, blocklists, benchmark files). It joins the stage's fingerprint, so a
        resumed run recomputes when such a file changes. None: the options say it all."""
        return None

    @property
    def parallel(self) -> bool:
        """Whether shards may run in worker processes (see `Resources.llm_engine`)."""
        return not self.resources.llm_engine

    # -- lifecycle -----------------------------------------------------------
    # setup -> process (per shard) ... -> teardown, once per process that runs the
    # stage. `process`, `score`, `read`, `summarize` and `reduce` run `setup` first
    # (see _SETUP_FIRST); the executors call `teardown` when the run ends.
    def setup(self) -> None:
        """Load models or indexes; called once per process before its first shard."""

    def teardown(self) -> None:
        """Release what `setup` or the work acquired (engines, servers, pools)."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def ensure_teardown(self) -> None:
        """`teardown` if the stage was set up; safe to call again."""
        if self._ready:
            self._ready = False
            self.teardown()

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        raise NotImplementedError


class Filter(Stage):
    """Computing a score and deciding on it are separate steps.

    `score` returns new columns for the whole shard (vectorise there); `decide`
    looks at one row (the columns the filter reads plus its scores) and returns
    None to keep it or a drop reason.
    """

    Options: ClassVar[type[StageOptions]] = FilterOptions

    def score(self, table: pa.Table, shard: Shard) -> dict[str, Sequence | pa.Array]:
        return {}

    def decide(self, row: dict) -> str | None:
        raise NotImplementedError

    def decide_columns(self) -> Sequence[str]:
        """Columns `decide` also sees when the table has them, without requiring
        them (e.g. `language`, for per-language thresholds)."""
        return ()

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        scores = self.score(table, shard)
        table = add_columns(table, scores, self.column_types())
        shard.seen_scores = table.select(list(scores))
        if table.num_rows == 0:
            return table
        looked_at = [
            c
            for c in dict.fromkeys([*self.input_columns(), *self.decide_columns(), *scores])
            if c in table.column_names
        ]
        rows = table.select(looked_at).to_pylist()
        keep = [True] * table.num_rows
        annotate_only = getattr(self.options, "annotate_only", False)
        for i, row in enumerate(rows):
            reason = self.decide(row)
            if reason is None:
                continue
            if annotate_only:
                shard.count(f"would_drop.{reason}")
                continue
            keep[i] = False
            record = table.slice(i, 1).to_pylist()[0]
            shard.drop(record, reason, {k: row[k] for k in scores}, row=i)
        if all(keep):
            return table
        mask = pa.array(keep, type=pa.bool_())
        shard.dropped_table = table.filter(pc.invert(mask))
        write_removed_rows(self.options, shard.dropped_table, shard)
        return table.filter(mask)


class SourceStage(Stage):
    """Creates records. It alone decides the shards, deterministically."""

    creates_records: ClassVar[bool] = True

    def list_shards(self, inputs: Sequence[str]) -> list[dict]:
        """One JSON-able spec per shard, in a stable order."""
        raise NotImplementedError

    def read(self, spec: dict, shard: Shard) -> Iterable[dict] | pa.Table:
        raise NotImplementedError

    def schema(self) -> pa.Schema | None:
        """Schema of created records; needed so an empty shard still has columns."""
        return pa.schema(list(self.outputs.items())) if self.outputs else None


class GlobalStage(Stage):
    """A stage that must see every shard before it can decide on any (dedup).

    The executor runs `summarize` per shard (parallel, resumable), `reduce` once
    over all summaries into `state_dir`, then `process` per shard with
    `shard.state_dir` pointing at that state.
    """

    def summarize(self, table: pa.Table, shard: Shard) -> pa.Table:
        raise NotImplementedError

    def reduce(self, summaries: list[Path], state_dir: Path) -> None:
        raise NotImplementedError


def files_digest(paths: Iterable[Path | str], names_only: bool = False) -> str:
    """sha256 over the paths and contents of `paths` (a missing file counts as missing),
    for `Stage.external_state`. Contents, not mtimes, so a copied run directory resumes;
    `names_only` hashes file names instead of full paths (caches under a home folder)."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        h.update((path.name if names_only else str(path)).encode() + b"\0")
        if not path.is_file():
            h.update(b"missing\0")
            continue
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def teardown_stages(stages: Iterable[Stage]) -> None:
    """Tear down each stage that was set up; one failing does not stop the others."""
    for stage in stages:
        try:
            stage.ensure_teardown()
        except Exception as e:  # noqa: BLE001 - the run's results are already committed
            log.warning("teardown of stage %s: %s: %s", stage.type or type(stage).__name__, type(e).__name__, e)


def write_removed_rows(options: StageOptions, removed: pa.Table, shard: Shard) -> None:
    """Every removed row, in full, to the options' `removed_rows_dir` when a filter
    has one (one parquet per shard, so a rerun rewrites rather than appends)."""
    folder = getattr(options, "removed_rows_dir", None)
    if folder and removed.num_rows:
        from synth.core.rundir import atomic_write_parquet

        atomic_write_parquet(Path(folder) / f"{shard.name}.parquet", removed)


def rows_to_table(rows: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    """Build a table from rows; with a schema, empty input still has columns."""
    if schema is not None:
        return pa.Table.from_pylist(rows, schema=schema)
    return pa.Table.from_pylist(rows)


def add_columns(
    table: pa.Table, columns: dict[str, Sequence | pa.Array], types: dict[str, pa.DataType] | None = None
) -> pa.Table:
    """Append or replace columns, typed by `types` where given."""
    types = types or {}
    for name, values in columns.items():
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=types.get(name))
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
