"""The same pipeline on Ray gives the same output as the local executor."""

import pyarrow.parquet as pq
import pytest

from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, RayExecutor, run_pipeline
from tests.core.test_pipeline_smoke import _raw


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _ids(result):
    return [i for p in result.output for i in pq.read_table(p).column("id").to_pylist()]


def test_ray_matches_local(tmp_path, ray_local):
    raw = _raw()
    pipe = build_pipeline(raw)
    src = PipelineSource(raw=raw, path=None, seed=pipe.seed)
    local = run_pipeline(pipe, src, tmp_path / "local", executor=LocalExecutor(1))
    on_ray = run_pipeline(build_pipeline(raw), src, tmp_path / "ray", executor=RayExecutor())
    assert _ids(on_ray) == _ids(local) and len(_ids(local)) > 0


def test_fused_groups_on_ray_match_keep_intermediate_locally(tmp_path, ray_local):
    from tests.core.test_fusion import _ledger
    from tests.core.test_fusion import _raw as fusion_raw

    raw = fusion_raw()
    src = PipelineSource(raw=raw, path=None, seed=build_pipeline(raw).seed)
    kept = run_pipeline(build_pipeline(raw), src, tmp_path / "kept", executor=LocalExecutor(1), keep_intermediate=True)
    fused = run_pipeline(build_pipeline(raw), src, tmp_path / "ray", executor=RayExecutor(), keep_intermediate=False)
    assert _ids(fused) == _ids(kept) and _ids(kept)
    assert _ledger(tmp_path / "ray") == _ledger(tmp_path / "kept")
    assert not list((tmp_path / "ray" / "stages" / "01-toy_slow").glob("part-*.parquet"))


# -- LLM stages on engine actors, and the bad-input cases ---------------------------


def _llm_raw(models_file):
    return {
        "name": "toy-llm",
        "seed": 1,
        "settings": {"models": str(models_file)},
        "stages": [
            {"type": "tests.core.toy_stages:CountSource", "per_shard": 5, "shards": 4},
            {"type": "tests.core.toy_llm_stages:Echo"},
            {"type": "tests.core.toy_stages:DropOdd"},
            {"type": "tests.core.toy_llm_stages:Echo", "name": "echo_again"},
        ],
    }


def test_llm_shards_run_on_engine_actors_that_keep_their_engine(tmp_path, ray_local):
    from synth.core.ledger import audit
    from tests.llm.llm_helpers import ScriptedServer

    with ScriptedServer() as server:
        models = tmp_path / "models.yaml"
        models.write_text(f"models:\n  m:\n    mode: endpoint\n    url: {server.url}\n")
        raw = _llm_raw(models)
        src = PipelineSource(raw=raw, path=None, seed=1)
        local = run_pipeline(build_pipeline(raw), src, tmp_path / "local", executor=LocalExecutor(1))
        asked_locally = len(server.bodies)
        ex = RayExecutor(engine_actors=2)
        try:
            on_ray = run_pipeline(build_pipeline(raw), src, tmp_path / "ray", executor=_KeepOpen(ex))
            info = ex.runner.actor_info()
        finally:
            ex.close()
    assert _ids(on_ray) == _ids(local) and len(_ids(local)) == 10
    assert len(server.bodies) > asked_locally  # the actors asked the model themselves (separate caches)
    assert len(info) == 2 and len({i["pid"] for i in info}) == 2
    assert sum(i["shards"] for i in info) == 8  # 4 shards x 2 LLM stages, all on the actors
    assert all(i["engines"] == 1 for i in info if i["shards"])  # one engine per actor, kept across shards and stages
    report = audit(tmp_path / "ray")
    echo = next(s for s in report["stages"] if s["stage"].endswith("toy_echo"))
    assert echo["counters"]["llm.m.requests"] == 20


class _KeepOpen:
    """Lets the test read the actors after run_pipeline (which closes its executor)."""

    def __init__(self, ex):
        self.ex = ex

    def map(self, tasks, parallel=True):
        return self.ex.map(tasks, parallel)

    def close(self):
        pass


def test_plain_tasks_are_submitted_a_bounded_number_at_a_time(tmp_path, ray_local):
    raw = _raw()
    raw["stages"][0]["shards"] = 7
    src = PipelineSource(raw=raw, path=None, seed=1)
    local = run_pipeline(build_pipeline(raw), src, tmp_path / "local", executor=LocalExecutor(1))
    ex = RayExecutor(max_in_flight=2)
    submitted = []
    real = ex.runner._remote

    class Spy:
        def remote(self, task):
            submitted.append(task)
            return real.remote(task)

    ex.runner._remote = Spy()
    outstanding = []
    bounded = ex.runner._bounded

    def watch(tasks):
        before = len(submitted)
        for finished, outcome in enumerate(bounded(tasks)):
            outstanding.append(len(submitted) - before - finished)
            yield outcome

    ex.runner._bounded = watch
    on_ray = run_pipeline(build_pipeline(raw), src, tmp_path / "ray", executor=ex, keep_intermediate=False)
    assert _ids(on_ray) == _ids(local)
    # per shard: one fused task (source, slow, drop_odd), then dedup's summarize and process
    assert len(submitted) == 7 * 3 and max(outstanding) <= 2  # never more than 2 refs held


def test_unreachable_ray_address_fails_in_seconds_with_one_line(tmp_path):
    import subprocess
    import sys
    import time

    from synth.core.ray_engines import RayUnavailable, check_address_reachable
    from tests.llm.llm_helpers import free_port

    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(RayUnavailable, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        check_address_reachable(f"ray://127.0.0.1:{port}".replace("ray://", ""), timeout_s=2)
    with pytest.raises(RayUnavailable, match="not host:port"):
        check_address_reachable("nonsense")
    assert time.monotonic() - t0 < 5
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: t\nstages:\n  - type: tests.core.toy_stages:CountSource\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synth",
            "run",
            str(pipeline),
            "-o",
            str(tmp_path / "run"),
            "--executor",
            "ray",
            "--ray-address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "cannot reach the Ray cluster" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_run_dir_workers_cannot_see_is_one_clear_error(tmp_path, ray_local, monkeypatch):
    import ray

    from synth.core import ray_engines

    assert ray_engines.unseen_by_nodes(ray, tmp_path / "no-such-marker")  # the probe really looks on the node
    assert ray_engines.unseen_by_nodes(ray, tmp_path) == []
    monkeypatch.setattr(ray_engines, "unseen_by_nodes", lambda ray, marker: ["10.0.0.7"])
    raw = _raw()
    pipe = build_pipeline(raw)
    src = PipelineSource(raw=raw, path=None, seed=pipe.seed)
    with pytest.raises(
        ray_engines.RunDirNotShared, match=r"not visible on Ray node\(s\) 10.0.0.7.*storage every node mounts"
    ):
        run_pipeline(pipe, src, tmp_path / "run", executor=RayExecutor())


def test_plain_tasks_reserve_the_cpus_their_stage_declares(tmp_path, ray_local):
    raw = {
        "name": "cores",
        "seed": 1,
        "stages": [
            {"type": "tests.core.toy_stages:CountSource", "per_shard": 2, "shards": 2},
            {"type": "tests.core.toy_stages:TwoCores"},
            {"type": "tests.core.toy_stages:Slow"},
        ],
    }
    src = PipelineSource(raw=raw, path=None, seed=1)
    result = run_pipeline(build_pipeline(raw), src, tmp_path / "run", executor=RayExecutor())
    rows = [r for p in result.output for r in pq.read_table(p).to_pylist()]
    assert rows and {r["reserved_cpus"] for r in rows} == {2.0}
