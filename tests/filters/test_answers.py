import pytest

from synth.filters.heuristic.answers import extract_answer, normalize_answer


@pytest.mark.parametrize(
    "text,answer",
    [
        (r"So the result is \boxed{\frac{3}{4}}.", "3/4"),
        (r"\boxed{x^{2}+1}", "x^{2}+1"),
        ("Thus it is 0.75. The answer is 0.75.", "3/4"),
        ("She makes 9 * 2 = $18.\n#### 18", "18"),
        ("Total:\n#### 1,000", "1000"),
        ("The answer is $1,000.00", "1000"),
        ("The final answer is 18 dollars.", "18"),
        ("The answer is (B).", "B"),
        ("Answer: c", "C"),
        ("5 apples and 7 pears make 12", "12"),
        ("answer is 50%", "50"),
        ("The answer is -2.50", "-5/2"),
        ("It is 3/6 of the cake, so the answer is 3/6", "1/2"),
        ("no numbers here at all", None),
        ("", None),
    ],
)
def test_extract(text, answer):
    assert extract_answer(text) == answer


def test_fallback_can_be_disabled():
    assert extract_answer("we get 12", last_number_fallback=False) is None


def test_normalize_keeps_non_thousand_commas_as_text():
    assert normalize_answer("1,5") == "1,5"
    assert normalize_answer("12,345,678") == "12345678"
