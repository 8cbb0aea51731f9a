"""A fastText quality classifier: train it from labelled examples, apply it as a filter.

Training reads a JSONL of `{"text", "label"}` or folders of examples, holds out
a stratified split, trains fastText supervised (word bigrams, small vectors) and
reports held-out precision/recall/F1 per label, returned and written beside the
model as `<model>.json`. The filter reads that file to know the positive label.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.stage import Filter, FilterOptions, Shard, files_digest
from synth.ingest.fasttext_trainer import (
    TrainingDataError,
    jsonl_objects,
    label_metrics,
    read_labelled_jsonl,
    stratified_split,
    train_fasttext,
)
from synth.ingest.langid import LABEL_PREFIX, FastTextPredictor, load_fasttext_model

POSITIVE_LABEL = "high"
NEGATIVE_LABEL = "low"
# labels taken as "the good class" when a JSONL names its own labels
_POSITIVE_NAMES = ("high", "hq", "good", "pos", "positive", "keep", "1", "true", "yes")

_TOKEN_SPLIT = re.compile(r"([^\w\s])")
_SPACES = re.compile(r"\s+")


class QualityDataError(TrainingDataError):
    """Unusable training input; the message is meant for the user, one line."""


def fasttext_tokens(text: str, max_chars: int | None = 20_000) -> str:
    """The one normalisation used for training and prediction: lowercase, one line,
    punctuation as separate tokens (so "end." and "end" share a feature)."""
    if max_chars:
        text = text[:max_chars]
    text = _TOKEN_SPLIT.sub(r" \1 ", text.lower())
    return _SPACES.sub(" ", text).strip()


def metrics_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


# -- reading examples -------------------------------------------------------------


def _texts_in_file(path: Path, counts: Counter) -> Iterator[str]:
    """A .jsonl file holds many documents (objects with "text", or strings); any other file is one."""
    if path.suffix == ".jsonl":
        for obj in jsonl_objects(path, counts):
            text = obj.get("text") if isinstance(obj, dict) else obj
            if isinstance(text, str) and text.strip():
                yield text
            else:
                counts["skipped_no_text"] += 1
    else:
        text = path.read_bytes().decode("utf-8", errors="replace")
        if text.strip():
            yield text
        else:
            counts["skipped_empty_file"] += 1


def _folder_examples(folder: Path, label: str, counts: Counter) -> list[tuple[str, str]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [(text, label) for path in files for text in _texts_in_file(path, counts)]


def load_examples(examples: Path, negatives: Path | None = None) -> tuple[list[tuple[str, str]], Counter]:
    """(text, label) pairs from a JSONL file, a positive + a negative folder, or a
    folder whose subfolders are named by label."""
    examples = Path(examples)
    counts: Counter = Counter()
    if not examples.exists():
        raise QualityDataError(f"examples not found: {examples}")
    if negatives is not None:
        negatives = Path(negatives)
        if not negatives.is_dir() or not examples.is_dir():
            raise QualityDataError("with --negatives, both examples and negatives must be folders")
        pairs = _folder_examples(examples, POSITIVE_LABEL, counts) + _folder_examples(negatives, NEGATIVE_LABEL, counts)
    elif examples.is_dir():
        subdirs = sorted(p for p in examples.iterdir() if p.is_dir())
        if len(subdirs) < 2:
            raise QualityDataError(
                f"{examples}: expected one subfolder per label (e.g. high/ and low/), or pass --negatives"
            )
        pairs = [pair for sub in subdirs for pair in _folder_examples(sub, sub.name, counts)]
    else:
        pairs = read_labelled_jsonl(examples, counts)
    return pairs, counts


def _pick_positive(labels: set[str], positive_label: str | None) -> str:
    if positive_label is not None:
        if positive_label not in labels:
            raise QualityDataError(f"positive label '{positive_label}' not among the labels {sorted(labels)}")
        return positive_label
    for name in _POSITIVE_NAMES:
        if name in labels:
            return name
    raise QualityDataError(f"cannot tell the positive label among {sorted(labels)}: pass positive_label")


def train_quality_classifier(
    examples: Path,
    output_model: Path,
    *,
    negatives: Path | None = None,
    positive_label: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    epoch: int = 10,
    lr: float = 0.5,
    dim: int = 32,
    word_ngrams: int = 2,
    min_count: int = 1,
    bucket: int = 200_000,
    threads: int = 1,
    max_chars: int | None = 20_000,
    quantize: bool = False,
) -> dict:
    """Train, evaluate on the held-out split, save the model and `<model>.json`; return the metrics.

    `threads=1` keeps training deterministic for a given seed (fastText's
    Hogwild training is not, with more threads).
    """
    if not 0 <= test_fraction < 1:
        raise QualityDataError("test_fraction must be in [0, 1)")
    started = time.perf_counter()
    pairs, skipped = load_examples(examples, negatives)
    labels = sorted({label for _, label in pairs})
    if len(labels) < 2:
        raise QualityDataError(f"need examples of at least two labels, found {labels or 'none'} in {examples}")
    bad = [label for label in labels if not label or any(c.isspace() for c in label)]
    if bad:
        raise QualityDataError(f"labels must be non-empty without spaces: {bad}")
    positive = _pick_positive(set(labels), positive_label)
    train, test = stratified_split(pairs, test_fraction, seed)

    output_model = Path(output_model)
    output_model.parent.mkdir(parents=True, exist_ok=True)
    model = train_fasttext(
        ((label, fasttext_tokens(text, max_chars)) for text, label in train),
        epoch=epoch,
        lr=lr,
        dim=dim,
        word_ngrams=word_ngrams,
        min_count=min_count,
        bucket=bucket,
        threads=threads,
        seed=seed,
        quantize=quantize,
    )
    model.save_model(str(output_model))

    held_out: dict = {}
    if test:
        predicted_labels, _ = model.predict([fasttext_tokens(t, max_chars) for t, _ in test], k=1)
        predicted = [p[0].removeprefix(LABEL_PREFIX) if len(p) else "" for p in predicted_labels]
        gold = [label for _, label in test]
        held_out = {
            "labels": label_metrics(gold, predicted, labels),
            "accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
        }
    metrics = {
        "version": 1,
        "model": str(output_model),
        "positive_label": positive,
        "labels": labels,
        "examples": dict(Counter(label for _, label in pairs)),
        "n_train": len(train),
        "n_test": len(test),
        "skipped": dict(skipped),
        "held_out": held_out,
        "params": {
            "test_fraction": test_fraction,
            "seed": seed,
            "epoch": epoch,
            "lr": lr,
            "dim": dim,
            "word_ngrams": word_ngrams,
            "min_count": min_count,
            "bucket": bucket,
            "max_chars": max_chars,
            "quantize": quantize,
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    metrics_path(output_model).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


# -- the filter ---------------------------------------------------------------------


class QualityClassifierOptions(FilterOptions):
    # A model trained by `synth quality train` (its `<model>.json` names the positive label).
    model: Path
    text_column: str = "text"
    # Keep rows whose predicted label is one of these...
    keep_labels: list[str] | None = None
    # ...and/or whose probability of the positive label is at least this.
    # With neither set, rows predicted as the positive label are kept.
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    # Default: from `<model>.json`, else "high".
    positive_label: str | None = None
    max_chars: int | None = Field(20_000, ge=1)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"quality model file not found: {value} (train one with `synth quality train`)")
        return value


class QualityClassifierFilter(Filter):
    """Scores `quality_label` (top label) and `quality_score` (probability of the positive label)."""

    type = "quality_classifier"
    Options: ClassVar[type[FilterOptions]] = QualityClassifierOptions
    writes = ("quality_label", "quality_score")

    def input_columns(self):
        return (self.options.text_column,)

    def column_types(self) -> dict[str, pa.DataType]:
        return {"quality_label": pa.string(), "quality_score": pa.float32()}

    def external_state(self) -> str:
        """The model file and its sidecar: a retrained model re-scores a resumed run."""
        return files_digest([self.options.model, metrics_path(self.options.model)])

    def setup(self) -> None:
        o = self.options
        model = load_fasttext_model(o.model)
        self.model = FastTextPredictor(model)
        positive = o.positive_label
        sidecar = metrics_path(o.model)
        if positive is None and sidecar.is_file():
            positive = json.loads(sidecar.read_text()).get("positive_label")
        self.positive = positive or POSITIVE_LABEL
        # fasttext-predict's models have no get_labels(); the sidecar lists them
        labels = model.get_labels() if hasattr(model, "get_labels") else None
        if labels is None and sidecar.is_file():
            labels = json.loads(sidecar.read_text()).get("labels")
        self.n_labels = len(labels) if labels else 2

    def predict(self, texts: list[str | None]) -> tuple[list[str | None], list[float]]:
        self.ensure_setup()
        lines = [fasttext_tokens(t or "", self.options.max_chars) for t in texts]
        labels: list[str | None] = [None] * len(lines)
        scores = [0.0] * len(lines)
        todo = [i for i, line in enumerate(lines) if line]
        if not todo:
            return labels, scores
        positive = LABEL_PREFIX + self.positive
        predicted, probs = self.model.predict([lines[i] for i in todo], k=self.n_labels)
        for i, names, p in zip(todo, predicted, probs):
            if len(names):
                labels[i] = names[0].removeprefix(LABEL_PREFIX)
            for name, prob in zip(names, p):
                if name == positive:
                    scores[i] = min(1.0, float(prob))
                    break
        return labels, scores

    def score(self, table: pa.Table, shard: Shard) -> dict:
        labels, scores = self.predict(table.column(self.options.text_column).to_pylist())
        return {"quality_label": labels, "quality_score": scores}

    def decide(self, row: dict) -> str | None:
        o = self.options
        if o.keep_labels is not None and row["quality_label"] not in o.keep_labels:
            return "quality_label_not_kept"
        if o.min_score is not None and row["quality_score"] < o.min_score:
            return "quality_low_score"
        if o.keep_labels is None and o.min_score is None and row["quality_label"] != self.positive:
            return "quality_label_not_kept"
        return None
