"""`synth route ...`: train a domain classifier, label text with one.

route_app = typer.Typer(); route_app.command("train")(route_train)
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from synth.core.cli_options import option_from
from synth.ingest.fasttext_trainer import with_fasttext_flags
from synth.llm.domain_model import train_domain_classifier


def _metrics_table(title: str, metrics: dict) -> Table:
    table = Table(title=title)
    for col in ("domain", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for domain, m in sorted(metrics.items()):
        table.add_row(domain, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    return table


@with_fasttext_flags(train_domain_classifier)
def route_train(
    examples: Path = typer.Argument(..., help="JSONL of {text, domain}: the labelled training examples."),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Model file to write (.bin, or .ftz with --quantize); its metadata (threshold, metrics) goes beside it as .json.",
    ),
    valid: Path | None = typer.Option(
        None, help="JSONL to calibrate the confidence threshold on (default: a held-out share of EXAMPLES)."
    ),
    test: Path | None = typer.Option(
        None, help="JSONL to report precision/recall on (default: a held-out share of EXAMPLES)."
    ),
    held_out: float = option_from(
        train_domain_classifier,
        "held_out_fraction",
        "--held-out",
        help="Share per domain held out for each of calibration and test when --valid/--test are not given.",
    ),
    text_field: str = option_from(train_domain_classifier, "text_field", help="JSON field with the text."),
    label_field: str = option_from(train_domain_classifier, "label_field", help="JSON field with the domain."),
    balance: bool = option_from(
        train_domain_classifier, "balance", help="Repeat examples of small domains up to the largest one's count."
    ),
    calibrate_weights: bool = option_from(
        train_domain_classifier,
        "calibrate_weights",
        help="Also calibrate per-domain weights on the probabilities (max of lowest recall + macro F1 on the calibration split).",
    ),
    fine_field: str | None = typer.Option(
        None,
        help="JSON field with a finer label (a subject: physics, law); the model learns it and answers the row's domain, the sum of its fine labels' probabilities.",
    ),
    minn: int = option_from(
        train_domain_classifier, "minn", help="Shortest character n-gram (subword) feature; 0: none."
    ),
    maxn: int = option_from(train_domain_classifier, "maxn", help="Longest character n-gram (subword) feature."),
    cutoff: int = option_from(
        train_domain_classifier, "cutoff", help="With --quantize: the most important words and n-grams kept."
    ),
    cascade_to: Path | None = typer.Option(
        None,
        help="A trained second model (e.g. fine labels with character n-grams): this one becomes the fast first stage and texts it is unsure of go to it; the margin is calibrated on the calibration split.",
    ),
    cascade_max_routed: float = option_from(
        train_domain_classifier,
        "cascade_max_routed",
        help="With --cascade-to: the largest share of the words the margin and word cap may send to the second model (its speed budget: its time follows the words).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    fasttext: dict | None = None,
) -> None:
    """Train a fastText domain classifier; print held-out precision/recall per domain
    and the calibrated confidence threshold (below it the label is `general`)."""
    from synth.ingest.fasttext_trainer import train_or_exit
    from synth.llm.domain_model import metadata_path

    report = train_or_exit(
        train_domain_classifier,
        examples,
        output,
        valid=valid,
        test=test,
        held_out_fraction=held_out,
        balance=balance,
        calibrate_weights=calibrate_weights,
        text_field=text_field,
        label_field=label_field,
        fine_field=fine_field,
        minn=minn,
        maxn=maxn,
        cutoff=cutoff,
        cascade_to=cascade_to,
        cascade_max_routed=cascade_max_routed,
        **fasttext,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=1, sort_keys=True))
        return
    console = Console()
    console.print(f"model {output} ({report['size_bytes']:,} bytes), metadata {metadata_path(output)}")
    console.print(
        f"trained on {report['n_train']:,} examples: "
        + ", ".join(f"{d} {n:,}" for d, n in report["n_train_by_domain"].items())
    )
    calibration = report["calibration"]
    console.print(
        f"confidence threshold {report['threshold']:.2f} (calibrated on {calibration['examples']:,} held-out examples, macro F1 {calibration['macro_f1']})"
    )
    if report.get("label_domains"):
        console.print(
            f"{len(report['label_domains'])} fine labels answer as their domain: "
            + ", ".join(f"{f} -> {d}" for f, d in report["label_domains"].items())
        )
    if report.get("cascade"):
        cascade = report["cascade"]
        console.print(
            f"cascade: texts under confidence {cascade['margin']:.2f} and of at most {cascade.get('max_words') or 'any'} "
            f"words go to {cascade['model']} ({cascade.get('routed_valid', 0):.1%} of the calibration split's words, "
            f"at most {cascade['max_routed']:.0%})"
        )
    if report.get("domain_weights"):
        console.print("domain weights " + ", ".join(f"{d} {w:g}" for d, w in report["domain_weights"].items()))
    if report.get("held_out"):
        console.print(_metrics_table(f"held-out ({report['n_test']:,} examples)", report["held_out"]))
    for reason, n in report["skipped"].items():
        console.print(f"skipped {n:,} lines: {reason}")


def route_label(
    texts: list[str] = typer.Argument(None, help="Texts to label (default: one per line on stdin)."),
    kind: str = typer.Option("fasttext", help="fasttext, transformers or rules."),
    model: str | None = typer.Option(None, "--model", help="Model path (default: the packaged fastText model)."),
) -> None:
    """Print each text's domain and confidence as the `route` stage would label it."""
    import sys

    from pydantic import ValidationError

    from synth.synthesis.route import ClassifierConfig, make_classifier

    try:
        classifier = make_classifier(ClassifierConfig(kind=kind, model_path=model))
    except (ValidationError, OSError, ValueError) as exc:
        typer.echo(
            f"error: {str(exc).splitlines()[0] if not isinstance(exc, ValidationError) else exc.errors()[0]['msg']}",
            err=True,
        )
        raise typer.Exit(2) from None
    lines = texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, decision in zip(lines, classifier.classify_many(lines)):
        typer.echo(
            json.dumps(
                {"domain": decision.domain, "confidence": decision.confidence, "text": text[:80]}, ensure_ascii=False
            )
        )
