"""Equal answers vote together: the pairs the hand-written normaliser split."""

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.heuristic.answer_equivalence import answer_keys
from synth.filters.heuristic.answers import normalize_answer
from synth.filters.heuristic.consistency import ConsistencyOptions, SelfConsistency

PAIRS = [
    (r"\$5", "5"),
    (r"50\%", "50"),
    ("x=3", "3"),
    (r"\sqrt{2}", r"\sqrt2"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"),
]


@pytest.mark.parametrize("a,b", PAIRS)
def test_pairs_the_normaliser_splits_are_one_answer(a, b):
    assert normalize_answer(a) != normalize_answer(b)  # the finding, reproduced
    assert answer_keys([a, b])[0] == answer_keys([a, b])[1]
    assert answer_keys([b, a])[0] == answer_keys([b, a])[1]
    assert len(set(answer_keys([a, b], "normalize"))) == 2


@pytest.mark.parametrize(
    "a,b", [("5", "6"), (r"\sqrt{2}", "2"), (r"\frac{1}{2}", r"\frac{1}{3}"), ("B", "C"), ("x=3", "x=4")]
)
def test_different_answers_stay_apart(a, b):
    ka, kb = answer_keys([a, b])
    assert ka != kb


def test_plain_number_names_the_group_and_letters_are_not_maths():
    assert answer_keys(["x=3", "3", "x = 3"]) == ["3", "3", "3"]
    assert answer_keys(["(B)", "B", "b", None]) == ["B", "B", "B", None]
    assert answer_keys(["1,000", "1000.0", r"\$1,000"]) == ["1000", "1000", "1000"]


def test_consistency_votes_equal_latex_answers_together():
    rows = [
        {
            "id": "a",
            "responses": [r"So \boxed{\frac{\sqrt{3}}{2}}", r"\boxed{\frac{1}{2}\sqrt{3}}", r"\boxed{\sqrt{3}}"],
        }
    ]
    stage = SelfConsistency(ConsistencyOptions(min_agree=2))
    out = stage.process(pa.Table.from_pylist(rows), Shard("02-consistency", 0, "p", 0))
    assert out.column("consistency_votes").to_pylist() == [2]
    assert out.column("answer").to_pylist() == [r"\frac{\sqrt{3}}{2}"]
    old = SelfConsistency(ConsistencyOptions(min_agree=2, equivalence="normalize"))
    shard = Shard("02-consistency", 0, "p", 0)
    assert old.process(pa.Table.from_pylist(rows), shard).num_rows == 0 and shard.dropped == {"no_majority": 1}
