import copy
import json
import random

import pytest

from kg.config import WalkConfig
from kg.generate import SampleFactory, sample_seeds
from kg.query import PATTERNS, evaluate
from kg.verify import verify


@pytest.fixture(scope="module")
def fb_factory(fb15k):
    return SampleFactory(fb15k, WalkConfig(irrelevance_share=0.0))


@pytest.fixture(scope="module")
def nations_factory(nations):
    return SampleFactory(nations, WalkConfig(irrelevance_share=0.0))


@pytest.fixture(scope="module")
def fb_samples(fb15k):
    f = SampleFactory(fb15k, WalkConfig())
    return [o.record for o in f.make(sample_seeds(1, 0, 300)) if o.record]


@pytest.mark.parametrize("graph_name", ["fb15k", "nations"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_pattern_yields_verified_samples(request, graph_name, pattern):
    graph = request.getfixturevalue(graph_name)
    factory = SampleFactory(graph, WalkConfig(patterns={pattern: 1}, irrelevance_share=0.0, query_attempts=300))
    outcomes = factory.make(sample_seeds(5, 0, 6))
    records = [o.record for o in outcomes if o.record]
    assert len(records) >= 4, [o.reason for o in outcomes]
    for rec in records:
        meta = json.loads(rec["meta"])
        assert meta["pattern"] == pattern
        assert evaluate(meta["query"], graph) == meta["answer"]
        assert verify(rec, factory.executor) is None


def test_record_format(fb_samples):
    rec = next(r for r in fb_samples if json.loads(r["meta"])["variant"] == "plain")
    assert rec["kind"] == "tool_use" and rec["id"] and rec["domain"]
    assert set(json.loads(rec["meta"])) >= {"query", "answer", "pattern", "anchors", "seed"}
    msgs = rec["messages"]
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user" and msgs[-1]["role"] == "assistant"
    tools = json.loads(rec["tools"])
    offered = {t["function"]["name"] for t in tools}
    for m in msgs:
        for call in m["tool_calls"] or []:
            assert call["type"] == "function" and call["id"].startswith("call_")
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
            assert call["function"]["name"] in offered
    answered = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
    asked = [c["id"] for m in msgs for c in m["tool_calls"] or []]
    assert answered == asked
    needed = {c["function"]["name"] for m in msgs for c in m["tool_calls"] or []}
    assert len(offered) > len(needed)  # distractors


def test_independent_branches_are_parallel_calls(nations):
    factory = SampleFactory(
        nations, WalkConfig(patterns={"3i": 1}, irrelevance_share=0, error_share=0, lookup_share=0, query_attempts=300)
    )
    rec = next(o.record for o in factory.make(sample_seeds(0, 0, 5)) if o.record)
    calls = [m["tool_calls"] for m in rec["messages"] if m["tool_calls"]]
    assert len(calls[0]) == 3  # the three branches at once
    assert [c["function"]["name"] for c in calls[1]] == ["intersect_sets"]


def test_self_correction_and_irrelevance_variants(fb_samples, fb15k):
    variants = {}
    for r in fb_samples:
        variants.setdefault(json.loads(r["meta"])["variant"], []).append(r)
    assert {"plain", "self_correction", "irrelevance"} <= set(variants)
    for rec in variants["self_correction"]:
        tool_results = [json.loads(m["content"]) for m in rec["messages"] if m["role"] == "tool"]
        assert any("error" in t for t in tool_results)
        i = next(
            k for k, m in enumerate(rec["messages"]) if m["role"] == "tool" and "error" in json.loads(m["content"])
        )
        fix = next(m for m in rec["messages"][i:] if m["role"] == "assistant")
        assert fix["content"] and fix["tool_calls"]  # says what went wrong, then calls again
    for rec in variants["irrelevance"]:
        assert not any(m["tool_calls"] for m in rec["messages"])
        assert json.loads(rec["meta"])["answer"] == []


def test_all_emitted_samples_verify(fb_samples, fb15k):
    from kg.tools import Executor, ToolRegistry

    ex = Executor(ToolRegistry(fb15k))
    assert len(fb_samples) >= 295
    assert all(verify(r, ex) is None for r in fb_samples)


def _tool_message(rec):
    return next(k for k, m in enumerate(rec["messages"]) if m["role"] == "tool" and "error" not in m["content"])


def _mutations():
    def tool_result(rec):
        k = _tool_message(rec)
        res = json.loads(rec["messages"][k]["content"])
        res["entities"] = res.get("entities", [])[1:] + ["Barack Obama"]
        rec["messages"][k]["content"] = json.dumps(res)

    def final_answer(rec):
        answer = json.loads(rec["meta"])["answer"]
        rec["messages"][-1]["content"] = rec["messages"][-1]["content"].replace(answer[0], "somebody else")

    def argument(rec):
        call = next(
            c for m in rec["messages"] for c in m["tool_calls"] or [] if "entities" in c["function"]["arguments"]
        )
        args = json.loads(call["function"]["arguments"])
        args["entities"] = ["United States of America"]
        call["function"]["arguments"] = json.dumps(args)

    def answer_in_meta(rec):
        meta = json.loads(rec["meta"])
        meta["answer"] = meta["answer"] + ["Barack Obama"]
        rec["meta"] = json.dumps(meta)

    def drop_tool_message(rec):
        del rec["messages"][_tool_message(rec)]

    def tool_not_offered(rec):
        tools = json.loads(rec["tools"])
        used = next(c["function"]["name"] for m in rec["messages"] for c in m["tool_calls"] or [])
        rec["tools"] = json.dumps([t for t in tools if t["function"]["name"] != used])

    return {
        "tool_result_mismatch": tool_result,
        "final_answer_incomplete": final_answer,
        ("tool_result_mismatch", "final_result_mismatch"): argument,
        "query_answer_mismatch": answer_in_meta,
        ("unanswered_tool_call", "call_before_results"): drop_tool_message,
        "call_to_unoffered_tool": tool_not_offered,
    }


@pytest.mark.parametrize("expected,mutate", list(_mutations().items()), ids=[m.__name__ for m in _mutations().values()])
def test_verification_catches_tampering(fb_samples, fb15k, expected, mutate):
    from kg.tools import Executor, ToolRegistry

    ex = Executor(ToolRegistry(fb15k))
    rec = copy.deepcopy(next(r for r in fb_samples if json.loads(r["meta"])["variant"] == "plain"))
    assert verify(rec, ex) is None
    mutate(rec)
    reason = verify(rec, ex)
    assert reason in ((expected,) if isinstance(expected, str) else expected)


def test_same_seed_same_samples(nations_factory):
    a = [o.record for o in nations_factory.make(sample_seeds(9, 0, 30))]
    b = [o.record for o in nations_factory.make(sample_seeds(9, 0, 30))]
    assert a == b
    c = [o.record for o in nations_factory.make(sample_seeds(10, 0, 30))]
    assert a != c


def test_answers_respect_bound(fb15k):
    factory = SampleFactory(fb15k, WalkConfig(max_answers=3, irrelevance_share=0))
    for o in factory.make(sample_seeds(2, 0, 60)):
        if o.record:
            assert 1 <= len(json.loads(o.record["meta"])["answer"]) <= 3


def test_misspelling_is_never_a_real_name():
    from kg.conversation import misspell

    rng = random.Random(0)
    for _ in range(200):
        bad = misspell("Steven Spielberg", rng)
        assert bad != "Steven Spielberg"


def test_one_sample_regenerates_from_its_meta_seed(fb15k, fb_samples):
    factory = SampleFactory(fb15k, WalkConfig())
    for rec in fb_samples[:20]:
        again = factory.make([json.loads(rec["meta"])["seed"]])[0].record
        assert again == rec
