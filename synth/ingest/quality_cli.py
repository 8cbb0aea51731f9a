"""`synth quality train`: the command function, ready to register on a typer app.

    quality = typer.Typer(help="Quality classifier."); quality.command("train")(quality_train)
    app.add_typer(quality, name="quality")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from synth.core.cli_options import option_from
from synth.ingest.quality import train_quality_classifier


def quality_train(
    examples: Path = typer.Argument(..., help="JSONL of {text, label}, a folder of positive examples (with --negatives), or a folder with one subfolder per label."),
    output: Path = typer.Option(..., "--output", "-o", help="Model file to write (e.g. models/quality.bin); metrics go to the same name with .json."),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="Folder of negative examples (files, or .jsonl with text)."),
    positive_label: Optional[str] = typer.Option(None, help="The good label (default: high/good/pos/1... when present)."),
    test_fraction: float = option_from(train_quality_classifier, "test_fraction", help="Held-out share per label for precision/recall."),
    seed: int = option_from(train_quality_classifier, "seed", help="Shuffle and training seed."),
    epoch: int = option_from(train_quality_classifier, "epoch", help="Training epochs."),
    lr: float = option_from(train_quality_classifier, "lr", help="Learning rate."),
    dim: int = option_from(train_quality_classifier, "dim", help="Vector size."),
    word_ngrams: int = option_from(train_quality_classifier, "word_ngrams", help="Word n-gram features."),
    bucket: int = option_from(train_quality_classifier, "bucket", help="Hash buckets for n-gram features (model size ~ bucket x dim x 4 bytes)."),
    quantize: bool = option_from(train_quality_classifier, "quantize", help="Quantize the model (much smaller file, slightly lower accuracy)."),
) -> None:
    """Train a fastText quality classifier and report held-out precision/recall/F1 per label."""
    from synth.ingest.fasttext_trainer import train_or_exit
    from synth.ingest.quality import metrics_path

    metrics = train_or_exit(
        train_quality_classifier, examples, output, negatives=negatives, positive_label=positive_label, test_fraction=test_fraction,
        seed=seed, epoch=epoch, lr=lr, dim=dim, word_ngrams=word_ngrams, bucket=bucket, quantize=quantize,
    )
    typer.echo(json.dumps({"model": str(output), "metrics": str(metrics_path(output)), "n_train": metrics["n_train"], "n_test": metrics["n_test"], "held_out": metrics["held_out"]}, indent=2))
