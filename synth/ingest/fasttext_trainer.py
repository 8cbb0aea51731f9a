"""The one supervised fastText trainer and evaluator, used by the quality classifier
(synth/ingest/quality.py) and the domain classifier (synth/llm/domain_model.py).

Labelled JSONL in, a stratified held-out split, the training file, training (and
quantizing), per-label precision/recall/F1 out; a user error ends a CLI run with one
line. Each caller keeps what is its own: its text normalisation, how it predicts, and
the report it writes beside its model.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from synth.ingest.langid import LABEL_PREFIX


class TrainingDataError(ValueError):
    """Unusable training input; the message is meant for the user, one line."""


# -- reading ------------------------------------------------------------------------


def jsonl_objects(path: Path, counts: Counter) -> Iterator:
    """Parsed lines of a JSONL file; malformed lines are counted, not fatal."""
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                counts["skipped_malformed_jsonl"] += 1


def read_labelled_jsonl(
    path: Path, counts: Counter, text_field: str = "text", label_field: str = "label"
) -> list[tuple[str, str]]:
    """(text, label) pairs of a JSONL of objects; a line without a text string or a
    label is counted (`skipped_no_<text>_or_<label>`), not fatal."""
    return [(text, str(label)) for _, text, label in labelled_objects(path, counts, text_field, label_field)]


def labelled_objects(path: Path, counts: Counter, text_field: str = "text", label_field: str = "label"):
    """(object, text, label) of each JSONL object with a text string and a label; the
    others are counted (`skipped_no_<text>_or_<label>`), not fatal."""
    for obj in jsonl_objects(path, counts):
        text = obj.get(text_field) if isinstance(obj, dict) else None
        label = obj.get(label_field) if isinstance(obj, dict) else None
        if not isinstance(text, str) or label is None or label == "":
            counts[f"skipped_no_{text_field}_or_{label_field}"] += 1
            continue
        yield obj, text, label


# -- splitting and scoring ------------------------------------------------------------


def stratified_split(
    pairs: Sequence[tuple[str, str]], fraction: float, seed: int, *, distinct_texts: bool = False
) -> tuple[list, list]:
    """(train, held out), each label keeping its share in the held-out part; a label
    with a single text stays in training. With `distinct_texts` a text and all its
    copies land on one side only (copies in training keep their weight)."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in pairs:
        by_label.setdefault(label, []).append(text)
    train: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for label in sorted(by_label):
        texts = sorted(set(by_label[label])) if distinct_texts else by_label[label]
        rng.shuffle(texts)
        n_held = max(1, round(len(texts) * fraction)) if fraction > 0 and len(texts) > 1 else 0
        held += [(t, label) for t in texts[:n_held]]
        if not distinct_texts:
            train += [(t, label) for t in texts[n_held:]]
    if distinct_texts:
        held_texts = {t for t, _ in held}
        train = [p for p in pairs if p[0] not in held_texts]
    rng.shuffle(train)
    return train, held


def label_metrics(
    gold: Sequence[str], predicted: Sequence[str], labels: Iterable[str] | None = None, digits: int | None = None
) -> dict[str, dict]:
    """Precision, recall, F1 and support per label (default: every gold or predicted one)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for g, p in zip(gold, predicted):
        if g == p:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    out = {}
    for label in sorted(set(gold) | set(predicted)) if labels is None else labels:
        precision = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
        recall = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if digits is not None:
            precision, recall, f1 = round(precision, digits), round(recall, digits), round(f1, digits)
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp[label] + fn[label]}
    return out


# -- training ----------------------------------------------------------------------


def supervised_trainer() -> Callable:
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise RuntimeError(
            "the installed `fasttext` module can only predict (fasttext-predict overwrote fasttext-numpy2): "
            "run `pip install --force-reinstall --no-deps fasttext-numpy2`"
        )
    return fasttext.train_supervised


def train_fasttext(
    examples: Iterable[tuple[str, str]],
    *,
    epoch: int,
    lr: float,
    dim: int,
    word_ngrams: int,
    bucket: int,
    seed: int,
    min_count: int = 1,
    minn: int = 0,
    maxn: int = 0,
    threads: int = 1,
    quantize: bool = False,
    retrain_quantized: bool = False,
    cutoff: int = 0,
):
    """A supervised fastText model from (label, normalised one-line text) pairs.

    `threads=1` keeps training deterministic for a given seed (fastText's Hogwild
    training is not, with more threads). `quantize` shrinks the model as it is;
    `retrain_quantized` keeps the `cutoff` most useful features, normalises and
    fine-tunes on the same examples (smaller and usually as accurate)."""
    train_supervised = supervised_trainer()
    with tempfile.TemporaryDirectory(prefix="synth-fasttext-") as tmp:
        train_file = Path(tmp) / "train.txt"
        with train_file.open("w", encoding="utf-8") as fh:
            for label, tokens in examples:
                fh.write(f"{LABEL_PREFIX}{label} {tokens}\n")
        model = train_supervised(
            input=str(train_file),
            epoch=epoch,
            lr=lr,
            dim=dim,
            wordNgrams=word_ngrams,
            minCount=min_count,
            bucket=bucket,
            minn=minn,
            maxn=maxn,
            thread=threads,
            seed=seed,
            verbose=0,
        )
        if quantize and retrain_quantized:
            model.quantize(
                input=str(train_file),
                qnorm=True,
                retrain=True,
                cutoff=cutoff,
                epoch=max(5, epoch // 2),
                lr=lr,
                thread=threads,
                verbose=0,
            )
        elif quantize:
            model.quantize(input=None, retrain=False)
    return model


# -- command line ------------------------------------------------------------------


# The training flags both `synth quality train` and `synth route train` take.
FASTTEXT_FLAGS = {
    "seed": "Split and training seed.",
    "epoch": "Training epochs.",
    "lr": "Learning rate.",
    "dim": "Vector size.",
    "word_ngrams": "Word n-gram features.",
    "bucket": "Hash buckets for n-gram features (unquantized model size ~ bucket x dim x 4 bytes).",
    "quantize": "Quantize the model (a much smaller file, slightly lower accuracy).",
}


def with_fasttext_flags(trainer: Callable) -> Callable:
    """Decorator for a typer command that trains with `trainer`: adds the flags of
    FASTTEXT_FLAGS, each defaulting to `trainer`'s keyword of that name, and hands their
    values to the command as one dict, its `fasttext` parameter."""
    import functools
    import inspect
    import typing

    from synth.core.cli_options import declared_default, option_from

    def wrap(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name != "fasttext"
        ]
        added = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=option_from(trainer, name, help=text),
                annotation=type(declared_default(trainer, name)),
            )
            for name, text in FASTTEXT_FLAGS.items()
        ]

        @functools.wraps(command)
        def run(**kwargs):
            fasttext = {name: kwargs.pop(name) for name in FASTTEXT_FLAGS}
            return command(**kwargs, fasttext=fasttext)

        run.__signature__ = signature.replace(parameters=own + added, return_annotation=None)
        run.__annotations__ = {p.name: p.annotation for p in own + added}
        return run

    return wrap


def train_or_exit(train: Callable[..., dict], *args, **kwargs) -> dict:
    """Run a trainer for a CLI command: a user error (bad or missing input, an
    unusable fastText install) ends the command with one line and exit code 2."""
    import typer

    try:
        return train(*args, **kwargs)
    except (TrainingDataError, RuntimeError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
