"""Stage lifecycle: setup before the first shard (guaranteed by the base), teardown
by the executors when the run ends, in every process that set the stage up, and
declared resources instead of per-stage flags."""

import os

import pyarrow as pa
import pytest

from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.stage import LLM_ENGINE, Resources, Shard
from tests.core.toy_stages import Lifecycle, LifecycleOptions

T = "tests.core.toy_stages"


def _run(tmp_path, stages, workers):
    raw = {"name": "life", "seed": 1, "stages": stages}
    pipe = build_pipeline(raw)
    return run_pipeline(
        pipe, PipelineSource(raw=raw, path=None, seed=1), tmp_path / "run", executor=LocalExecutor(workers)
    )


def _events(folder):
    names = os.listdir(folder) if folder.exists() else []
    return {e: {n.split("-", 1)[1] for n in names if n.startswith(e + "-")} for e in ("setup", "teardown")}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_process_that_set_a_stage_up_tears_it_down(tmp_path, workers):
    marks = tmp_path / "marks"
    _run(
        tmp_path,
        [{"type": f"{T}:CountSource", "per_shard": 3, "shards": 4}, {"type": f"{T}:Lifecycle", "marks": str(marks)}],
        workers,
    )
    events = _events(marks)
    assert events["setup"], "the stage was never set up"
    assert events["teardown"] == events["setup"]
    if workers == 1:
        assert events["setup"] == {str(os.getpid())}
    else:
        assert str(os.getpid()) not in events["setup"]  # shards ran in the pool's workers


def test_process_called_directly_sets_up_first_and_teardown_runs_once(tmp_path):
    stage = Lifecycle(LifecycleOptions(marks=str(tmp_path)))
    stage.process(pa.table({"n": [1]}), Shard("01-toy_lifecycle", 0, "part-00000", 1))
    stage.process(pa.table({"n": [2]}), Shard("01-toy_lifecycle", 1, "part-00001", 1))
    stage.ensure_teardown()
    stage.ensure_teardown()
    assert sorted(os.listdir(tmp_path)) == [f"setup-{os.getpid()}", f"teardown-{os.getpid()}"]


def test_llm_stages_declare_an_engine_and_the_run_closes_it(tmp_path, monkeypatch):
    import synth.llm.engines as engines
    import synth.llm.stage as llm_stage
    from synth.llm.fake import FakeEngine
    from tests.core.toy_llm_stages import Echo

    assert Echo.resources == LLM_ENGINE and Echo.resources.gpus == 1 and not Echo(Echo.Options()).parallel
    assert Lifecycle.resources == Resources() and Lifecycle(LifecycleOptions(marks="x")).parallel
    opened = []

    class Closable(FakeEngine):
        closed = False

        def close(self):
            self.closed = True

    def open_fake(name, models=None, **kwargs):
        opened.append(Closable(name=name))
        return opened[-1]

    monkeypatch.setattr(engines, "open_engine", open_fake)
    # Outside the test session's `engines_kept_open` block, with engines of its own.
    monkeypatch.setattr(llm_stage, "_kept_open", 0)
    monkeypatch.setattr(llm_stage, "_bases", {})
    monkeypatch.setattr(llm_stage, "_engines", {})
    stages = [
        {"type": f"{T}:CountSource", "per_shard": 2, "shards": 2},
        {"type": "tests.core.toy_llm_stages:Echo", "check_prompt_length": False},
    ]
    _run(tmp_path, stages, 1)
    assert len(opened) == 1 and opened[0].closed  # closed by the stage's teardown, not at interpreter exit
    assert not llm_stage._bases and not llm_stage._engines

    # A notebook running several pipelines keeps one engine across them.
    opened.clear()
    with llm_stage.engines_kept_open():
        _run(tmp_path / "a", stages, 1)
        _run(tmp_path / "b", stages, 1)
        assert len(opened) == 1 and not opened[0].closed
    assert opened[0].closed and not llm_stage._bases
