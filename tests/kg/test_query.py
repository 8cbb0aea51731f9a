import random

import pytest

from kg.query import (
    PATTERN_SHAPES,
    PATTERNS,
    QueryError,
    QuerySampler,
    anchors_of,
    evaluate,
)


def shape_of(node: dict):
    """The pattern shape a query tree has (inverse of grounding), to check the sampler."""
    if "entity" in node:
        return ("e",)
    if "relation" in node:
        return ("p", shape_of(node["of"]))
    if "not" in node:
        return ("not", shape_of(node["not"]))
    kind = "and" if "and" in node else "or"
    return (kind, [shape_of(c) for c in node[kind]])


def test_evaluate_semantics(tiny):
    e = {"entity": "alice"}
    knows = {"relation": "knows", "of": e}
    assert evaluate(knows, tiny) == ["bob", "carol"]
    assert evaluate({"relation": "knows", "of": knows}, tiny) == ["dave", "erin"]
    assert evaluate({"relation": "knows", "of": {"entity": "dave"}, "inverse": True}, tiny) == ["bob", "carol"]
    likes_tea = {"relation": "likes", "of": {"entity": "tea"}, "inverse": True}
    likes_coffee = {"relation": "likes", "of": {"entity": "coffee"}, "inverse": True}
    assert evaluate({"and": [knows, likes_tea]}, tiny) == ["bob"]
    assert evaluate({"or": [likes_tea, likes_coffee]}, tiny) == ["bob", "carol", "dave", "erin"]
    assert evaluate({"and": [likes_coffee, {"not": knows}]}, tiny) == ["erin"]
    with pytest.raises(QueryError):
        evaluate({"not": knows}, tiny)
    with pytest.raises(QueryError):
        evaluate({"entity": "nobody"}, tiny)


@pytest.mark.parametrize("graph_name", ["nations", "fb15k", "umls"])
def test_every_pattern_samples_and_evaluates_to_its_answer(request, graph_name):
    graph = request.getfixturevalue(graph_name)
    sampler = QuerySampler(graph, max_answers=10, max_intermediate=30)
    rng = random.Random(7)
    for pattern in PATTERNS:
        got = 0
        for _ in range(5):
            sq, _reason = sampler.sample(pattern, rng, attempts=300)
            if sq is None:
                continue
            got += 1
            assert shape_of(sq.tree) == PATTERN_SHAPES[pattern], pattern
            assert evaluate(sq.tree, graph) == sq.answer
            assert 1 <= len(sq.answer) <= 10
            assert sq.anchors == anchors_of(sq.tree) and len(set(sq.anchors)) == len(sq.anchors)
            assert all(r in graph.relation_index for r in _relations(sq.tree))
        assert got >= 3, f"{pattern} on {graph_name}: only {got}/5"


def _relations(node):
    if "relation" in node:
        yield node["relation"]
        yield from _relations(node["of"])
    for c in node.get("and", node.get("or", [])):
        yield from _relations(c)
    if "not" in node:
        yield from _relations(node["not"])


def test_negation_removes_something(nations):
    sampler = QuerySampler(nations)
    rng = random.Random(3)
    for pattern in ("2in", "3in", "inp", "pin", "pni"):
        sq, _ = sampler.sample(pattern, rng, attempts=300)
        tree = sq.tree if "and" in sq.tree else sq.tree["of"]
        without = {"and": [c for c in tree["and"] if "not" not in c]}
        if len(without["and"]) == 1:
            without = without["and"][0]
        assert set(evaluate(without, nations)) > set(evaluate(tree, nations))


def test_sampling_is_seeded(fb15k):
    sampler = QuerySampler(fb15k)
    a = [sampler.sample(p, random.Random(11))[0] for p in PATTERNS]
    b = [sampler.sample(p, random.Random(11))[0] for p in PATTERNS]
    assert [x.tree if x else None for x in a] == [x.tree if x else None for x in b]


def test_forward_only_walks(nations):
    sampler = QuerySampler(nations, allow_inverse=False)
    rng = random.Random(1)
    for pattern in PATTERNS:
        sq, _ = sampler.sample(pattern, rng, attempts=300)
        if sq is not None:
            assert '"inverse"' not in str(sq.tree).replace("'", '"')
            assert evaluate(sq.tree, nations) == sq.answer
