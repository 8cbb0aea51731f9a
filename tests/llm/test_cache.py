"""The request cache: hits never reach the engine, partial n, failures not cached,
results kept as they finish, several processes on one file."""

from __future__ import annotations

import multiprocessing as mp

from synth.llm.cache import CachedEngine, CachedSample, RequestCache
from synth.llm.fake import FakeEngine
from synth.llm.types import ChatRequest, ChatResult, SamplingParams, request_hash
from synth.llm.usage import usage_counters


def req(text: str, **sp) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], SamplingParams(**sp), key=text)


def counting_script():
    calls = {"n": 0}

    def script(r, i):
        calls["n"] += 1
        return f"{r.messages[-1]['content']}/{calls['n']}"

    return script, calls


def test_second_run_is_served_from_cache_without_engine_calls(tmp_path):
    script, calls = counting_script()
    fake = FakeEngine(script)
    engine = CachedEngine(fake, RequestCache(tmp_path / "c.sqlite"))
    first = engine.generate([req("a"), req("b")])
    assert calls["n"] == 2 and fake.calls == 1
    # A new process would open a new cache object on the same file.
    engine2 = CachedEngine(fake, RequestCache(tmp_path / "c.sqlite"))
    second = engine2.generate([req("a"), req("b")])
    assert fake.calls == 1 and calls["n"] == 2
    assert [r.texts for r in second] == [r.texts for r in first]
    assert all(r.cached for r in second)
    assert engine2.cache.hits == 2
    counters = usage_counters(second, "fake")
    assert counters["llm.fake.cache_hits"] == 2
    assert counters["llm.fake.completion_tokens"] == 0  # hits cost nothing


def test_key_covers_model_messages_params_and_sample_index():
    m = [{"role": "user", "content": "x"}]
    base = request_hash("m1", m, SamplingParams(), 0)
    assert base == request_hash("m1", [{"content": "x", "role": "user"}], SamplingParams(), 0)
    assert base != request_hash("m2", m, SamplingParams(), 0)
    assert base != request_hash("m1", [{"role": "user", "content": "y"}], SamplingParams(), 0)
    assert base != request_hash("m1", m, SamplingParams(temperature=0.1), 0)
    assert base != request_hash("m1", m, SamplingParams(json_schema={"type": "object"}), 0)
    assert base != request_hash("m1", m, SamplingParams(seed=3), 0)
    assert base != request_hash("m1", m, SamplingParams(), 1)
    # n is not part of a sample's identity: sample 0 of n=1 is sample 0 of n=3.
    assert base == request_hash("m1", m, SamplingParams(n=3), 0)


def test_growing_n_only_generates_missing_samples(tmp_path):
    script, calls = counting_script()
    fake = FakeEngine(script)
    engine = CachedEngine(fake, RequestCache(tmp_path / "c.sqlite"))
    (one,) = engine.generate([req("q", n=2)])
    (more,) = engine.generate([req("q", n=5)])
    assert calls["n"] == 5  # 2 then only the 3 missing
    assert more.texts[:2] == one.texts
    assert len(set(more.texts)) == 5
    assert more.cached_samples == 2 and not more.cached
    assert fake.requests_seen[-1].sampling.n == 3


def test_failures_are_not_cached_and_are_retried(tmp_path):
    fake = FakeEngine(fail_keys={"bad"})
    engine = CachedEngine(fake, RequestCache(tmp_path / "c.sqlite"))
    results = engine.generate([req("good"), req("bad")])
    assert results[0].ok and not results[1].ok
    fake.fail_keys.clear()
    results = engine.generate([req("good"), req("bad")])
    assert results[0].cached and results[1].ok and not results[1].cached
    assert [r.key for r in fake.requests_seen] == ["good", "bad", "bad"]


def test_results_are_kept_as_they_finish_even_if_the_batch_dies(tmp_path):
    class DiesHalfway(FakeEngine):
        def generate(self, requests, progress=None):
            for i, r in enumerate(requests[:3]):
                progress(i, ChatResult([f"ok {r.key}"], ["stop"], 1, 1))
            raise KeyboardInterrupt  # the process is stopped mid-batch

    cache = RequestCache(tmp_path / "c.sqlite")
    engine = CachedEngine(DiesHalfway(), cache)
    try:
        engine.generate([req(f"r{i}") for i in range(6)])
    except KeyboardInterrupt:
        pass
    fake = FakeEngine()
    resumed = CachedEngine(fake, RequestCache(tmp_path / "c.sqlite")).generate([req(f"r{i}") for i in range(6)])
    assert [r.cached for r in resumed] == [True] * 3 + [False] * 3
    assert [r.key for r in fake.requests_seen] == ["r3", "r4", "r5"]


def _writer(path: str, start: int) -> None:
    engine = CachedEngine(FakeEngine(), RequestCache(path))
    engine.generate([req(f"p{i}") for i in range(start, start + 200)])


def test_several_processes_share_one_cache_file(tmp_path):
    path = str(tmp_path / "c.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 100, 150)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(RequestCache(path)) == 350  # overlaps stored once


def _open_at_once(path: str, barrier) -> None:
    barrier.wait()
    RequestCache(path).put_many([(f"k{mp.current_process().pid}", "m", CachedSample("x", "stop", 1, 1))])


def test_many_processes_creating_one_cache_file_at_once_all_open_it(tmp_path):
    # Found by CI: a worker died with "database is locked" from PRAGMA journal_mode=WAL,
    # which SQLite refuses without waiting while another connection switches a new file.
    ctx = mp.get_context("fork")
    for trial in range(8):
        path = str(tmp_path / f"c{trial}.sqlite")
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        assert len(RequestCache(path)) == 6


def test_order_is_preserved_with_mixed_hits(tmp_path):
    engine = CachedEngine(FakeEngine(), RequestCache(tmp_path / "c.sqlite"))
    engine.generate([req("b"), req("d")])
    out = engine.generate([req(x) for x in "abcde"])
    assert [r.texts[0] for r in out] == [f"echo[0]: {x}" for x in "abcde"]
    assert [r.cached for r in out] == [False, True, False, True, False]
