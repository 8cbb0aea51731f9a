"""The LLM verbaliser's contract, with synth's FakeEngine standing in for the model."""

import json
import re

import pytest

from kg.config import WalkConfig
from kg.generate import SampleFactory, sample_seeds
from kg.verify import verify

llm = pytest.importorskip("synth.llm")


def anchors_in(prompt: str) -> list[str]:
    line = next(text for text in prompt.splitlines() if "exactly as written" in text)
    line = line.split("exactly as written:", 1)[1].split(". Do not")[0]
    return re.findall(r'"([^"]+)"', line)


def good_question(request, index):
    return "Question: what links " + " and ".join(anchors_in(request.messages[-1]["content"])) + "?\n"


def forgetful(request, index):
    return "What links those two countries?"


def second_try(request, index):
    return forgetful(request, index) if request.key.endswith(":q0") else good_question(request, index)


def _factory(graph, engine, retries=2):
    cfg = WalkConfig(verbalizer="llm", llm_retries=retries, irrelevance_share=0.0)
    return SampleFactory(graph, cfg, engine=engine)


def test_llm_question_replaces_template(nations):
    engine = llm.FakeEngine(good_question)
    f = _factory(nations, engine)
    out = f.make(sample_seeds(1, 0, 20))
    assert all(o.record for o in out)
    assert engine.calls == 1  # one batch for the whole call
    for o in out:
        meta = json.loads(o.record["meta"])
        q = o.record["messages"][1]["content"]
        assert meta["verbalizer"] == "llm" and q.startswith("what links") and meta["template_question"] != q
        assert all(a in q for a in meta["anchors"])
        assert verify(o.record, f.executor) is None


def test_retry_then_success(nations):
    engine = llm.FakeEngine(second_try)
    out = _factory(nations, engine).make(sample_seeds(2, 0, 10))
    assert all(o.record for o in out)
    assert engine.calls == 2
    assert {r.key.rsplit(":", 1)[1] for r in engine.requests_seen} == {"q0", "q1"}


def test_missing_anchor_is_dropped_with_reason(nations):
    engine = llm.FakeEngine(forgetful)
    out = _factory(nations, engine, retries=1).make(sample_seeds(3, 0, 10))
    assert all(o.record is None and o.reason == "llm_missing_anchor" for o in out)
    assert engine.calls == 2


def test_engine_errors_are_dropped(nations):
    f = _factory(nations, llm.FakeEngine(good_question), retries=0)
    keys = {f"{nations.name}:{s}:q0" for s in sample_seeds(4, 0, 3)}
    f.llm.engine = llm.FakeEngine(good_question, fail_keys=keys)
    out = f.make(sample_seeds(4, 0, 3))
    assert [o.reason for o in out] == ["llm_error"] * 3


def test_irrelevance_keeps_template_wording(nations):
    engine = llm.FakeEngine(good_question)
    cfg = WalkConfig(verbalizer="llm", irrelevance_share=1.0)
    out = SampleFactory(nations, cfg, engine=engine).make(sample_seeds(5, 0, 5))
    assert all(o.record for o in out) and engine.calls == 0


def test_echoed_prompts_and_labels():
    from kg.verbalize import clean_question, question_problem

    assert clean_question('Rewritten question: "What does usa export?"\nThe answer is x') == "What does usa export?"
    assert question_problem('Query (JSON): {"entity": "usa"}', "What does usa export?") == "llm_echoed_prompt"
    assert question_problem("Rewrite the question about usa", "q") == "llm_echoed_prompt"
    assert question_problem("usa " * 200, "short") == "llm_too_long"
    assert question_problem("Which countries does the usa export books to?", "draft") is None


def test_echo_is_retried_then_dropped(nations):
    engine = llm.FakeEngine(lambda req, i: "Query (JSON): " + req.messages[-1]["content"])
    out = _factory(nations, engine, retries=1).make(sample_seeds(6, 0, 4))
    assert [o.reason for o in out] == ["llm_echoed_prompt"] * 4 and engine.calls == 2
