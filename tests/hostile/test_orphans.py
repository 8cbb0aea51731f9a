"""After a kill -9 of a run, no sandbox child or pool worker lives on,
and the next run removes the scratch directories the dead run left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from synth.core.scratch import clean_stale_scratch

# the checkout under test, for the child processes
REPO = str(Path(__file__).resolve().parents[2])


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def start(script: str, tmp_path) -> subprocess.Popen:
    env = dict(
        os.environ,
        TMPDIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join(p for p in [REPO, os.environ.get("PYTHONPATH", "")] if p),
    )
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.timeout(120)
def test_sandbox_child_dies_with_its_parent_and_its_directory_is_cleaned(tmp_path):
    driver = start(
        """
        from synth.filters.heuristic.sandbox import SandboxLimits, run_python
        print("started", flush=True)
        run_python("while True:\\n    pass\\n", SandboxLimits(cpu_seconds=100, wall_seconds=100))
        """,
        tmp_path,
    )
    assert driver.stdout.readline().strip() == "started"
    assert wait_for(lambda: children_of(driver.pid), 30), "the sandbox child never started"
    (child,) = children_of(driver.pid)
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(f"synth-sandbox-{driver.pid}-")]
    assert len(leftovers) == 1
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert wait_for(lambda: not alive(child), 10), "the sandbox child outlived its parent"
    # a kill -9 leaves the directory; the next run's cleanup removes it, and only dead runs' ones
    live = tempfile.mkdtemp(prefix=f"synth-sandbox-{os.getpid()}-", dir=tmp_path)
    assert clean_stale_scratch(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(live)]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_pool_workers_die_with_the_driver(tmp_path):
    driver = start(
        """
        import concurrent.futures as cf, multiprocessing, os, time
        from synth.core.executor import _worker_init
        pool = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        pids = {pool.submit(os.getpid).result() for _ in range(8)}
        futures = [pool.submit(time.sleep, 300) for _ in range(2)]
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(300)
        """,
        tmp_path,
    )
    workers = [int(p) for p in driver.stdout.readline().split()]
    assert workers and all(alive(p) for p in workers)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert wait_for(lambda: not any(alive(p) for p in workers), 10), "pool workers outlived the driver"


def test_a_rerun_cleans_stale_scratch(tmp_path, monkeypatch):
    from synth.core.config import build_pipeline
    from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"synth-sandbox-{gone.pid}-abc123"
    stale.mkdir()
    (stale / "work").mkdir()
    live = tmp_path / f"synth-sandbox-{os.getpid()}-def456"
    live.mkdir()
    unrelated = tmp_path / "synth-sandbox-olderformat"
    unrelated.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "x"}\n')
    raw = {"name": "r", "seed": 0, "stages": [{"type": "read"}]}
    run_pipeline(
        build_pipeline(raw),
        PipelineSource(raw=raw, path=None, seed=0),
        tmp_path / "run",
        inputs=[str(data)],
        executor=LocalExecutor(1),
    )
    assert not stale.exists() and live.exists() and unrelated.exists()
