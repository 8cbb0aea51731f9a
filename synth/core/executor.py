"""Running a pipeline: stage by stage, shard by shard, resumable at any point.

The driver decides what is left to do by looking at the run directory only, so
re-running the same command after a crash, a Ctrl-C or a kill -9 continues where
the last committed shard left off and ends with the same output. Shard work is a
plain function of (pipeline, run directory, stage, shard), which is what lets a
process pool here and Ray on a cluster run the same YAML.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth.audit.collect import write_shard_statistics
from synth.audit.compact import compact_run
from synth.core.config import Pipeline, StageEntry, build_pipeline
from synth.core.errors import InputError
from synth.core.ledger import stage_totals, write_shard_ledger
from synth.core.recompute import stage_table
from synth.core.rundir import RunDir, atomic_write_json, atomic_write_parquet, read_json, shard_name
from synth.core.scratch import clean_stale_scratch, die_with_parent
from synth.core.stage import GlobalStage, Shard, SourceStage, Timer, rows_to_table, teardown_stages


class StageFailed(RuntimeError):
    """Some shards of a stage raised; finished shards are kept for the rerun."""


@dataclass(frozen=True)
class PipelineSource:
    """Everything a worker needs to rebuild the pipeline (stage objects are not shipped)."""

    raw: dict
    path: str | None
    seed: int
    overrides: dict = field(default_factory=dict)
    # The pipeline's fingerprints at the run's start: a process that outlives a run
    # (a notebook, a Ray worker) rebuilds its stages when a file they read changed.
    fingerprint: str = ""

    def build(self) -> Pipeline:
        return build_pipeline(
            self.raw, path=Path(self.path) if self.path else None, seed=self.seed, overrides=self.overrides or None
        )


@dataclass(frozen=True)
class ShardTask:
    source: PipelineSource
    run_dir: str
    stage_index: int
    shard_index: int
    phase: str  # "process" or "summarize"
    spec: dict | None = None  # the source stage's shard spec
    last_index: int | None = None  # a fused group: stages stage_index..last_index, only the last written


# One built pipeline per config in this process, with the fingerprint it was built for.
_PIPELINES: dict[int, tuple[str, Pipeline]] = {}


def _pipeline(source: PipelineSource) -> Pipeline:
    key = hash((repr(source.raw), source.path, source.seed, repr(source.overrides)))
    cached = _PIPELINES.get(key)
    if cached is None or cached[0] != source.fingerprint:
        if cached is not None:  # a file its stages read changed since (a reused Ray worker)
            teardown_stages(e.stage for e in cached[1].stages)
        cached = _PIPELINES[key] = (source.fingerprint, source.build())
    return cached[1]


def teardown_pipelines() -> None:
    """Tear down the stages this process ran (engines closed, servers stopped) and
    forget their pipelines: called when a process's share of the run ends."""
    pipelines = [pipeline for _, pipeline in _PIPELINES.values()]
    _PIPELINES.clear()
    for pipeline in pipelines:
        teardown_stages(e.stage for e in pipeline.stages)


def _cast_declared(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    for name, typ in types.items():
        if name in table.column_names and table.schema.field(name).type != typ:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(i).cast(typ))
    return table


def run_shard(task: ShardTask) -> dict:
    """Do one shard of one stage (or of a fused group of stages) and commit it.
    Safe to run twice: the second is a no-op."""
    pipeline = _pipeline(task.source)
    pipeline.bind_run_dir(Path(task.run_dir))
    run = RunDir(task.run_dir)
    name = shard_name(task.shard_index)
    last = task.stage_index if task.last_index is None else task.last_index
    if task.phase == "summarize":
        return _summarize_shard(pipeline, run, task, name)
    committer = pipeline.stages[last].label
    if run.part(committer, name).exists():
        return {"stage": committer, "shard": name, "skipped": True}
    table: pa.Table | None = None
    per_stage: list[dict] = []
    for index in range(task.stage_index, last + 1):
        entry = pipeline.stages[index]
        try:
            table, shard, n_in, seconds = _process_one(pipeline, run, task, entry, name, table)
        except Exception as exc:
            try:
                exc.synth_stage = entry.label  # which stage of a fused group failed (kept when pickled)
            except AttributeError:
                pass
            raise
        upstream_label = pipeline.stages[index - 1].label if index else None
        stage = entry.stage
        write_shard_statistics(
            run,
            entry.label,
            shard,
            table,
            stage.output_columns(),
            upstream_label,
            stage.creates_records,
            all_rows=needs_all_scores(pipeline, index, task.stage_index, last),
            decide_inputs=[*stage.input_columns(), *getattr(stage, "decide_columns", tuple)()],
        )
        stats = write_shard_ledger(run, entry.label, shard, n_in, table.num_rows, seconds, stage.creates_records)
        if index < last:
            # Not written: done when the group's last stage commits (see RunDir.is_done).
            atomic_write_json(run.fused_marker(entry.label, name), {"committed_by": committer})
        per_stage.append(stats)
    atomic_write_parquet(run.part(committer, name), table)  # the commit point of the whole group
    return {**per_stage[-1], "stages": per_stage}


def _summarize_shard(pipeline: Pipeline, run: RunDir, task: ShardTask, name: str) -> dict:
    """Summarize one shard for the global stage at `last_index` (or `stage_index`). When
    that stage is fused after other global stages, their `process` is recomputed on the
    way (a cheap lookup in their state) instead of reading a written output."""
    last = task.stage_index if task.last_index is None else task.last_index
    entry = pipeline.stages[last]
    target = run.summary(entry.label, name)
    if target.exists():
        return {"stage": entry.label, "shard": name, "skipped": True}
    table = stage_table(pipeline, run, task.stage_index - 1, name)  # recomputed when a finished run released it
    n_in = table.num_rows
    for index in range(task.stage_index, last):
        table = _process_one(pipeline, run, task, pipeline.stages[index], name, table)[
            0
        ]  # its ledger is written by the process pass
    stage = entry.stage
    stage.ensure_setup()
    shard = Shard(
        entry.label,
        task.shard_index,
        name,
        pipeline.seed,
        pipeline.reject_sample_per_reason,
        run.state_dir(entry.label),
    )
    summary = stage.summarize(table, shard)
    if shard.counters:  # what summarize counted joins the stage's counters
        atomic_write_json(target.with_suffix(".counters.json"), dict(shard.counters))
    atomic_write_parquet(target, summary)
    return {"stage": entry.label, "shard": name, "in": n_in, "summarized": True}


def _process_one(
    pipeline: Pipeline, run: RunDir, task: ShardTask, entry: StageEntry, name: str, table: pa.Table | None
) -> tuple[pa.Table, Shard, int, float]:
    """One stage over one shard; `table` is the previous stage's output when fused, else read from disk."""
    stage = entry.stage
    stage.ensure_setup()
    state_dir = run.state_dir(entry.label) if isinstance(stage, GlobalStage) else None
    shard = Shard(entry.label, task.shard_index, name, pipeline.seed, pipeline.reject_sample_per_reason, state_dir)
    with Timer() as timer:
        if isinstance(stage, SourceStage):
            produced = stage.read(task.spec or {}, shard)
            table = produced if isinstance(produced, pa.Table) else rows_to_table(list(produced), stage.schema())
            n_in = table.num_rows + sum(shard.dropped.values())
        else:
            if table is None:
                table = stage_table(pipeline, run, entry.index - 1, name)
            n_in = table.num_rows
            table = stage.process(table, shard)
        removed = [c for c in stage.removed_columns() if c in table.column_names]
        if removed:
            table = table.drop_columns(removed)
        table = _cast_declared(table, stage.column_types())
    return table, shard, n_in, timer.seconds


def fusion_groups(pipeline: Pipeline, keep_intermediate: bool = False) -> list[list[int]]:
    """Consecutive stages run as one task per shard, writing only the last one's output.

    A group ends where output must exist on disk: the final stage, before a global
    stage (its summarize pass reads the shards), at `materialize: true`, and around
    stages that do not run in parallel workers (LLM stages, which drive an engine in
    the main process or an engine actor: fusing CPU stages into them would
    serialise those, and their request cache already makes a rerun cheap)."""
    groups: list[list[int]] = []
    current: list[int] = []
    stages = pipeline.stages
    for i, entry in enumerate(stages):
        current.append(i)
        nxt = stages[i + 1] if i + 1 < len(stages) else None
        if (
            keep_intermediate
            or entry.materialize
            or nxt is None
            # global stages fuse with each other (dedup_exact then dedup_minhash): their
            # summarize pass recomputes the earlier ones' cheap process instead of reading it
            or (
                isinstance(nxt.stage, GlobalStage)
                and not all(isinstance(stages[j].stage, GlobalStage) for j in current)
            )
            or not entry.stage.parallel
            or not nxt.stage.parallel
        ):
            groups.append(current)
            current = []
    return groups


# -- executors -------------------------------------------------------------------


def _worker_init() -> None:
    # A worker dies with the run: after a kill -9 of the driver, no worker lives on.
    die_with_parent()
    # Each worker is one core's worth of work: stop numeric libraries from
    # spawning a thread per core each and thrashing.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # Stages torn down when the pool shuts the worker down (multiprocessing runs its
    # finalizers on a worker's clean exit; atexit hooks do not run there).
    from multiprocessing import util

    util.Finalize(None, teardown_pipelines, exitpriority=10)


class LocalExecutor:
    """Shards in parallel worker processes on this machine."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: cf.ProcessPoolExecutor | None = None

    def map(
        self, tasks: list[ShardTask], parallel: bool = True
    ) -> Iterator[tuple[ShardTask, dict | None, BaseException | None, str]]:
        if not parallel or self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                try:
                    yield task, run_shard(task), None, ""
                except Exception as exc:  # noqa: BLE001 - reported per shard, the run goes on
                    yield task, None, exc, traceback.format_exc()
            return
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init)
        futures = {self._pool.submit(run_shard, t): t for t in tasks}
        for fut in cf.as_completed(futures):
            task = futures[fut]
            try:
                yield task, fut.result(), None, ""
            except Exception as exc:  # noqa: BLE001
                yield task, None, exc, "".join(traceback.format_exception(exc))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        teardown_pipelines()  # the stages that ran in this process


class RayExecutor:
    """The same shard tasks on Ray (see synth.core.ray_engines): plain stages as Ray
    tasks, at most `max_in_flight` submitted at once; LLM stages on engine actors
    that keep their engines up for the whole run (one per GPU, else `engine_actors`
    on CPU). The run directory must be on storage every node sees (checked)."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_task: float = 1.0,
        init_kwargs: dict | None = None,
        engine_actors: int | None = None,
        max_in_flight: int | None = None,
    ):
        import ray

        from synth.core.ray_engines import RayRunner, connect

        self.ray = ray
        connect(ray, address, init_kwargs)
        self.runner = RayRunner(
            ray,
            run_shard,
            num_cpus_per_task=num_cpus_per_task,
            engine_actors=engine_actors,
            max_in_flight=max_in_flight,
        )

    def map(
        self, tasks: list[ShardTask], parallel: bool = True
    ) -> Iterator[tuple[ShardTask, dict | None, BaseException | None, str]]:
        yield from self.runner.map(tasks, parallel)

    def close(self) -> None:
        self.runner.close()
        teardown_pipelines()  # stages that ran on the driver


# -- the driver ------------------------------------------------------------------

ProgressFactory = Callable[[StageEntry, int, int], Any]


@dataclass
class RunResult:
    run_dir: Path
    output: list[Path]
    stages: list[dict]
    invalidated: list[str]


def _plan_shards(pipeline: Pipeline, inputs: list[str]) -> list[dict]:
    source = pipeline.stages[0].stage
    assert isinstance(source, SourceStage)
    specs = source.list_shards(inputs)
    if not specs:
        raise InputError("no input to read: the inputs matched no files")
    return specs


def _invalidate_changed(run: RunDir, pipeline: Pipeline, prints: list[str], say: Callable[[str], None]) -> list[str]:
    """Drop results of any stage whose config (or anything upstream) changed."""
    labels = [e.label for e in pipeline.stages]
    on_disk = run.stage_labels_on_disk()
    first_changed = None
    for i, entry in enumerate(pipeline.stages):
        meta_path = run.stage_meta(entry.label)
        if meta_path.exists() and read_json(meta_path).get("fingerprint") != prints[i]:
            first_changed = i
            break
        if not meta_path.exists() and entry.label in on_disk:
            first_changed = i
            break
    stale = [label for label in on_disk if label not in labels]
    if first_changed is None and not stale:
        return []
    doomed = stale + (labels[first_changed:] if first_changed is not None else [])
    doomed = [d for d in doomed if d in on_disk]
    if doomed:
        say(f"config or inputs changed since the last run: recomputing {', '.join(doomed)}")
        run.invalidate_from(doomed)
    return doomed


def run_pipeline(
    pipeline: Pipeline,
    source: PipelineSource,
    run_dir: str | Path,
    inputs: list[str] | None = None,
    executor: LocalExecutor | RayExecutor | None = None,
    progress: ProgressFactory | None = None,
    say: Callable[[str], None] = lambda _msg: None,
    keep_intermediate: bool = False,  # True writes every stage's shards (`synth run --keep-intermediate`)
) -> RunResult:
    run = RunDir(run_dir)
    lock = run.lock()
    pipeline.bind_run_dir(run.root)
    executor = executor or LocalExecutor(1)
    try:
        run.clean_temporaries()
        clean_stale_scratch()  # left by sandboxes of a killed earlier run
        inputs = list(inputs if inputs is not None else pipeline.inputs)
        specs = _plan_shards(pipeline, inputs)
        prints = pipeline.fingerprints([repr(s) for s in specs])
        source = dataclasses.replace(source, fingerprint=prints[-1])
        invalidated = _invalidate_changed(run, pipeline, prints, say)
        names = [shard_name(i) for i in range(len(specs))]
        atomic_write_json(
            run.manifest,
            {
                "pipeline": pipeline.name,
                "config_path": str(pipeline.path) if pipeline.path else None,
                "config": pipeline.raw,
                "seed": pipeline.seed,
                "inputs": inputs,
                "shards": len(specs),
                "stages": [
                    {"label": e.label, "type": e.type, "fingerprint": fp} for e, fp in zip(pipeline.stages, prints)
                ],
            },
        )
        first = pipeline.stages[0].label
        if not run.shards_file(first).exists():
            atomic_write_json(run.shards_file(first), specs)

        for entry, fingerprint in zip(pipeline.stages, prints):
            atomic_write_json(
                run.stage_meta(entry.label),
                {
                    "type": entry.type,
                    "fingerprint": fingerprint,
                    "options": entry.written_options or entry.options,
                    "shards": len(names),
                },
            )
        for group in fusion_groups(pipeline, keep_intermediate):
            entries = [pipeline.stages[i] for i in group]
            entry, last = entries[0], entries[-1]
            # Records per shard, for the progress bar: read once, and only when there is work.
            pending = not all(run.is_done(last.label, n) for n in names)
            rows = _input_rows(run, pipeline, entry, names) if pending else None
            for g in entries:
                if not isinstance(g.stage, GlobalStage):
                    continue
                if run.state_done(g.label).exists() or all(run.is_done(g.label, n) for n in names):
                    if not keep_intermediate:  # a kill may have come between the reduce and this
                        _drop_summaries(run, g.label, names)
                    continue
                todo = [
                    ShardTask(source, str(run.root), entry.index, i, "summarize", None, g.index)
                    for i, n in enumerate(names)
                    if not run.summary(g.label, n).exists()
                ]
                _run_phase(
                    executor,
                    todo,
                    [g],
                    len(names),
                    progress,
                    run,
                    "summarize",
                    all(e.stage.parallel for e in entries),
                    rows,
                )
                state = run.state_dir(g.label)
                state.mkdir(parents=True, exist_ok=True)
                g.stage.ensure_setup()
                g.stage.reduce([run.summary(g.label, n) for n in names], state)
                atomic_write_json(run.state_done(g.label), {"finished": time.time()})
                if not keep_intermediate:
                    _drop_summaries(run, g.label, names)
            todo = []
            for i, n in enumerate(names):
                if run.is_done(last.label, n):
                    continue
                # A killed group reruns from its first stage, or from the last of its
                # stages whose parquet is on disk (left by a --keep-intermediate run).
                start = next(
                    (e.index + 1 for e in reversed(entries[:-1]) if run.is_materialized(e.label, n)), entry.index
                )
                todo.append(
                    ShardTask(source, str(run.root), start, i, "process", specs[i] if start == 0 else None, last.index)
                )
            _run_phase(
                executor,
                todo,
                entries,
                len(names),
                progress,
                run,
                "process",
                all(e.stage.parallel for e in entries),
                rows,
            )
            for e in entries:
                totals = stage_totals(run, e.label, e.type)
                dropped = sum(totals["dropped"].values())
                _fail_if_nothing_readable(e.stage, totals, run)
                say(
                    f"{e.label}: {totals['in']:,} in, {totals['out']:,} out, {dropped:,} dropped ({totals['seconds']:.1f}s of work)"
                )

        output = run.publish_output(pipeline.stages[-1].label, names)
        if not keep_intermediate:
            _release_global_inputs(run, pipeline, names)
            compact_run(run, [e.label for e in pipeline.stages], pipeline.reject_sample_per_reason)
        return RunResult(run.root, output, [stage_totals(run, e.label, e.type) for e in pipeline.stages], invalidated)
    finally:
        executor.close()
        teardown_stages(e.stage for e in pipeline.stages)  # the driver's own (source planning, reduce)
        lock.close()


def _release_global_inputs(run: RunDir, pipeline: Pipeline, names: list[str]) -> None:
    """A completed fused run keeps no shard it wrote only for a global stage to read
    (the filter decisions the audit needs are in its scores; see `needs_all_scores`).
    Kept: `materialize: true`, and LLM output (recomputing it would need the engine)."""
    stages = pipeline.stages
    for entry, nxt in itertools.pairwise(stages):
        if (
            isinstance(nxt.stage, GlobalStage)
            and not isinstance(entry.stage, GlobalStage)
            and not entry.materialize
            and entry.stage.parallel
        ):
            for n in names:
                run.release(entry.label, n)


def needs_all_scores(pipeline: Pipeline, index: int, first: int, last: int) -> bool:
    """A stage whose input or output parquet will not stay on disk (inside a fused group,
    or a global stage's input) stores the decisions of every row it saw, kept ones too,
    so `synth audit --what-if` re-decides it without them."""
    stages = pipeline.stages
    return (
        first < index
        or index < last
        or (
            index + 1 < len(stages)
            and isinstance(stages[index + 1].stage, GlobalStage)
            and not isinstance(stages[index].stage, GlobalStage)
        )
    )


def _drop_summaries(run: RunDir, label: str, names: list[str]) -> None:
    """Once reduced, the state is all a global stage's process pass needs (its counters stay)."""
    for n in names:
        run.summary(label, n).unlink(missing_ok=True)


def _fail_if_nothing_readable(stage, totals: dict, run: RunDir) -> None:
    """One bad file is a counted drop; a run where no input file could be read at all is one clear error."""
    reasons = set(getattr(stage, "unreadable_reasons", ()))
    if not reasons or totals["out"] or not totals["dropped"] or set(totals["dropped"]) - reasons:
        return
    counts = ", ".join(f"{n} {reason}" for reason, n in totals["dropped"].items())
    raise InputError(
        f"no input could be read ({counts}); the reasons are in {run.root / 'rejected'} and `synth audit {run.root}`"
    )


def _input_rows(run: RunDir, pipeline: Pipeline, entry: StageEntry, names: list[str]) -> dict[str, int] | None:
    """Records each shard will read (from parquet metadata, no data read); None for a source."""
    if entry.index == 0:
        return None
    upstream = pipeline.stages[entry.index - 1].label
    if not all(run.is_materialized(upstream, n) for n in names):
        return None  # done through a fused group's commit, without a parquet of its own
    return {n: pq.ParquetFile(run.part(upstream, n)).metadata.num_rows for n in names}


def _run_phase(
    executor,
    todo: list[ShardTask],
    entries: list[StageEntry],
    total: int,
    progress: ProgressFactory | None,
    run: RunDir,
    phase: str,
    parallel: bool,
    rows: dict[str, int] | None = None,
) -> None:
    if not todo:
        return
    entry = entries[0]
    bars: list = []
    if progress:
        if rows is None:
            bars.append(progress(entry, total, total - len(todo)))
        else:
            pending = {shard_name(t.shard_index) for t in todo}
            bars.append(
                progress(
                    entry,
                    total,
                    total - len(todo),
                    sum(rows.values()),
                    sum(v for n, v in rows.items() if n not in pending),
                )
            )
        # A fused group shows one line per stage (in shards: the records each will see are not known ahead).
        add = getattr(bars[0], "add_stage", None)
        if add is not None:
            bars += [add(e, total, total - len(todo)) for e in entries[1:]]
    failures: list[tuple[ShardTask, BaseException]] = []
    try:
        for task, stats, exc, tb in executor.map(todo, parallel=parallel):
            if exc is not None:
                failures.append((task, exc))
                run.logs_dir.mkdir(parents=True, exist_ok=True)
                failed = (
                    getattr(exc, "synth_stage", None)
                    or getattr(getattr(exc, "cause", None), "synth_stage", None)
                    or entry.label
                )
                with open(run.logs_dir / "errors.log", "a", encoding="utf-8") as log:
                    log.write(
                        f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {failed} {shard_name(task.shard_index)} ({phase})\n{tb}\n"
                    )
            per_stage = (stats or {}).get("stages") or [stats or {}]
            by_label = {s.get("stage"): s for s in per_stage}
            for bar, e in zip(bars, entries):
                bar.advance(by_label.get(e.label, {}) if len(entries) > 1 else (stats or {}), phase)
    finally:
        if bars:
            bars[0].close()
    if failures:
        first_task, first_exc = failures[0]
        label = (
            getattr(first_exc, "synth_stage", None)
            or getattr(getattr(first_exc, "cause", None), "synth_stage", None)
            or entry.label
        )
        raise StageFailed(
            f"stage {label}: {len(failures)} of {len(todo)} shards failed "
            f"(first: {shard_name(first_task.shard_index)}: {type(first_exc).__name__}: {first_exc}); "
            f"finished shards are kept, tracebacks in {run.logs_dir / 'errors.log'}; rerun the same command to retry"
        )
