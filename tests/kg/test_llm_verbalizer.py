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


def _factory(graph, engine, retries=2, back_translate=False):
    cfg = WalkConfig(verbalizer="llm", llm_retries=retries, irrelevance_share=0.0, back_translate=back_translate)
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


# -- back-translation ---------------------------------------------------------------


def _drafts(graph, seeds):
    """Template question -> query tree, for a fake model that can 'parse' exactly those."""
    out = SampleFactory(graph, WalkConfig(irrelevance_share=0.0)).make(seeds)
    return {o.record["messages"][1]["content"]: json.loads(o.record["meta"])["query"] for o in out if o.record}


def _parrot(trees, wrong=False):
    """Paraphrases by repeating the draft; back-translates to the right tree (or a wrong one)."""

    def script(request, index):
        prompt = request.messages[-1]["content"]
        if request.key.split(":")[-1].startswith("b"):
            question = prompt.split("Question: ", 1)[1].split("\n", 1)[0]
            tree = trees[question]
            if wrong:  # the first anchor alone: never the original's answers (those exclude anchors)
                anchor = next(line for line in prompt.splitlines() if line.startswith("Entities: "))
                tree = {"entity": re.findall(r'"([^"]+)"', anchor)[0]}
            return "Sure:\n```json\n" + json.dumps(tree) + "\n```"
        return prompt.split("Question: ", 1)[1].split("\n", 1)[0]

    return script


def test_back_translation_accepts_an_equivalent_tree(nations):
    seeds = sample_seeds(11, 0, 12)
    engine = llm.FakeEngine(_parrot(_drafts(nations, seeds)))
    f = _factory(nations, engine, back_translate=True)
    out = f.make(seeds)
    assert all(o.record for o in out), [o.reason for o in out]
    assert engine.calls == 2  # one batch of paraphrases, one of back-translations
    assert f.llm.stats["back_translation.accepted"] == len(out)
    # the back-translation prompt names the query's relations, so a model can write the tree
    back = [r for r in engine.requests_seen if r.key.endswith(":b0")]
    assert back and all("Relations: " in r.messages[-1]["content"] for r in back)


def test_back_translation_rejects_and_counts_a_different_tree(nations):
    seeds = sample_seeds(12, 0, 8)
    engine = llm.FakeEngine(_parrot(_drafts(nations, seeds), wrong=True))
    f = _factory(nations, engine, retries=1, back_translate=True)
    out = f.make(seeds)
    assert [o.reason for o in out] == ["llm_back_translation_mismatch"] * len(seeds)
    assert f.llm.stats["back_translation.mismatch"] == 2 * len(seeds)  # first try and one retry
    assert engine.calls == 4


def test_unparsable_back_translation_is_its_own_reason(nations):
    def script(request, index):
        prompt = request.messages[-1]["content"]
        if request.key.endswith(":b0"):
            return "I think the answer is a country."
        return prompt.split("Question: ", 1)[1].split("\n", 1)[0]

    f = _factory(nations, llm.FakeEngine(script), retries=0, back_translate=True)
    out = f.make(sample_seeds(13, 0, 4))
    assert [o.reason for o in out] == ["llm_back_translation_unparsable"] * 4


def test_parse_tree_takes_the_first_object():
    from kg.verbalize import parse_tree

    assert parse_tree('x {"entity": "a"} {"entity": "b"}') == {"entity": "a"}
    assert parse_tree('{broken {"or": []}') == {"or": []}
    assert parse_tree("no json") is None and parse_tree("[1, 2]") is None
