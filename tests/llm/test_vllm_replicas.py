"""Two real vLLM replicas of the default model; one is killed mid-stage and
restarted (marked `vllm` and `slow`: two server starts and a restart)."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import pyarrow as pa
import pytest

from synth.core.stage import PipelineContext, Shard
from synth.llm.cache import CachedEngine, RequestCache
from synth.llm.config import ModelEntry, ModelsConfig
from synth.llm.engines import ManagedServedEngine, open_engine
from synth.llm.stage import LLM_ERROR, LLMStage, LLMStageOptions
from synth.llm.types import ChatRequest, SamplingParams

from .llm_helpers import free_port, questions

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


class Answer(LLMStage):
    type: ClassVar[str] = "answer"

    def build_request(self, row, shard):
        return ChatRequest([{"role": "user", "content": row["q"]}], SamplingParams(temperature=0.0, max_tokens=40))

    def apply_result(self, row, result, shard):
        return {**row, "a": result.text}


def _free_pair() -> int:
    """A port p with p+1 free as well (the replicas' consecutive ports)."""
    import socket

    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
    raise RuntimeError("no two consecutive free ports")


def test_replica_killed_mid_stage_and_restarted_every_record_once(default_model_path, tmp_path):
    entry = ModelEntry(
        mode="serve",
        port=_free_pair(),
        replicas=2,
        max_model_len=512,
        kv_cache_gib=1,
        enforce_eager=True,
        startup_timeout_s=600,
        max_in_flight=4,
        down_timeout_s=600,
        probe_interval_s=1.0,
    )
    engine = open_engine("smol", ModelsConfig(models={"smol": entry}), log_dir=tmp_path / "logs")
    assert isinstance(engine, ManagedServedEngine) and len(engine.servers) == 2
    cache = RequestCache(tmp_path / "cache.sqlite")
    finished: list[int] = []

    class Watch:
        name, model_id = engine.name, engine.model_id

        def generate(self, requests, progress=None):
            def on(i, r):
                finished.append(i)
                if progress:
                    progress(i, r)

            return engine.generate(requests, on)

    qs = questions()
    rows = [{"id": f"r{i}", "q": f"{qs[i % len(qs)]} (answer {i})"} for i in range(24)]
    stage = Answer(LLMStageOptions(cache=False), PipelineContext())
    stage.engine = CachedEngine(Watch(), cache)
    shard = Shard("01-answer", 0, "00000", 0)
    box = {}
    try:
        worker = threading.Thread(target=lambda: box.update(out=stage.process(pa.Table.from_pylist(rows), shard)))
        worker.start()
        deadline = time.monotonic() + 300
        while len(finished) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert finished, "no request finished before the kill"
        victim = engine.servers[0]
        victim.kill()
        killed_at = len(finished)
        victim.start()
        worker.join(900)
        assert not worker.is_alive()
        ids = box["out"].column("id").to_pylist()
        assert killed_at < len(rows)  # killed mid-stage
        assert sorted(ids) == sorted(r["id"] for r in rows) and not shard.dropped.get(LLM_ERROR)  # every record once
        assert len(cache) == len(rows)  # the cache holds one answer per request: none lost, none twice
        c = shard.counters
        assert c["llm.smol.requests"] == len(rows) and c["llm.smol.failures"] == 0
        assert c["llm.smol.replica.0.failures"] >= 1  # its in-flight requests failed there...
        assert c["llm.smol.replica.1.requests"] >= len(rows) - killed_at - 4  # ...and were answered by the other
        assert c["llm.smol.replica.0.tokens"] + c["llm.smol.replica.1.tokens"] > 0
        # The restarted replica is probed and taken back.
        victim.wait_ready()
        more = [
            ChatRequest([{"role": "user", "content": f"Say {w}."}], SamplingParams(temperature=0.0, max_tokens=4))
            for w in "abcdefgh"
        ]
        again = engine.generate(more)
        assert all(r.ok for r in again) and {r.replica for r in again} == {0, 1}
    finally:
        engine.close()
