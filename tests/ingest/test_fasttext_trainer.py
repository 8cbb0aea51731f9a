"""The one fastText trainer/evaluator shared by the quality and the domain classifiers."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import typer

from synth.ingest.fasttext_trainer import (
    TrainingDataError,
    label_metrics,
    read_labelled_jsonl,
    stratified_split,
    train_fasttext,
    train_or_exit,
)


def test_split_keeps_every_copy_of_a_text_on_one_side():
    pairs = [(f"text {i % 30}", "a" if i % 2 else "b") for i in range(300)]  # each text 10 times
    train, held = stratified_split(pairs, 0.2, seed=1, distinct_texts=True)
    assert not {t for t, _ in train} & {t for t, _ in held}
    assert len(held) == len({t for t, _ in held}) and len(train) + 10 * len(held) == 300
    assert Counter(lab for _, lab in held) == {"a": 3, "b": 3}  # stratified: 15 distinct texts per label
    plain_train, plain_held = stratified_split(pairs, 0.2, seed=1)
    assert len(plain_held) == 60 and len(plain_train) == 240  # without: copies counted one by one


def test_a_label_with_one_text_stays_in_training():
    train, held = stratified_split(
        [("x", "rare")] + [(f"y{i}", "common") for i in range(10)], 0.5, seed=0, distinct_texts=True
    )
    assert ("x", "rare") in train and all(lab == "common" for _, lab in held)


def test_label_metrics_counts_precision_recall_and_support():
    m = label_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], digits=3)
    assert m["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}
    assert m["b"]["precision"] == 0.667 and m["b"]["recall"] == 1.0
    assert set(label_metrics(["a"], ["c"])) == {"a", "c"}


def test_reader_counts_what_it_skips(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"text": "t", "domain": "d"}),
                "{broken",
                json.dumps({"text": 3, "domain": "d"}),
                json.dumps(["t"]),
                "",
            ]
        )
        + "\n"
    )
    counts: Counter = Counter()
    assert read_labelled_jsonl(path, counts, label_field="domain") == [("t", "d")]
    assert counts == {"skipped_malformed_jsonl": 1, "skipped_no_text_or_domain": 2}


def test_training_is_deterministic_and_quantizes_both_ways(tmp_path):
    rows = [("math", f"solve x + {i} = {2 * i}") for i in range(50)] + [
        ("chat", f"hello there friend number {i}") for i in range(50)
    ]
    kw = dict(epoch=5, lr=0.5, dim=8, word_ngrams=2, bucket=1000, seed=3)
    a, b = train_fasttext(rows, **kw), train_fasttext(rows, **kw)
    for model, name in ((a, "a.bin"), (b, "b.bin")):
        model.save_model(str(tmp_path / name))
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    for retrain in (False, True):
        q = train_fasttext(rows, **kw, quantize=True, retrain_quantized=retrain, cutoff=500)
        q.save_model(str(tmp_path / "q.ftz"))
        assert (tmp_path / "q.ftz").stat().st_size < (tmp_path / "a.bin").stat().st_size
        assert q.predict("solve x + 7 = 14")[0][0] == "__label__math"


def test_train_or_exit_turns_user_errors_into_one_line_and_code_2(capsys):
    def bad(**_):
        raise TrainingDataError("examples not found: nowhere.jsonl")

    with pytest.raises(typer.Exit) as exit_info:
        train_or_exit(bad)
    assert exit_info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == "error: examples not found: nowhere.jsonl"
    assert train_or_exit(lambda x: {"ok": x}, 1) == {"ok": 1}
