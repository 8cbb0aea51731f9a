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
