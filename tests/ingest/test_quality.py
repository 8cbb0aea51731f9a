import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from synth.core.config import ConfigError, build_pipeline
from synth.core.stage import Shard
from synth.ingest.passages import book_passages
from synth.ingest.quality import QualityClassifierFilter, QualityDataError, load_examples, train_quality_classifier

SMALL = dict(dim=16, bucket=20_000, epoch=10)


WORDS = [
    "home",
    "news",
    "sport",
    "weather",
    "shop",
    "deals",
    "account",
    "login",
    "register",
    "cart",
    "help",
    "contact",
    "about",
    "careers",
    "press",
    "blog",
    "events",
    "music",
    "video",
    "travel",
    "food",
    "health",
    "money",
    "tech",
    "science",
    "cars",
    "jobs",
]


def boilerplate(rng: random.Random) -> str:
    """Web page furniture of the kinds quality classifiers are trained to reject."""
    kind = rng.randrange(6)
    pick = lambda k: rng.sample(WORDS, k)  # noqa: E731
    if kind == 0:  # navigation menu
        return "\n".join(w.capitalize() for w in pick(rng.randint(5, 12)))
    if kind == 1:  # cookie banner
        return (
            rng.choice(
                [
                    "We use cookies to improve your experience. By continuing to browse you agree to our use of cookies. Accept all | Manage settings",
                    "This website uses cookies. Learn more in our cookie policy. OK",
                    "Cookies help us deliver our services. Accept | Reject | Preferences",
                ]
            )
            + f" {rng.choice(WORDS)}"
        )
    if kind == 2:  # link list
        return "\n".join(f"» {a.capitalize()} {b} ({rng.randint(1, 99)})" for a, b in zip(pick(6), pick(6)))
    if kind == 3:  # footer
        return f"© {rng.randint(1998, 2025)} {rng.choice(WORDS).capitalize()} Media Ltd. All rights reserved. Privacy Policy | Terms of Use | Sitemap | {rng.choice(WORDS).capitalize()}"
    if kind == 4:  # share / subscribe widgets
        return f"Share on Facebook Tweet Pin Email {rng.randint(2, 900)} comments Subscribe to our {rng.choice(WORDS)} newsletter Sign up"
    return f"Page {rng.randint(1, 9)} of {rng.randint(10, 50)} « Previous 1 2 3 4 5 Next » Sort by: {rng.choice(['Newest', 'Price', 'Popular'])} {' '.join(pick(3))}"


@pytest.fixture(scope="module")
def labelled(shared_data, tmp_path_factory):
    books = [
        "pg1342_pride_and_prejudice.txt",
        "pg2701_moby_dick.txt",
        "pg16215_jack_sheppard.txt",
        "pg3261_news_from_nowhere.txt",
    ]
    good = [p for b in books for p in book_passages(shared_data / "books" / b)[20:120]]
    rng = random.Random(3)
    bad = [boilerplate(rng) for _ in range(len(good))]
    path = tmp_path_factory.mktemp("quality") / "examples.jsonl"
    with path.open("w") as fh:
        for text in good:
            fh.write(json.dumps({"text": text, "label": "high"}) + "\n")
        for text in bad:
            fh.write(json.dumps({"text": text, "label": "low"}) + "\n")
        fh.write("{not json\n")
    return path, good, bad


@pytest.fixture(scope="module")
def trained(labelled, tmp_path_factory):
    path, _, _ = labelled
    model = tmp_path_factory.mktemp("model") / "quality.bin"
    metrics = train_quality_classifier(path, model, test_fraction=0.2, seed=1, **SMALL)
    return model, metrics


def test_training_reports_held_out_metrics(trained, labelled):
    model, metrics = trained
    _, good, bad = labelled
    assert model.is_file()
    on_disk = json.loads(model.with_suffix(".json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert metrics["positive_label"] == "high" and metrics["labels"] == ["high", "low"]
    assert metrics["skipped"] == {"skipped_malformed_jsonl": 1}
    assert metrics["n_test"] == round(len(good) * 0.2) + round(len(bad) * 0.2)
    assert metrics["n_train"] + metrics["n_test"] == len(good) + len(bad)
    high = metrics["held_out"]["labels"]["high"]
    # measured: precision 1.0, recall 1.0 on 160 held-out examples
    assert high["precision"] >= 0.97 and high["recall"] >= 0.97
    assert metrics["held_out"]["labels"]["low"]["f1"] >= 0.97


def test_filter_keeps_prose_and_drops_boilerplate(trained, shared_data):
    model, _ = trained
    # unseen book and unseen boilerplate
    prose = book_passages(shared_data / "books" / "pg972_devils_dictionary.txt")[30:50]
    rng = random.Random(99)
    junk = [boilerplate(rng) for _ in range(20)]
    rows = [{"text": t, "kind": "prose"} for t in prose] + [{"text": t, "kind": "junk"} for t in junk]
    stage = QualityClassifierFilter(QualityClassifierFilter.Options(model=model))
    shard = Shard("03-quality_classifier", 0, "part-00000", 0)
    table = stage.process(pa.Table.from_pylist(rows), shard)
    kinds = table.column("kind").to_pylist()
    assert kinds.count("prose") >= 19 and kinds.count("junk") <= 1
    assert set(shard.dropped) == {"quality_label_not_kept"}
    scores = table.column("quality_score").to_pylist()
    assert min(scores) >= 0.5 and table.schema.field("quality_score").type == pa.float32()


def test_min_score_keep_labels_and_annotate_only(trained):
    model, _ = trained
    rows = [{"text": "Accept all cookies | Manage settings | Privacy Policy"}, {"text": None}]
    opts = QualityClassifierFilter.Options
    shard = Shard("03-q", 0, "p", 0)
    table = QualityClassifierFilter(opts(model=model, min_score=0.5)).process(pa.Table.from_pylist(rows), shard)
    assert table.num_rows == 0 and shard.dropped["quality_low_score"] == 2
    shard = Shard("03-q", 0, "p", 0)
    table = QualityClassifierFilter(opts(model=model, keep_labels=["low"])).process(pa.Table.from_pylist(rows), shard)
    assert table.column("quality_label").to_pylist() == ["low"] and shard.dropped["quality_label_not_kept"] == 1
    shard = Shard("03-q", 0, "p", 0)
    table = QualityClassifierFilter(opts(model=model, min_score=0.9, annotate_only=True)).process(
        pa.Table.from_pylist(rows), shard
    )
    assert table.num_rows == 2 and shard.counters["would_drop.quality_low_score"] == 2


def test_two_folders_and_label_subfolders(tmp_path, labelled):
    _, good, bad = labelled
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir()
    neg.mkdir()
    for i, text in enumerate(good[:60]):
        (pos / f"{i}.txt").write_text(text)
    with (neg / "junk.jsonl").open("w") as fh:
        for text in bad[:60]:
            fh.write(json.dumps({"text": text}) + "\n")
    (neg / "empty.txt").write_text("")
    pairs, skipped = load_examples(pos, neg)
    assert len(pairs) == 120 and skipped == {"skipped_empty_file": 1}
    metrics = train_quality_classifier(pos, tmp_path / "m.bin", negatives=neg, **SMALL)
    assert metrics["examples"] == {"high": 60, "low": 60} and metrics["n_test"] == 12

    by_label = tmp_path / "by_label"
    by_label.mkdir()
    pos.rename(by_label / "good")
    neg.rename(by_label / "spam")
    metrics = train_quality_classifier(by_label, tmp_path / "m2.bin", **SMALL)
    assert metrics["positive_label"] == "good" and metrics["labels"] == ["good", "spam"]


def test_training_is_reproducible(labelled, tmp_path):
    path, _, _ = labelled
    a = train_quality_classifier(path, tmp_path / "a.bin", seed=5, **SMALL)
    b = train_quality_classifier(path, tmp_path / "b.bin", seed=5, **SMALL)
    assert a["held_out"] == b["held_out"]
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_bad_training_input_gives_clear_errors(tmp_path):
    one_label = tmp_path / "one.jsonl"
    one_label.write_text(json.dumps({"text": "a", "label": "high"}) + "\n")
    with pytest.raises(QualityDataError, match="at least two labels"):
        train_quality_classifier(one_label, tmp_path / "m.bin")
    odd = tmp_path / "odd.jsonl"
    odd.write_text("\n".join(json.dumps({"text": "a b", "label": lab}) for lab in ["x", "y"]) + "\n")
    with pytest.raises(QualityDataError, match="positive label"):
        train_quality_classifier(odd, tmp_path / "m.bin")
    with pytest.raises(QualityDataError, match="not found"):
        train_quality_classifier(tmp_path / "missing.jsonl", tmp_path / "m.bin")


def test_cli_function(labelled, tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from synth.ingest.quality_cli import quality_train

    app = typer.Typer()
    app.command()(quality_train)
    path, _, _ = labelled
    result = CliRunner().invoke(
        app, [str(path), "--output", str(tmp_path / "q.bin"), "--dim", "16", "--bucket", "20000"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["held_out"]["labels"]["high"]["precision"] >= 0.97
    result = CliRunner().invoke(app, [str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "q.bin")])
    assert result.exit_code == 2 and "examples not found" in result.output


def test_pipeline_requires_existing_model(tmp_path, trained):
    base = [{"type": "tests.core.toy_stages:CountSource"}]
    with pytest.raises(ConfigError, match="synth quality train"):
        build_pipeline(
            {"name": "t", "stages": base + [{"type": "quality_classifier", "model": str(tmp_path / "none.bin")}]}
        )
    model, _ = trained
    pipe = build_pipeline(
        {"name": "t", "stages": base + [{"type": "quality_classifier", "model": str(model), "min_score": 0.7}]}
    )
    assert pipe.stages[1].stage.output_columns() == ("quality_label", "quality_score")


def warc_boilerplate(path: Path) -> list[str]:
    """Real page furniture: text of a page outside its main content (resiliparse's view)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    chunks = []
    with path.open("rb") as fh:
        for record in ArchiveIterator(fh, record_types=WarcRecordType.response):
            if "html" not in (record.http_headers.get("Content-Type", "") if record.http_headers else ""):
                continue
            body = record.reader.read()
            html = bytes_to_str(body, detect_encoding(body))
            main = {line.strip() for line in extract_plain_text(html, main_content=True).split("\n")}
            rest = [
                s
                for s in (line.strip() for line in extract_plain_text(html, main_content=False).split("\n"))
                if s and s not in main
            ]
            if len(rest) >= 3:
                chunks.append("\n".join(rest[:15]))
    return chunks


def test_real_web_boilerplate_scores_low(trained, shared_data):
    """Trained on synthetic furniture only, the model still rejects a real 2008 crawl's."""
    model, _ = trained
    chunks = warc_boilerplate(shared_data / "warc" / "aut-2008-crawl.warc.gz")
    assert len(chunks) >= 15
    labels, scores = QualityClassifierFilter(QualityClassifierFilter.Options(model=model)).predict(chunks)
    # measured: 18 of 20 predicted "low"
    assert labels.count("low") >= 0.75 * len(chunks)
