"""ServedEngine against a scripted local HTTP server: retries, backoff, limits, errors."""

from __future__ import annotations

import time

import pytest

from synth.llm.config import ModelEntry, ModelsConfig
from synth.llm.engines import open_engine
from synth.llm.served import ServedEngine
from synth.llm.types import ChatRequest, EngineError, SamplingParams


def entry(url: str, **kw) -> ModelEntry:
    base = dict(mode="endpoint", url=url, backoff_base_s=0.01, backoff_max_s=0.05, max_retries=3, down_timeout_s=2.0)
    base.update(kw)
    return ModelEntry(**base)


def req(text: str, **sp) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], SamplingParams(**sp), key=text)


def test_answers_in_order_with_n_samples_and_usage(scripted_server):
    eng = ServedEngine("m", entry(scripted_server.url))
    results = eng.generate([req("a"), req("b", n=3), req("c")])
    assert [r.texts for r in results] == [["a#0"], ["b#0", "b#1", "b#2"], ["c#0"]]
    assert all(r.ok and r.prompt_tokens == 5 for r in results)
    assert results[1].finish_reasons == ["stop"] * 3
    by_text = {b["messages"][-1]["content"]: b for b in scripted_server.bodies}  # arrival order varies
    assert by_text["b"]["n"] == 3 and by_text["a"]["n"] == 1


def test_retries_429_and_5xx_then_succeeds(scripted_server):
    scripted_server.plan.extend([429, 503, 500])
    eng = ServedEngine("m", entry(scripted_server.url))
    (res,) = eng.generate([req("x")])
    assert res.ok and res.texts == ["x#0"]
    assert len(scripted_server.bodies) == 4  # three failures, one success


def test_honours_retry_after(scripted_server):
    scripted_server.plan.append(("retry_after", 1))
    eng = ServedEngine("m", entry(scripted_server.url))
    t0 = time.monotonic()
    (res,) = eng.generate([req("x")])
    assert res.ok
    assert time.monotonic() - t0 >= 0.9


def test_gives_up_after_max_retries_with_clear_error(scripted_server):
    scripted_server.plan.extend([500] * 10)
    eng = ServedEngine("m", entry(scripted_server.url, max_retries=2))
    (res,) = eng.generate([req("x")])
    assert not res.ok
    assert "gave up after 3 attempts" in res.error and "HTTP 500" in res.error
    assert len(scripted_server.bodies) == 3


def test_client_error_is_not_retried(scripted_server):
    scripted_server.plan.append(400)
    # One in flight: the planned 400 must meet "bad", not whichever request lands first.
    eng = ServedEngine("m", entry(scripted_server.url, max_in_flight=1))
    results = eng.generate([req("bad"), req("good")])
    assert not results[0].ok and "HTTP 400" in results[0].error
    assert results[1].ok
    assert len(scripted_server.bodies) == 2


def test_timeout_is_retried(scripted_server):
    scripted_server.plan.append(("sleep", 1.5))
    eng = ServedEngine("m", entry(scripted_server.url, request_timeout_s=0.5))
    (res,) = eng.generate([req("slow")])
    assert res.ok and res.texts == ["slow#0"]
    assert len(scripted_server.bodies) == 2


def test_in_flight_limit_is_respected(scripted_server):
    scripted_server.delay_s = 0.05
    eng = ServedEngine("m", entry(scripted_server.url, max_in_flight=4))
    results = eng.generate([req(f"q{i}") for i in range(20)])
    assert all(r.ok for r in results)
    assert [r.texts[0] for r in results] == [f"q{i}#0" for i in range(20)]
    assert 2 <= scripted_server.max_in_flight <= 4


def test_schema_sent_as_response_format_and_seed_withheld(scripted_server):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    eng = ServedEngine("m", entry(scripted_server.url))
    eng.generate([req("j", json_schema=schema, seed=7, stop=("END",))])
    body = scripted_server.bodies[0]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert "seed" not in body  # per-request seeds crash CPU vLLM engines
    assert body["stop"] == ["END"]
    eng2 = ServedEngine("m", entry(scripted_server.url, per_request_seed=True, structured_output=False))
    eng2.generate([req("j", json_schema=schema, seed=7)])
    assert scripted_server.bodies[1]["seed"] == 7 and "response_format" not in scripted_server.bodies[1]


def test_dead_endpoint_fails_every_request_clearly_within_down_timeout(dead_url):
    url = dead_url
    eng = ServedEngine("m", entry(url, down_timeout_s=1.5))
    t0 = time.monotonic()
    results = eng.generate([req(f"q{i}") for i in range(10)])
    elapsed = time.monotonic() - t0
    assert elapsed < 5
    assert all(not r.ok for r in results)
    assert all("unreachable" in r.error and url in r.error for r in results)


def test_endpoint_never_up_open_engine_raises_within_timeout(dead_url):
    url = dead_url
    models = ModelsConfig(models={"m": entry(url, startup_timeout_s=1.5)})
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=r"did not answer within 2s|did not answer within 1s"):
        open_engine("m", models)
    assert time.monotonic() - t0 < 5


def test_endpoint_recovering_mid_batch_loses_nothing(scripted_server):
    # The first 3 requests hit a "restarting" server (503) and then succeed.
    scripted_server.plan.extend([503, 503, 503])
    eng = ServedEngine("m", entry(scripted_server.url, max_in_flight=2))
    results = eng.generate([req(f"r{i}") for i in range(8)])
    assert [r.texts for r in results] == [[f"r{i}#0"] for i in range(8)]


def test_progress_reports_each_request_once(scripted_server):
    seen = []
    eng = ServedEngine("m", entry(scripted_server.url))
    eng.generate([req(f"p{i}") for i in range(6)], progress=lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(6))


def test_greedy_n_is_asked_once_and_replicated(scripted_server):
    # vLLM rejects n>1 with temperature 0; greedy samples are identical anyway.
    eng = ServedEngine("m", entry(scripted_server.url))
    (res,) = eng.generate([req("g", temperature=0.0, n=3)])
    assert scripted_server.bodies[0]["n"] == 1
    assert res.texts == ["g#0"] * 3 and len(res.finish_reasons) == 3


def test_serve_mode_uses_a_server_already_on_its_port(scripted_server):
    models = ModelsConfig(models={"m": ModelEntry(mode="serve", port=scripted_server.port)})
    eng = open_engine("m", models)
    assert type(eng) is ServedEngine  # nothing started: the port already answers
    (res,) = eng.generate([req("hi")])
    assert res.texts == ["hi#0"] and scripted_server.bodies[0]["model"] == "m"


def test_open_engine_wraps_in_cache(scripted_server, tmp_path):
    models = ModelsConfig(models={"m": entry(scripted_server.url)})
    eng = open_engine("m", models, cache=tmp_path / "c.sqlite")
    eng.generate([req("a")])
    (again,) = eng.generate([req("a")])
    assert again.cached and len(scripted_server.bodies) == 1
