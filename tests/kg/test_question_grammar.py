"""The template verbaliser: readable steps for nested queries, phrases from relation labels."""

import random

import pytest

from kg.verbalize import TemplateVerbalizer, verb_reading

FLAT = ("1p", "2i", "3i", "2u", "2in", "3in")
NESTED = ("2p", "3p", "ip", "pi", "up", "inp", "pin", "pni")


@pytest.fixture(scope="module")
def tv():
    return TemplateVerbalizer()


def test_labels_become_readable_phrases(tv):
    assert tv._rel("_derivationally_related_form")[1:] == ("derivationally related form", None)
    assert tv._rel("_hypernym")[1] == "hypernym"
    assert tv._rel("result_of")[2] == "is the result of"
    assert tv._rel("interacts_with")[2] == "interacts with"
    assert tv._rel("isa")[2] == "is a kind of"
    assert tv._rel("affects")[2] == "affects"
    assert tv._rel("/film/film/language")[1:] == ("language", None)


def test_verb_reading_keeps_nouns_nouns():
    assert verb_reading("treaties", set(), False) is None
    assert verb_reading("conferences", set(), False) is None
    assert verb_reading("associated with", set(), False) == "is associated with"
    assert verb_reading("award nominations nominated for", set(), True) is None


def test_wordnet_style_question_reads_as_words(tv):
    tree = {"relation": "_derivationally_related_form", "of": {"entity": "dog"}}
    q = tv.question(tree, random.Random(0))
    assert "derivationally related form" in q and "_" not in q and "dog" in q


def _by_pattern(graph, patterns):
    import json

    from kg.config import WalkConfig
    from kg.generate import SampleFactory, sample_seeds

    f = SampleFactory(graph, WalkConfig(patterns={p: 1 for p in patterns}, irrelevance_share=0.0, error_share=0.0))
    out = {}
    for o in f.make(sample_seeds(31, 0, 120)):
        if o.record:
            out.setdefault(json.loads(o.record["meta"])["pattern"], []).append(o.record["messages"][1]["content"])
    return out


def test_nested_queries_are_read_as_steps(umls):
    questions = _by_pattern(umls, NESTED)
    assert set(questions) == set(NESTED)
    for pattern, qs in questions.items():
        for q in qs:
            assert q.startswith(("First find", "Start from")), (pattern, q)
            assert any(w in q for w in ("those", "them", "from step")), (pattern, q)
            # no step nests a set inside a set inside a set any more
            assert q.count(" any of ") <= 2, q
    # 3p has three steps: first, next, last
    assert all(q.count(". ") >= 2 for q in questions["3p"])


def test_flat_queries_stay_one_sentence(nations):
    for pattern, qs in _by_pattern(nations, FLAT).items():
        for q in qs:
            assert not q.startswith(("First find", "Start from")), (pattern, q)
            assert q.rstrip("?.").count(". ") == 0, q


def test_a_step_that_is_not_the_last_is_named_by_number(tv):
    # Two nested branches (not one of the 14 patterns, but the grammar handles it): the
    # first branch's step is not the one just before, so it is referred to by number.
    tree = {
        "and": [
            {"relation": "r", "of": {"relation": "s", "of": {"entity": "a"}}},
            {"relation": "t", "of": {"relation": "u", "of": {"entity": "b"}}},
        ]
    }
    q = tv.question(tree, random.Random(1))
    assert "step 1" in q and q.count(". ") >= 2
