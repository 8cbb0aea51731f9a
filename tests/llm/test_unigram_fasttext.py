"""The vectorised prediction of word-unigram fastText models gives fastText's own labels
and confidences, bit for bit, and stays out of the way of models it does not cover."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from synth.ingest.fasttext_trainer import train_fasttext
from synth.llm.domain_model import (
    DEFAULT_MODEL_PATH,
    FastTextDomainModel,
    domain_tokens_many,
    normalised_buffer,
)
from synth.llm.unigram_fasttext import UnigramFastText

ODD_TEXTS = [
    "",
    " ",
    "\x1f",
    "a\x1fb\x1f",
    "Hello\x00World\r\nTabs\tand\x0bfeeds\x0c\x7f",
    "x" * 3000,
    "é" * 50,
    "naïve café " * 30,
    "ü" * 40 + " " + "a" * 30 + " " + "b" * 12 + " " + "c" * 9 + " " + "d" * 17 + " " + "e" * 24 + " " + "f" * 25,
    "\ud800 a lone surrogate?",
    "日本語のテキスト" * 20,
    "A.B,C!(x)=[y]{z}__label__math",
    "photosynthesis mitochondria electrocardiogram pneumonoultramicroscopic",
    "What is the derivative of sin(x) * e^x?",
]


def _both(path: Path) -> tuple[FastTextDomainModel, FastTextDomainModel]:
    fast, own = FastTextDomainModel(path), FastTextDomainModel(path, vectorised=False)
    assert fast.unigram is not None and own.unigram is None
    return fast, own


def _mmlu_and_gsm8k(shared: Path, n: int) -> list[str]:
    texts = []
    for path in sorted((shared / "benchmarks" / "mmlu" / "dev").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            texts += [row["question"] for row in csv.DictReader(fh)]
    gsm8k = (shared / "benchmarks" / "gsm8k" / "test.jsonl").read_text().splitlines()
    return (texts + gsm8k)[:n]


def test_packaged_first_model_is_predicted_exactly_as_fasttext_does(shared_data):
    fast, own = _both(DEFAULT_MODEL_PATH)
    texts = _mmlu_and_gsm8k(shared_data, 1500) + ODD_TEXTS
    texts += [" ".join(texts[i : i + 7]) for i in range(0, 700, 7)]  # long, multi-question texts
    assert fast.predict(texts, cascade=False) == own.predict(texts, cascade=False)
    # the cascade (the unsure texts to the second model) gives the same answers either way
    labels, confs = fast.predict(texts)
    assert (labels, confs) == own.predict(texts)
    assert fast.cascade is not None and fast.margin > 0
    assert any(c < fast.margin for c in fast.predict(texts, cascade=False)[1])  # some were routed


def test_batches_of_any_size_and_chunking_agree(shared_data, monkeypatch):
    import synth.llm.unigram_fasttext as unigram

    fast = FastTextDomainModel(DEFAULT_MODEL_PATH)
    texts = _mmlu_and_gsm8k(shared_data, 300) + ODD_TEXTS
    one_by_one = [fast.predict([t], cascade=False) for t in texts]
    monkeypatch.setattr(unigram, "_CHUNK", 7)  # chunk boundaries inside the batch
    labels, confs = fast.predict(texts, cascade=False)
    assert [([lab], [c]) for lab, c in zip(labels, confs)] == one_by_one
    assert fast.predict([], cascade=False) == ([], [])


def _vocabulary_rows(n: int = 600) -> list[tuple[str, str]]:
    """Enough distinct words for product quantization (256 centroids per part), words of
    every length class (up to 8 bytes, 9-24, longer), two labels."""
    rng = random.Random(3)
    letters = "abcdefghijklmnopqrstuvwxyzéü"
    words = [
        "".join(rng.choice(letters) for _ in range(rng.choice([1, 3, 5, 8, 9, 14, 16, 17, 24, 25, 40])))
        for _ in range(n)
    ]
    rows = []
    for i in range(n):
        label = "alpha" if i % 2 else "beta"
        rows.append((label, " ".join(rng.sample(words[: n // 2] if i % 2 else words[n // 2 :], 6) + [words[i]])))
    return rows


@pytest.mark.parametrize("quantize", [False, True])
def test_trained_unigram_models_dense_and_quantized(tmp_path, quantize):
    rows = _vocabulary_rows()
    model = train_fasttext(rows, epoch=5, lr=0.5, dim=8, word_ngrams=1, bucket=0, seed=1, quantize=quantize)
    path = tmp_path / ("m.ftz" if quantize else "m.bin")
    model.save_model(str(path))
    fast, own = _both(path)
    texts = [text for _, text in rows[:200]] + ODD_TEXTS + ["unknownword " * 5, "zzzz " + rows[0][1]]
    assert fast.predict(texts) == own.predict(texts)
    # the predictor answers in the file's label order, as fastText's label list
    engine = UnigramFastText.from_file(path)
    ids, confs = engine.predict_normalised(normalised_buffer(texts), len(texts))
    lines = [t + "\n" for t in domain_tokens_many(texts)]
    labels, probs = model.f.multilinePredict(lines, 1, 0.0, "strict")
    assert [engine.labels[i] for i in ids] == [lab[0] for lab in labels]
    assert confs == [min(float(p[0]), 1.0) for p in probs]


def test_models_it_does_not_cover_stay_with_fasttext(tmp_path):
    rows = _vocabulary_rows(300)
    for name, params in {
        "bigrams.bin": {"word_ngrams": 2, "bucket": 1000},
        "chars.bin": {"word_ngrams": 1, "bucket": 1000, "minn": 3, "maxn": 4},
    }.items():
        model = train_fasttext(rows, epoch=2, lr=0.5, dim=8, seed=1, **params)
        model.save_model(str(tmp_path / name))
        assert UnigramFastText.from_file(tmp_path / name) is None
        loaded = FastTextDomainModel(tmp_path / name)
        assert loaded.unigram is None and len(loaded.predict(["some text"])[0]) == 1
    # not a fastText file, or a truncated one: no predictor (fastText's loader says why)
    (tmp_path / "junk.bin").write_bytes(b"not a model")
    assert UnigramFastText.from_file(tmp_path / "junk.bin") is None
    (tmp_path / "cut.ftz").write_bytes(DEFAULT_MODEL_PATH.read_bytes()[:5000])
    assert UnigramFastText.from_file(tmp_path / "cut.ftz") is None
