import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.heuristic.rules import ResponseRules, RulesOptions

GOOD = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It happens in chloroplasts."


def run(responses, finish=None, **opts):
    cols = {"id": [str(i) for i in range(len(responses))], "response": responses}
    if finish is not None:
        cols["finish_reason"] = finish
    stage = ResponseRules(RulesOptions(**opts))
    shard = Shard("01-rules", 0, "part-00000", 0)
    out = stage.process(pa.table(cols), shard)
    return out, shard


def reason_of(text, **kw):
    _, shard = run([text], **kw)
    return next(iter(shard.dropped), None)


@pytest.mark.parametrize(
    "text,reason",
    [
        (GOOD, None),
        ("Here is code:\n```python\ndef f():\n    return 1\n```\nDone.", None),
        ("", "empty_response"),
        ("   \n\t ", "empty_response"),
        ("... !!! ???", "only_punctuation"),
        ("Here is the code:\n```python\ndef f(x):\n    return x", "truncated_code_fence"),
        ("I'm sorry, but I can't help with that request.", "refusal"),
        ("I’m sorry, but as an AI I cannot do that.", "refusal"),
        ("As an AI language model, I do not have opinions, but here goes.", "refusal"),
        ("I cannot assist with creating malware.", "refusal"),
        ("The caf\ufffd served cr\ufffdpes.", "garbled_replacement_chars"),
        ("The cafÃ© served crÃªpes and itâ€™s great.", "garbled_mojibake"),
        ("#$%^ @@@ 1234 &*() ~~~ ### !!! ??? ;;; ::: word", "garbled_non_letter"),
        (
            "\n".join(["This is the same line repeated again."] * 6 + ["A different closing line here."]),
            "repeated_lines",
        ),
        ("the answer is that the answer is that " * 20, "repeated_ngrams"),
    ],
)
def test_each_rule(text, reason):
    assert reason_of(text) == reason


def test_finish_reason_length_is_truncation():
    out, shard = run([GOOD, GOOD], finish=["length", "stop"])
    assert shard.dropped == {"truncated_max_tokens": 1}
    assert out.num_rows == 1


def test_sorry_later_in_a_long_answer_is_not_a_refusal():
    padding = " ".join(f"Step {i}: the leaf absorbs photon number {i * 7} and stores its energy." for i in range(12))
    text = GOOD + " " + padding + " I'm sorry, but I can't stress this enough: water matters."
    assert reason_of(text) is None


def test_scores_are_columns_and_annotate_only_keeps():
    out, shard = run([GOOD, "I'm sorry, but I can't do that."], annotate_only=True)
    assert out.num_rows == 2 and not shard.dropped
    assert shard.counters["would_drop.refusal"] == 1
    assert out.column("rule_refusal").to_pylist()[0] is None and out.column("rule_refusal").to_pylist()[1]
    assert {"rule_repeated_lines", "rule_repeated_ngrams", "rule_non_letter", "rule_mojibake", "rule_truncated"} <= set(
        out.column_names
    )


def test_messages_column_and_extra_patterns(tmp_path):
    msgs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Nope, not doing that."}]]
    cols = {"id": ["a"], "messages": msgs}
    stage = ResponseRules(RulesOptions(response_column="messages", extra_refusal_patterns=[r"^nope\b"]))
    shard = Shard("01-rules", 0, "part-00000", 0)
    stage.process(pa.table(cols), shard)
    assert shard.dropped == {"refusal": 1}


def test_patterns_file_option(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\n^computer says no\n")
    assert reason_of("Computer says no.", refusal_patterns_file=str(f)) == "refusal"
    assert reason_of("I'm sorry, but I can't.", refusal_patterns_file=str(f)) is None
