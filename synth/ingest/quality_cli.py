"""`synth quality train`: the command function, ready to register on a typer app.

quality = typer.Typer(help="Quality classifier."); quality.command("train")(quality_train)
app.add_typer(quality, name="quality")
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from synth.core.cli_options import option_from
from synth.ingest.fasttext_trainer import with_fasttext_flags
from synth.ingest.quality import train_quality_classifier


@with_fasttext_flags(train_quality_classifier)
def quality_train(
    examples: Path = typer.Argument(
        ...,
        help="JSONL of {text, label}, a folder of positive examples (with --negatives), or a folder with one subfolder per label.",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Model file to write (e.g. models/quality.bin); metrics go to the same name with .json.",
    ),
    negatives: Path | None = typer.Option(
        None, "--negatives", help="Folder of negative examples (files, or .jsonl with text)."
    ),
    positive_label: str | None = typer.Option(None, help="The good label (default: high/good/pos/1... when present)."),
    test_fraction: float = option_from(
        train_quality_classifier, "test_fraction", help="Held-out share per label for precision/recall."
    ),
    fasttext: dict | None = None,
) -> None:
    """Train a fastText quality classifier and report held-out precision/recall/F1 per label."""
    from synth.ingest.fasttext_trainer import train_or_exit
    from synth.ingest.quality import metrics_path

    metrics = train_or_exit(
        train_quality_classifier,
        examples,
        output,
        negatives=negatives,
        positive_label=positive_label,
        test_fraction=test_fraction,
        **fasttext,
    )
    typer.echo(
        json.dumps(
            {
                "model": str(output),
                "metrics": str(metrics_path(output)),
                "n_train": metrics["n_train"],
                "n_test": metrics["n_test"],
                "held_out": metrics["held_out"],
            },
            indent=2,
        )
    )
