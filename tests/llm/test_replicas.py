"""Several replicas of one model: least-in-flight routing, failover, probing back,
per-replica counters, and the replica settings of MODELS files and `synth serve`."""

from __future__ import annotations

import threading
import time

import pytest

from synth.llm.config import ModelEntry, ModelsConfig, ModelsConfigError
from synth.llm.engines import open_engine
from synth.llm.serve import ServerProcess, replica_devices, server_command
from synth.llm.served import ServedEngine
from synth.llm.types import ChatRequest, EngineError, SamplingParams
from synth.llm.usage import usage_counters

from .llm_helpers import ScriptedServer


def replicas(*urls, **kw) -> ModelEntry:
    base = dict(
        mode="endpoint",
        urls=list(urls),
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        max_retries=3,
        down_timeout_s=3.0,
        probe_interval_s=0.2,
    )
    base.update(kw)
    return ModelEntry(**base)


def req(text: str) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], SamplingParams(), key=text)


def test_requests_spread_over_replicas_by_fewest_in_flight():
    with ScriptedServer() as a, ScriptedServer() as b:
        a.delay_s = b.delay_s = 0.05
        eng = ServedEngine("m", replicas(a.url, b.url, max_in_flight=3))
        results = eng.generate([req(f"q{i}") for i in range(24)])
    assert [r.texts for r in results] == [[f"q{i}#0"] for i in range(24)]
    assert len(a.bodies) + len(b.bodies) == 24
    assert len(a.bodies) >= 6 and len(b.bodies) >= 6  # both busy, neither idle
    assert a.max_in_flight <= 3 and b.max_in_flight <= 3  # the cap is per replica
    counters = usage_counters(results, "m")
    assert counters["llm.m.replica.0.requests"] == len(a.bodies)
    assert counters["llm.m.replica.1.requests"] == len(b.bodies)
    assert counters["llm.m.replica.0.failures"] == counters["llm.m.replica.1.failures"] == 0
    assert counters["llm.m.replica.0.tokens"] > 0


def test_replica_that_never_answers_is_a_counted_failure_retried_elsewhere(dead_url):
    with ScriptedServer() as live:
        eng = ServedEngine("m", replicas(dead_url, live.url, max_in_flight=4))
        t0 = time.monotonic()
        results = eng.generate([req(f"q{i}") for i in range(10)])
        assert time.monotonic() - t0 < 5
    assert [r.texts for r in results] == [[f"q{i}#0"] for i in range(10)]
    assert len(live.bodies) == 10  # each request answered once
    counters = usage_counters(results, "m")
    assert counters["llm.m.replica.0.failures"] == counters["llm.m.replica.0.requests"] >= 1
    assert counters["llm.m.replica.1.requests"] == 10 and counters["llm.m.replica.1.failures"] == 0
    assert counters["llm.m.requests"] == 10 and counters["llm.m.failures"] == 0
    assert not eng.replicas[0].up and eng.replicas[1].up


def test_open_engine_takes_out_a_silent_replica_and_keeps_the_live_one(dead_url):
    with ScriptedServer() as live:
        models = ModelsConfig(models={"m": replicas(dead_url, live.url, startup_timeout_s=2)})
        eng = open_engine("m", models)
        assert [r.up for r in eng.replicas] == [False, True]
        (res,) = eng.generate([req("x")])
    assert res.texts == ["x#0"] and res.replica == 1 and res.replica_failures == []


def test_killed_replica_is_taken_out_then_probed_back_nothing_lost_or_duplicated():
    a = ScriptedServer().__enter__()
    port = a.port
    with ScriptedServer() as b:
        a.delay_s = b.delay_s = 0.02
        eng = ServedEngine("m", replicas(a.url, b.url, max_in_flight=2))
        done = []

        def kill_a_after_some(i, r):
            done.append(i)
            if len(done) == 4:
                threading.Thread(target=a.kill).start()

        results = eng.generate([req(f"q{i}") for i in range(30)], progress=kill_a_after_some)
        assert [r.texts for r in results] == [[f"q{i}#0"] for i in range(30)]
        assert sorted(done) == list(range(30))  # each request reported once
        assert not eng.replicas[0].up
        # Restarted on the same port: probed, taken back, used again.
        a2 = ScriptedServer(port).__enter__()
        try:
            a2.delay_s = b.delay_s = 0.05
            again = eng.generate([req(f"r{i}") for i in range(12)])
            assert [r.texts for r in again] == [[f"r{i}#0"] for i in range(12)]
            assert eng.replicas[0].up and len(a2.bodies) >= 1
        finally:
            a2.__exit__(None, None, None)


def test_all_replicas_down_fails_every_request_clearly_within_down_timeout(dead_url):
    from .llm_helpers import free_port

    other = f"http://127.0.0.1:{free_port()}/v1"
    eng = ServedEngine("m", replicas(dead_url, other, down_timeout_s=1.0))
    t0 = time.monotonic()
    results = eng.generate([req(f"q{i}") for i in range(8)])
    assert time.monotonic() - t0 < 5
    assert all(not r.ok for r in results)
    assert all(
        "all 2 replicas" in r.error and "unreachable" in r.error and dead_url in r.error and other in r.error
        for r in results
    )
    counters = usage_counters(results, "m")
    assert counters["llm.m.failures"] == 8
    assert counters["llm.m.replica.0.failures"] + counters["llm.m.replica.1.failures"] >= 1


def test_no_replica_answering_at_start_is_one_clear_error(dead_url):
    models = ModelsConfig(models={"m": replicas(dead_url, dead_url.replace("/v1", "/x/v1"), startup_timeout_s=1)})
    with pytest.raises(EngineError, match="none of its 2 replicas answered within 1s"):
        open_engine("m", models)


def test_5xx_on_one_replica_is_retried_on_the_other():
    with ScriptedServer() as a, ScriptedServer() as b:
        a.plan.extend([503] * 5)
        b.plan.append(503)
        eng = ServedEngine("m", replicas(a.url, b.url, max_in_flight=1, max_retries=3))
        (res,) = eng.generate([req("x")])
    assert res.ok and res.replica_failures == [0, 1, 0] and res.replica == 1
    # Alternates: never two failed attempts in a row on the same replica.
    assert all(x != y for x, y in zip(res.replica_failures, res.replica_failures[1:]))


# -- MODELS fields and `synth serve` -------------------------------------------------


def test_models_file_replica_fields():
    e = ModelEntry(mode="serve", port=8100, replicas=3)
    assert e.base_urls() == [f"http://127.0.0.1:{p}/v1" for p in (8100, 8101, 8102)]
    assert ModelEntry(mode="endpoint", urls=["http://a:1/v1/", "http://b:1/v1"]).base_urls() == [
        "http://a:1/v1",
        "http://b:1/v1",
    ]
    bad = [
        ({"mode": "endpoint", "url": "http://a/v1", "urls": ["http://b/v1"]}, "not both"),
        ({"mode": "endpoint", "urls": ["http://a/v1", "http://a/v1"]}, "twice"),
        ({"mode": "endpoint", "url": "http://a/v1", "replicas": 2}, "needs mode 'serve'"),
        ({"mode": "endpoint"}, "'url' or 'urls'"),
    ]
    for fields, message in bad:
        with pytest.raises(ModelsConfigError, match=message):
            ModelsConfig.from_dict({"models": {"m": fields}}, source="M.yaml")
    # Replicas' consecutive ports must not collide with another model's.
    with pytest.raises(ModelsConfigError, match=r"ports used twice: \[8101\]"):
        ModelsConfig.from_dict(
            {"models": {"a": {"mode": "serve", "port": 8100, "replicas": 2}, "b": {"mode": "serve", "port": 8101}}}
        )


def test_serve_replicas_get_consecutive_ports_own_gpus_and_logs(tmp_path):
    e = ModelEntry(mode="serve", model=str(tmp_path), port=8100, replicas=2)
    servers = [ServerProcess("m", e, tmp_path, i) for i in range(2)]
    assert [s.url for s in servers] == ["http://127.0.0.1:8100/v1", "http://127.0.0.1:8101/v1"]
    assert [s.log_path.name for s in servers] == ["vllm-m-0.log", "vllm-m-1.log"]
    cmd = server_command("m", e, port=8101)
    assert cmd[cmd.index("--port") + 1] == "8101"
    assert [replica_devices(e, i) for i in range(2)] == ["0", "1"]
    assert [replica_devices(e, i, "4,5") for i in range(2)] == ["4", "5"]  # the devices this process was given
    two = ModelEntry(mode="serve", port=8100, replicas=2, gpus_per_replica=2)
    assert replica_devices(two, 1) == "2,3"
    with pytest.raises(EngineError, match="needs 2 GPU"):
        replica_devices(two, 1, "0,1,2")
    assert replica_devices(ModelEntry(mode="serve", port=8100), 0) is None  # one replica: untouched


def test_audit_shows_requests_failures_and_tokens_per_replica(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app
    from synth.core.config import build_pipeline
    from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
    from synth.llm.usage import replica_table

    from .llm_helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    with ScriptedServer() as live:
        models = tmp_path / "models.yaml"
        models.write_text(
            f"models:\n  m:\n    mode: endpoint\n    urls: [{dead}, {live.url}]\n    startup_timeout_s: 2\n"
        )
        raw = {
            "name": "r",
            "seed": 1,
            "settings": {"models": str(models)},
            "stages": [
                {"type": "tests.core.toy_stages:CountSource", "per_shard": 4, "shards": 2},
                {"type": "tests.core.toy_llm_stages:Echo"},
            ],
        }
        run_pipeline(
            build_pipeline(raw), PipelineSource(raw=raw, path=None, seed=1), tmp_path / "run", executor=LocalExecutor(1)
        )
    from synth.core.ledger import audit

    rows = replica_table(audit(tmp_path / "run")["stages"])
    assert [(r[1], r[2]) for r in rows] == [("m", 1)]  # the silent replica was out from the start
    assert rows[0][3] >= 1 and rows[0][4] == 0 and rows[0][5] > 0
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "run")])
    assert result.exit_code == 0 and "model replicas" in result.output


def test_replica_that_stops_answering_times_out_and_the_request_moves_on():
    with ScriptedServer() as a, ScriptedServer() as b:
        a.plan.append(("sleep", 2.0))
        eng = ServedEngine("m", replicas(a.url, b.url, max_in_flight=1, request_timeout_s=0.5))
        (res,) = eng.generate([req("x")])
    assert res.ok and res.texts == ["x#0"] and res.replica_failures == [0] and res.replica == 1


def test_synth_serve_starts_every_replica_of_every_serve_entry(tmp_path, monkeypatch):
    from synth.llm import serve as serve_mod

    started = []
    monkeypatch.setattr(serve_mod.ServerProcess, "start", lambda self: started.append((self.label, self.url)) or self)
    monkeypatch.setattr(serve_mod.ServerProcess, "wait_ready", lambda self, timeout_s=None: None)
    monkeypatch.setattr(serve_mod.ServerProcess, "stop", lambda self, grace_s=20.0: None)
    models = ModelsConfig.from_dict(
        {
            "models": {
                "a": {"mode": "serve", "port": 9100, "replicas": 2},
                "b": {"mode": "serve", "port": 9200},
                "c": {"mode": "endpoint", "urls": ["http://x:1/v1", "http://y:1/v1"]},
            }
        }
    )
    servers = serve_mod.start_servers(models, tmp_path)
    assert started == [
        ("a-0", "http://127.0.0.1:9100/v1"),
        ("a-1", "http://127.0.0.1:9101/v1"),
        ("b", "http://127.0.0.1:9200/v1"),
    ]
    assert [s.replica for s in servers] == [0, 1, 0]
