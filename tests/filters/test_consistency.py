import pyarrow as pa

from synth.core.stage import Shard
from synth.filters.heuristic.consistency import ConsistencyOptions, SelfConsistency


def run(rows, **opts):
    table = pa.Table.from_pylist(rows)
    stage = SelfConsistency(ConsistencyOptions(**opts))
    shard = Shard("02-consistency", 0, "part-00000", 0)
    return stage.process(table, shard), shard


def test_majority_kept_and_minority_dropped():
    rows = [
        {
            "id": "a",
            "responses": ["2+2 makes 4. The answer is 4.", "It is four: #### 4", r"\boxed{5}", "The answer is 4.0"],
        },
        {"id": "b", "responses": [r"\boxed{1}", r"\boxed{2}", r"\boxed{3}", r"\boxed{4}"]},
        {"id": "c", "responses": ["I do not know.", "No idea.", "Hmm.", "Unsure."]},
        {"id": "d", "responses": ["The answer is 1,000", "The answer is 1000", "The answer is 7", "The answer is 7"]},
    ]
    out, shard = run(rows, min_agree=2)
    assert out.column("id").to_pylist() == ["a"]
    assert out.column("response").to_pylist() == ["2+2 makes 4. The answer is 4."]
    assert out.column("answer").to_pylist() == ["4"]
    assert out.column("agreement").to_pylist() == [0.75]
    assert shard.dropped == {"no_majority": 2, "no_answer_extracted": 1}  # b (all differ), d (a tie), c


def test_truncated_samples_do_not_vote_and_messages_updated():
    rows = [
        {
            "id": "a",
            "responses": [
                "The answer is 3",
                "The answer is 3",
                "The answer is 9",
                "The answer is 9",
                "The answer is 9",
            ],
            "finish_reasons": ["stop", "stop", "length", "length", "stop"],
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "old"}],
        }
    ]
    out, shard = run(rows, min_agree=2)
    assert out.column("answer").to_pylist() == ["3"]
    assert out.column("messages").to_pylist()[0][1]["content"] == "The answer is 3"
    out, _ = run(rows, min_agree=2, count_truncated=True)
    assert out.column("answer").to_pylist() == ["9"]


def test_k_threshold_and_fraction():
    rows = [{"id": "a", "responses": ["The answer is 3", "The answer is 3", "The answer is 5", "x"]}]
    assert run(rows, min_agree=3)[1].dropped == {"no_majority": 1}
    assert run(rows, min_agree=2, min_fraction=0.6)[1].dropped == {"no_majority": 1}
    assert run(rows, min_agree=2, min_fraction=0.5)[0].num_rows == 1


def test_rows_outside_domains_or_single_sample_pass():
    rows = [
        {"id": "code", "domain": "code", "responses": ["```python\nprint(1)\n```", "other"]},
        {"id": "one", "domain": "math", "responses": ["The answer is 3"]},
        {"id": "vote", "domain": "math", "responses": ["The answer is 3", "The answer is 4"]},
    ]
    out, shard = run(rows, domains=["math"])
    assert out.column("id").to_pylist() == ["code", "one"]
    assert out.column("response").to_pylist() == ["```python\nprint(1)\n```", "The answer is 3"]
    assert out.column("agreement").to_pylist() == [None, None]
    assert shard.dropped == {"no_majority": 1}
