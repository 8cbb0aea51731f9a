"""Ray: shard tasks with bounded submission, and LLM stages on long-lived engine actors.

An LLM engine costs a minute or more to start and holds a GPU (or, on CPU, a big
share of the machine), so LLM stages do not run as plain Ray tasks: their shards go
to `EngineActor`s, each holding the engines of the models its shards use for the
whole run (one actor per `Resources.gpus` the stage declares, one GPU by default,
or a configured number on CPU).
Shards are handed to the actor with the fewest outstanding and only `per_actor`
ahead of time, and plain tasks are submitted at most `max_in_flight` at a time, so
the driver holds a bounded number of references however many shards a run has.
Every worker reads and writes the run directory itself; the driver checks that
each node sees it before the first task.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """The Ray cluster cannot be reached or cannot host what the run needs."""


class RunDirNotShared(RuntimeError):
    """Some Ray node does not see the run directory."""


# -- connecting ------------------------------------------------------------------


def check_address_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds with one line when `address` (host:port or ray://host:port)
    does not accept connections: ray.init would otherwise retry for a minute or more."""
    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise RayUnavailable(f"Ray address {address!r} is not host:port or ray://host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with `ray start --head` "
            "on the head node or fix --ray-address"
        ) from None


def connect(ray, address: str | None, init_kwargs: dict | None) -> None:
    if ray.is_initialized():
        return
    check_address_reachable(address)
    try:
        ray.init(address=address, **(init_kwargs or {}))
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RayUnavailable(f"cannot connect to Ray at {address or 'a new local instance'}: {first}") from None


# -- the run directory --------------------------------------------------------------


def _sees(path: str) -> bool:
    return Path(path).exists()


def unseen_by_nodes(ray, marker: Path, timeout_s: float = 120.0) -> list[str]:
    """Addresses of the alive nodes on which `marker` does not exist (one tiny task
    pinned to each node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_sees)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(marker)
        ): n
        for n in nodes
    }
    ready, not_ready = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    missing = [refs[r].get("NodeManagerAddress", "?") for r in ready if not ray.get(r)]
    missing += [f"{refs[r].get('NodeManagerAddress', '?')} (no answer in {timeout_s:.0f}s)" for r in not_ready]
    return missing


def check_run_dir_shared(ray, run_dir: str | Path) -> None:
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / f".ray-visible-{uuid.uuid4().hex}"
    marker.write_text("synth: can Ray workers see the run directory?\n")
    try:
        missing = unseen_by_nodes(ray, marker)
    finally:
        marker.unlink(missing_ok=True)
    if missing:
        raise RunDirNotShared(
            f"run directory {run_dir} is not visible on Ray node(s) {', '.join(missing)}: put it on storage "
            "every node mounts at the same path (NFS, Lustre, a mounted bucket) and pass that path to --output"
        )


# -- engine actors ----------------------------------------------------------------


class EngineActor:
    """Runs the shards of LLM stages; the engines they open (one per model and
    MODELS file, see synth.llm.stage.shared_engine) live as long as the actor."""

    def __init__(self) -> None:
        self.shards = 0

    def run(self, task):
        from synth.core.executor import run_shard

        self.shards += 1
        return run_shard(task)

    def info(self) -> dict:
        from synth.llm import stage as llm_stage

        opened = [b for b in llm_stage._bases.values() if getattr(b, "opened", True)]
        return {"pid": os.getpid(), "shards": self.shards, "engines": len(opened)}

    def shutdown(self) -> None:
        """Tear down the stages this actor ran (closes engines, stops servers an engine
        started) before the actor is killed."""
        from synth.core.executor import teardown_pipelines
        from synth.llm.stage import close_engines

        teardown_pipelines()
        close_engines()  # engines opened outside a stage's setup, if any


def _task_cpus(task) -> float:
    """The CPUs a task's stages declare (a fused group: the most any of them needs)."""
    from synth.core.executor import _pipeline

    stages = _pipeline(task.source).stages
    last = task.stage_index if task.last_index is None else task.last_index
    return max(stages[i].stage.resources.cpus for i in range(task.stage_index, last + 1))


def _engine_stage(task):
    """The LLM stage a task runs, or None."""
    from synth.core.executor import _pipeline
    from synth.llm.stage import LLMStage

    stage = _pipeline(task.source).stages[task.stage_index].stage
    return stage if isinstance(stage, LLMStage) else None


Outcome = tuple  # (task, stats | None, exception | None, traceback text)


class RayRunner:
    """What RayExecutor does: plain tasks with at most `max_in_flight` submitted,
    LLM shards on engine actors created on first need."""

    def __init__(
        self,
        ray,
        run_task,
        *,
        num_cpus_per_task: float = 1.0,
        engine_actors: int | None = None,
        actor_num_cpus: float = 1.0,
        per_actor: int = 2,
        max_in_flight: int | None = None,
        start_timeout_s: float = 600.0,
    ):
        self.ray = ray
        self._remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=2)(run_task)
        self.num_cpus_per_task = num_cpus_per_task
        self.engine_actors = engine_actors
        self.actor_num_cpus = actor_num_cpus
        self.per_actor = max(1, per_actor)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = max_in_flight or max(2, 2 * cpus)
        self.start_timeout_s = start_timeout_s
        self.actors: list = []
        self._checked: set[str] = set()

    # -- plain tasks ---------------------------------------------------------------
    def map(self, tasks: list, parallel: bool = True) -> Iterator[Outcome]:
        if not tasks:
            return
        run_dir = tasks[0].run_dir
        if run_dir not in self._checked:
            check_run_dir_shared(self.ray, run_dir)
            self._checked.add(run_dir)
        engine_stage = _engine_stage(tasks[0])
        if engine_stage is not None:
            yield from self._on_actors(tasks, engine_stage.resources.gpus)
        elif not parallel:
            from synth.core.executor import LocalExecutor

            yield from LocalExecutor(1).map(tasks)
        else:
            yield from self._bounded(tasks)

    def _bounded(self, tasks: list) -> Iterator[Outcome]:
        # Each task reserves num_cpus_per_task times the CPUs its stages declare (`Resources.cpus`).
        num_cpus = _task_cpus(tasks[0]) * self.num_cpus_per_task
        remote = self._remote if num_cpus == self.num_cpus_per_task else self._remote.options(num_cpus=num_cpus)
        queue = deque(tasks)
        pending: dict = {}
        while queue or pending:
            while queue and len(pending) < self.max_in_flight:
                task = queue.popleft()
                pending[remote.remote(task)] = task
            yield self._next(pending)

    def _next(self, pending: dict) -> Outcome:
        (ref,), _ = self.ray.wait(list(pending), num_returns=1)
        task = pending.pop(ref)
        if isinstance(task, tuple):  # (task, actor index) from _on_actors
            task = task[0]
        try:
            return task, self.ray.get(ref), None, ""
        except Exception as exc:  # noqa: BLE001 - reported per shard, the run goes on
            return task, None, exc, "".join(traceback.format_exception(exc))

    # -- engine actors -------------------------------------------------------------
    def _ensure_actors(self, gpus_per_actor: float = 1.0) -> None:
        """Start the engine actors: with the GPUs the LLM stage declares
        (`Resources.gpus`, one by default) each where the cluster has GPUs."""
        if self.actors:
            return
        ray = self.ray
        total = ray.cluster_resources()
        gpus = int(total.get("GPU", 0))
        if gpus and gpus_per_actor > 0:
            count = self.engine_actors or max(1, int(gpus // gpus_per_actor))
            resources = {"num_gpus": gpus_per_actor, "num_cpus": min(1.0, self.actor_num_cpus)}
            if count * gpus_per_actor > gpus:
                raise RayUnavailable(
                    f"{count} engine actors need {gpus_per_actor:g} GPU(s) each; the Ray cluster has {gpus}"
                )
        else:
            count = self.engine_actors or 1
            cpus = total.get("CPU", 0)
            # Actors live for the whole run: leave at least one CPU to the plain
            # stages between LLM stages, or their tasks would wait forever.
            share = min(self.actor_num_cpus, max(cpus - 1, cpus / 2) / count)
            if share < 0.01:
                raise RayUnavailable(f"{count} engine actors do not fit the cluster's {cpus:g} CPUs")
            resources = {"num_cpus": share}
        cls = ray.remote(max_restarts=1, max_task_retries=1)(EngineActor)
        self.actors = [cls.options(**resources).remote() for _ in range(count)]
        ready, not_ready = ray.wait(
            [a.info.remote() for a in self.actors], num_returns=count, timeout=self.start_timeout_s
        )
        if not_ready:
            raise RayUnavailable(
                f"{len(not_ready)} of {count} engine actors did not start within {self.start_timeout_s:.0f}s"
            )
        log.info("engine actors: %d (%s each)", count, resources)

    def _on_actors(self, tasks: list, gpus_per_actor: float = 1.0) -> Iterator[Outcome]:
        self._ensure_actors(gpus_per_actor)
        queue = deque(tasks)
        load = [0] * len(self.actors)
        pending: dict = {}
        while queue or pending:
            while queue and min(load) < self.per_actor:
                i = load.index(min(load))
                task = queue.popleft()
                pending[self.actors[i].run.remote(task)] = (task, i)
                load[i] += 1
            (ref,), _ = self.ray.wait(list(pending), num_returns=1)
            load[pending[ref][1]] -= 1
            yield self._next({ref: pending.pop(ref)})

    def actor_info(self) -> list[dict]:
        return self.ray.get([a.info.remote() for a in self.actors]) if self.actors else []

    def close(self) -> None:
        actors, self.actors = self.actors, []
        if not actors:
            return
        try:
            self.ray.get([a.shutdown.remote() for a in actors], timeout=120)
        except Exception as e:  # noqa: BLE001 - the actors are killed anyway
            log.warning("engine actors did not shut down cleanly: %s", e)
        for a in actors:
            self.ray.kill(a)
