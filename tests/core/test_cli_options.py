"""CLI flags take their defaults from where the code declares them (one declaration)."""

from __future__ import annotations

import typer

from synth.core.cli_options import declared_default


def _defaults(app: typer.Typer, command: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p.default for p in group.commands[command].params}


def test_kg_walk_flags_default_to_the_walk_options():
    from kg.cli import kg_app
    from kg.stage import KGWalkOptions

    flags = _defaults(kg_app, "walk")
    for name in (
        "samples",
        "verbalizer",
        "max_answers",
        "error_share",
        "irrelevance_share",
        "allow_trivial",
        "eval_split",
        "eval_relations",
        "back_translate",
        "samples_per_shard",
    ):
        assert flags[name] == KGWalkOptions.model_fields[name].default, name


def test_quality_train_flags_default_to_the_trainer_keywords():
    from synth.ingest.quality import train_quality_classifier
    from synth.ingest.quality_cli import quality_train

    app = typer.Typer()
    app.command("train")(quality_train)
    app.command("other")(lambda: None)  # a group, so the command is looked up by name
    flags = _defaults(app, "train")
    for name in ("test_fraction", "seed", "epoch", "lr", "dim", "word_ngrams", "bucket", "quantize"):
        assert flags[name] == declared_default(train_quality_classifier, name), name
