"""The trained domain classifiers: the packaged default, training with a calibrated
threshold, `synth route train`, the data assembly script, and the transformer option."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth.llm.domain_model import (
    DEFAULT_MODEL_PATH,
    apply_threshold,
    calibrate_threshold,
    domain_tokens,
    domain_tokens_many,
    per_domain_metrics,
    read_metadata,
    train_domain_classifier,
)
from synth.synthesis.route import ClassifierConfig, FastTextClassifier, Router, RoutingConfig, make_classifier

REPO = Path(__file__).resolve().parents[2]

DEFAULT_CASES = {
    "math": [
        "Solve for x: 3x + 5 = 20, then compute the sum of its digits.",
        "A train travels 60 miles in 1.5 hours. What is its average speed?",
    ],
    "code": [
        "Write a Python function that returns the n-th Fibonacci number using recursion.",
        'def add(a, b):\n    """Return the sum of a and b."""',
    ],
    "science": [
        "Explain how photosynthesis turns light energy into chemical energy in a plant cell.",
        "Which organelle produces most of the ATP in a eukaryotic cell?",
    ],
    "humanities": [
        "Which philosopher wrote the Critique of Pure Reason, and what is its main argument?",
        "What were the main consequences of the Treaty of Versailles?",
    ],
    "general": ["Suggest a nice name for my new puppy.", "What is your favorite movie?"],
}


def test_packaged_model_is_small_and_calibrated():
    assert DEFAULT_MODEL_PATH.is_file()
    assert DEFAULT_MODEL_PATH.stat().st_size < 5_000_000
    meta = read_metadata(DEFAULT_MODEL_PATH)
    assert meta["labels"] == ["code", "general", "humanities", "math", "science"]
    assert 0 <= meta["threshold"] < 1 and meta["calibration"]["examples"] > 1000
    assert set(meta["held_out"]) == set(meta["labels"])


def test_packaged_cascade_meets_the_recall_aim_on_its_held_out_split():
    """The packaged model's own held-out report (written by the build from the test split):
    at least 0.85 recall on every domain, the second model within the routed-word budget."""
    meta = read_metadata(DEFAULT_MODEL_PATH)
    recalls = {d: m["recall"] for d, m in meta["held_out"].items()}
    assert min(recalls.values()) >= 0.85, recalls
    cascade = meta["cascade"]
    assert cascade["routed_valid"] <= cascade["max_routed"] and 0 < cascade["margin"] < 1
    assert (DEFAULT_MODEL_PATH.parent / cascade["model"]).stat().st_size < 3_500_000


def test_default_classifier_is_the_packaged_fasttext_model():
    classifier = make_classifier()
    assert isinstance(classifier, FastTextClassifier)
    assert classifier.threshold == read_metadata(DEFAULT_MODEL_PATH)["threshold"]
    assert classifier.domains == ["code", "general", "humanities", "math", "science"]


@pytest.mark.parametrize("domain", sorted(DEFAULT_CASES))
def test_default_classifier_labels_each_domain(domain):
    decisions = make_classifier().classify_many(DEFAULT_CASES[domain])
    assert [d.domain for d in decisions] == [domain] * len(DEFAULT_CASES[domain])
    assert all(0 < d.confidence <= 1 for d in decisions)


def test_threshold_and_rename_apply_to_the_trained_model():
    text = DEFAULT_CASES["math"][0]
    candidates = ["the cell", "a function of time", "history of numbers", "energy and work", "the proof"]
    unsure = next(
        d for d in make_classifier().classify_many(candidates) if d.domain != "general" and d.confidence < 0.999
    )
    unsure_text = candidates[[d for d in make_classifier().classify_many(candidates)].index(unsure)]
    strict = make_classifier(ClassifierConfig(min_confidence=min(1.0, unsure.confidence + 0.001)))
    assert strict.classify(unsure_text).domain == "general"
    renamed = make_classifier(ClassifierConfig(rename={"math": "stem"}))
    assert renamed.classify(text).domain == "stem" and "stem" in renamed.domains and "math" not in renamed.domains
    router = Router(
        RoutingConfig(classifier=ClassifierConfig(rename={"math": "stem"}), routes={"stem": "mathy"}),
        default_model="base",
    )
    assert [m for _, m in router.route([text, "Suggest a nice name for my new puppy."])] == ["mathy", "base"]


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such fastText model file"):
        ClassifierConfig(model_path=str(tmp_path / "nope.ftz"))
    with pytest.raises(ValueError, match="needs 'model_path'"):
        ClassifierConfig(kind="transformers")
    with pytest.raises(ValueError, match="no such Hugging Face model folder"):
        ClassifierConfig(kind="transformers", model_path=str(tmp_path / "nope"))
    from synth.core.config import ConfigError, build_pipeline

    with pytest.raises(ConfigError, match="no such fastText model file"):
        stages = [
            {"type": "tests.core.toy_stages:CountSource"},
            {"type": "route", "text_column": "text", "classifier": {"model_path": str(tmp_path / "nope.ftz")}},
        ]
        build_pipeline({"name": "t", "stages": stages})


def test_tokens_are_one_line_and_batch_equals_single():
    texts = ["Hello, World!\nNext line.", "x=1+2", "tab\tand\x1fseparator", ""]
    batch = domain_tokens_many(texts)
    assert batch == [domain_tokens(t) for t in texts]
    assert all("\n" not in t for t in batch)
    assert batch[0].split() == ["hello", ",", "world", "!", "next", "line", "."]


def test_tokens_leave_non_ascii_intact_and_blank_every_control_character():
    texts = ["Déjà-vu: ÜBER naïve café", "a\x00b\x1ec\u2028d", "x\ud800y"]  # the last holds a lone surrogate
    batch = domain_tokens_many(texts)
    assert batch == [domain_tokens(t) for t in texts]
    assert batch[0].split() == ["déjà", "-", "vu", ":", "Über", "naïve", "café"]  # ASCII letters lowered only
    assert batch[1].split(" ") == ["a", "b", "c\u2028d"]  # fastText splits on ASCII whitespace only
    assert batch[2].split() == ["x", "?", "y"]  # unencodable text is replaced, never an error


def test_calibrated_threshold_sends_unsure_predictions_to_general():
    # confident predictions are right; unsure ones are wrong, and their gold is general
    gold = ["math"] * 20 + ["general"] * 20
    labels = ["math"] * 20 + ["science"] * 20
    confs = [0.9] * 20 + [0.4] * 20
    threshold, macro = calibrate_threshold(gold, labels, confs)
    assert 0.4 < threshold <= 0.9 and macro == 1.0
    assert apply_threshold(labels, confs, threshold) == gold
    m = per_domain_metrics(gold, labels)
    assert m["math"]["recall"] == 1.0 and m["general"]["recall"] == 0.0 and m["science"]["precision"] == 0.0


def _labelled(path: Path, n: int = 40) -> Path:
    rows = []
    for i in range(n):
        rows.append(
            {"text": f"compute the integral of x^{i} and solve the equation {i} + x = {2 * i}", "domain": "math"}
        )
        rows.append(
            {"text": f"the court ruled on contract {i} under the statute and the plaintiff appealed", "domain": "law"}
        )
        rows.append({"text": f"what a lovely day {i}, shall we go for a walk in the park", "domain": "general"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n" + json.dumps({"text": "no label"}) + "\n")
    return path


def test_training_holds_out_calibrates_and_reports(tmp_path):
    model = tmp_path / "domains.bin"
    report = train_domain_classifier(_labelled(tmp_path / "train.jsonl"), model, epoch=10)
    meta = read_metadata(model)
    assert meta["threshold"] == report["threshold"] and meta["labels"] == ["general", "law", "math"]
    assert set(report["held_out"]) >= {"general", "law", "math"} and report["n_test"] > 0
    assert report["skipped"] == {"skipped_malformed_jsonl": 1, "skipped_no_text_or_domain": 1}
    assert report["n_train"] + report["n_test"] + report["calibration"]["examples"] == 120
    # a team's own domain routes to its own model
    router = Router(
        RoutingConfig(classifier=ClassifierConfig(model_path=str(model)), routes={"law": "lawyer"}),
        default_model="base",
    )
    ((decision, routed),) = router.route(["the plaintiff appealed the court ruling on the contract"])
    assert decision.domain == "law" and routed == "lawyer"


def test_training_never_trains_on_held_out_text(tmp_path):
    train = _labelled(tmp_path / "train.jsonl")
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(train.read_text().splitlines()[:6]) + "\n")
    report = train_domain_classifier(train, tmp_path / "m.bin", test=test, epoch=5)
    assert report["dropped_overlapping_held_out"] == 6 and report["n_test"] == 6


def test_route_train_cli_prints_threshold_and_per_domain_table(tmp_path):
    from synth.cli import app

    model = tmp_path / "d.bin"
    res = CliRunner().invoke(
        app, ["route", "train", str(_labelled(tmp_path / "t.jsonl")), "-o", str(model), "--epoch", "5"]
    )
    assert res.exit_code == 0, res.output
    assert "confidence threshold" in res.output and "precision" in res.output and "law" in res.output
    assert model.is_file() and model.with_suffix(".json").is_file()
    bad = CliRunner().invoke(app, ["route", "train", str(tmp_path / "missing.jsonl"), "-o", str(model)])
    assert bad.exit_code == 2 and "not found" in bad.output and "Traceback" not in bad.output
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "x", "domain": "math"}) + "\n")
    bad = CliRunner().invoke(app, ["route", "train", str(one), "-o", str(model)])
    assert bad.exit_code == 2 and "at least two domains" in bad.output


def test_route_label_cli():
    from synth.cli import app

    res = CliRunner().invoke(app, ["route", "label", DEFAULT_CASES["math"][0]])
    assert res.exit_code == 0 and json.loads(res.output)["domain"] == "math"


def test_assembly_script_splits_by_source_item(shared_data, tmp_path):
    out = tmp_path / "data"
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_domain_data.py"), "--data", str(shared_data), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    splits = {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").open()] for s in ("train", "valid", "test", "unseen")
    }
    items = {s: {(r["source"].split("/")[0], r["item"]) for r in rows} for s, rows in splits.items()}
    assert (
        not items["train"] & items["valid"]
        and not items["train"] & items["test"]
        and not items["valid"] & items["test"]
    )
    texts = {s: {r["text"] for r in rows} for s, rows in splits.items()}
    assert not texts["unseen"] & (texts["train"] | texts["valid"] | texts["test"])
    for split in ("valid", "test"):
        assert {r["domain"] for r in splits[split]} == {"math", "code", "science", "humanities", "general"}
        assert not any(r.get("view") for r in splits[split])
        # training-only sources (facts, standard-library prose) never judge
        assert not {r["source"] for r in splits[split]} & {"kg", "stdlib_docs"}
    assert {r["source"] for r in splits["train"]} >= {"kg", "stdlib_docs"}
    assert {r["source"].split("/")[0] for r in splits["unseen"]} == {"mmlu", "gsm8k"}
    # books are held out whole: a book's passages sit in one split only
    books = Counter((r["item"], s) for s, rows in splits.items() for r in rows if r["source"] == "books")
    assert len({item for item, _ in books}) == len(books)
    # the same inputs give the same files
    again = tmp_path / "again"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_domain_data.py"),
            "--data",
            str(shared_data),
            "--out",
            str(again),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (again / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()


def _tiny_transformer(folder: Path, labels: list[str], favourite: str) -> Path:
    """A tiny BERT classifier built offline; its bias makes `favourite` win for any text."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "solve": 4, "the": 5, "equation": 6}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-5.0)
        model.classifier.bias[labels.index(favourite)] = 5.0
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_transformer_classifier_through_the_same_interface(tmp_path):
    folder = _tiny_transformer(tmp_path / "clf", ["math", "code", "law"], favourite="law")
    (folder / "domains.json").write_text(json.dumps({"threshold": 0.5}))
    router = Router(
        RoutingConfig(
            classifier=ClassifierConfig(kind="transformers", model_path=str(folder), device="cpu"),
            routes={"law": "lawyer"},
        ),
        default_model="base",
    )
    assert router.classifier.threshold == 0.5
    assert router.classifier.domains == ["code", "general", "law", "math"]
    routed = router.route(["solve the equation", "anything at all", ""])
    assert [(d.domain, m) for d, m in routed] == [("law", "lawyer")] * 3
    assert all(d.confidence > 0.99 for d, _ in routed)
    # below the configured threshold the label is general
    strict = make_classifier(
        ClassifierConfig(kind="transformers", model_path=str(folder), device="cpu", min_confidence=1.0)
    )
    assert strict.classify("solve the equation").domain == "general"
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        make_classifier(ClassifierConfig(kind="transformers", model_path=str(tmp_path)))


def test_route_train_flags_default_to_the_trainer_keywords():
    import typer

    from synth.core.cli_options import declared_default
    from synth.llm.route_cli import route_train

    app = typer.Typer()
    app.command("train")(route_train)
    app.command("other")(lambda: None)
    flags = {p.name: p.default for p in typer.main.get_command(app).commands["train"].params}
    for flag, keyword in (
        ("held_out", "held_out_fraction"),
        ("seed", "seed"),
        ("epoch", "epoch"),
        ("dim", "dim"),
        ("bucket", "bucket"),
        ("quantize", "quantize"),
        ("balance", "balance"),
    ):
        assert flags[flag] == declared_default(train_domain_classifier, keyword), flag


def test_domain_weights_recover_an_under_called_domain():
    from synth.llm.domain_model import calibrate_domain_weights, weighted_labels

    # `rare` questions look a little like `big` ones: unweighted, half of them go to `big`.
    probs = [{"big": 0.9, "rare": 0.1}] * 50 + [{"big": 0.6, "rare": 0.4}] * 10 + [{"rare": 0.9, "big": 0.1}] * 10
    gold = ["big"] * 50 + ["rare"] * 20
    assert per_domain_metrics(gold, weighted_labels(probs, {})[0])["rare"]["recall"] == 0.5
    weights, _ = calibrate_domain_weights(gold, probs)
    labels, confs = weighted_labels(probs, weights)
    assert (
        per_domain_metrics(gold, labels)["rare"]["recall"] == 1.0
        and per_domain_metrics(gold, labels)["big"]["recall"] == 1.0
    )
    assert confs[50] == 0.4  # the confidence stays the chosen label's own probability


def test_trained_weights_are_stored_and_applied(tmp_path):
    from synth.llm.domain_model import FastTextDomainModel

    model = tmp_path / "w.bin"
    report = train_domain_classifier(_labelled(tmp_path / "train.jsonl"), model, epoch=5, calibrate_weights=True)
    assert (
        set(report["domain_weights"]) == {"general", "law", "math"}
        and read_metadata(model)["domain_weights"] == report["domain_weights"]
    )
    scorer = FastTextDomainModel(model)
    texts = ["the court ruled on the contract", "solve the equation 2 + x = 4", "shall we walk in the park"]
    scorer.metadata = {}
    plain = scorer.predict(texts)
    scorer.metadata = {"domain_weights": {"general": 1.0, "law": 1.0, "math": 1.0}}
    assert scorer.predict(texts) == plain  # unit weights: the plain top label
    scorer.metadata = {"domain_weights": {"law": 1e6}}
    labels, confs = scorer.predict(texts)
    assert labels == ["law"] * 3 and confs[0] == plain[1][0] and all(0 < c <= 1 for c in confs)


def test_unbalanced_training_still_shuffles_a_file_grouped_by_domain(tmp_path, monkeypatch):
    import synth.llm.domain_model as domain_model

    seen: list[str] = []
    real = domain_model.train_fasttext

    def recording(examples, **kw):
        examples = list(examples)
        seen.extend(label for label, _ in examples)
        return real(examples, **kw)

    monkeypatch.setattr(domain_model, "train_fasttext", recording)
    rows = sorted(
        (json.loads(line) for line in _labelled(tmp_path / "mixed.jsonl", n=60).read_text().splitlines()[:-2]),
        key=lambda r: r["domain"],
    )
    files = {}
    for name, part in (
        ("train", rows),
        ("valid", rows[::10]),
        ("test", rows[5::10]),
    ):  # given splits: no split shuffles
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps(r) for r in part) + "\n")
    report = train_domain_classifier(
        files["train"], tmp_path / "g.bin", valid=files["valid"], test=files["test"], epoch=5, balance=False
    )
    switches = sum(a != b for a, b in itertools.pairwise(seen))
    assert switches > len(seen) / 3  # grouped, there would be 2
    assert all(m["recall"] >= 0.9 for m in report["held_out"].values()), report["held_out"]


def _fine_labelled(path: Path, n: int = 40) -> Path:
    """`science` of two subjects (its `subject` field), `law` and `general` without one."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "text": f"the electron {i} gains kinetic energy in the field of the magnet and the photon",
                "domain": "science",
                "subject": "physics",
            }
        )
        rows.append(
            {
                "text": f"the cell {i} divides by mitosis and the enzyme binds the protein of the gene",
                "domain": "science",
                "subject": "biology",
            }
        )
        rows.append(
            {"text": f"the court ruled on contract {i} under the statute and the plaintiff appealed", "domain": "law"}
        )
        rows.append({"text": f"what a lovely day {i}, shall we go for a walk in the park", "domain": "general"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_fine_labels_train_and_answer_their_domain(tmp_path):
    from synth.llm.domain_model import FastTextDomainModel

    model = tmp_path / "fine.bin"
    report = train_domain_classifier(_fine_labelled(tmp_path / "train.jsonl"), model, epoch=10, fine_field="subject")
    meta = read_metadata(model)
    assert meta["label_domains"] == {"biology": "science", "general": "general", "law": "law", "physics": "science"}
    assert report["n_train_by_label"].keys() == {"biology", "general", "law", "physics"}
    assert (
        set(report["n_train_by_domain"]) == set(report["held_out"]) == {"general", "law", "science"}
    )  # judged by domain
    assert report["held_out"]["science"]["recall"] == 1.0
    scorer = FastTextDomainModel(model)
    assert scorer.labels == ["general", "law", "science"]
    texts = ["the photon and the electron in the magnet", "the enzyme of the gene", "the plaintiff appealed"]
    labels, confs = scorer.predict(texts)
    assert labels == ["science", "science", "law"]
    probs = scorer.probabilities(texts)
    assert all(set(p) == {"general", "law", "science"} and abs(sum(p.values()) - 1) < 0.01 for p in probs)
    assert confs == [probs[i][labels[i]] for i in range(3)]  # the confidence is the domain's summed probability
    fine_only = FastTextDomainModel(model)
    fine_only.metadata = {}
    assert fine_only.predict(texts)[0][:2] == ["physics", "biology"]  # what the file alone says
    router = Router(
        RoutingConfig(classifier=ClassifierConfig(model_path=str(model)), routes={"science": "scientist"}),
        default_model="base",
    )
    assert [m for _, m in router.route(texts)] == ["scientist", "scientist", "base"]


def test_fine_label_under_two_domains_is_a_clear_error(tmp_path):
    from synth.llm.domain_model import DomainDataError

    path = _fine_labelled(tmp_path / "train.jsonl")
    with path.open("a") as fh:
        fh.write(json.dumps({"text": "the physics of law", "domain": "law", "subject": "physics"}) + "\n")
    with pytest.raises(DomainDataError, match="'physics' is under two domains"):
        train_domain_classifier(path, tmp_path / "m.bin", epoch=2, fine_field="subject")


def test_balance_splits_each_domain_share_among_its_fine_labels():
    from synth.llm.domain_model import _balanced

    pairs = (
        [(f"p{i}", "physics") for i in range(30)]
        + [(f"b{i}", "biology") for i in range(5)]
        + [(f"l{i}", "law") for i in range(50)]
    )
    counts = Counter(
        label for _, label in _balanced(pairs, 0, {"physics": "science", "biology": "science", "law": "law"})
    )
    assert counts == {"law": 50, "physics": 25, "biology": 25}  # science as large as law, half to each subject
    assert Counter(label for _, label in _balanced(pairs, 0)) == {"law": 50, "physics": 50, "biology": 50}


def test_route_train_cli_fine_field(tmp_path):
    from synth.cli import app

    model = tmp_path / "f.bin"
    res = CliRunner().invoke(
        app,
        [
            "route",
            "train",
            str(_fine_labelled(tmp_path / "t.jsonl")),
            "-o",
            str(model),
            "--epoch",
            "5",
            "--fine-field",
            "subject",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "physics -> science" in res.output and read_metadata(model)["labels"] == ["general", "law", "science"]


def test_fine_label_overlay_keeps_the_held_out_splits(shared_data, tmp_path):
    script = [sys.executable, str(REPO / "scripts" / "build_domain_data.py"), "--data", str(shared_data)]
    plain, fine = tmp_path / "plain", tmp_path / "fine"
    only_domains = ["--sources", str(REPO / "scripts" / "domain_sources.yaml")]
    subprocess.run([*script, *only_domains, "--out", str(plain)], check=True, capture_output=True, timeout=300)
    overlay = [
        "--sources",
        str(REPO / "scripts" / "domain_sources.yaml"),
        "--sources",
        str(REPO / "scripts" / "domain_sources_fine.yaml"),
    ]
    subprocess.run([*script, *overlay, "--out", str(fine)], check=True, capture_output=True, timeout=300)
    for split in ("valid", "test", "unseen"):  # the fine labels and the new training text never change what judges
        strip = [
            {k: v for k, v in json.loads(line).items() if k != "fine"} for line in (fine / f"{split}.jsonl").open()
        ]
        assert strip == [json.loads(line) for line in (plain / f"{split}.jsonl").open()]
    train = [json.loads(line) for line in (fine / "train.jsonl").open()]
    fine_of = {r["source"]: r.get("fine") for r in train if not r.get("view")}
    assert (
        fine_of["mmlu/college_physics"] == "physics"
        and fine_of["mmlu/virology"] == "biology"
        and fine_of["books"] == "literature"
    )
    assert fine_of["umls"] == "medicine" and fine_of["scipy_constants"] == "physics" and fine_of["kg"] is None
    assert {r["domain"] for r in train if r["source"] in ("umls", "scipy_constants")} == {"science"}
    labels = {}
    for r in train:  # each fine label sits in one domain
        assert labels.setdefault(r.get("fine") or r["domain"], r["domain"]) == r["domain"]


def test_margin_sends_the_unsure_to_the_second_model_within_the_budget():
    from synth.llm.domain_model import calibrate_margin

    # the first model is right when sure (0.9) and wrong when unsure (0.4 or 0.6); the second is always right
    gold = ["math"] * 10 + ["science"] * 10 + ["code"] * 10
    first = (
        ["math"] * 10 + ["math"] * 5 + ["science"] * 5 + ["code"] * 10,
        [0.9] * 10 + [0.4] * 5 + [0.9] * 5 + [0.9] * 10,
    )
    second = list(gold)
    margin, objective, routed, cap = calibrate_margin(gold, first, second, max_routed=1.0)
    assert 0.4 < margin <= 0.9 and routed == round(5 / 30, 4) and cap is None  # the lowest margin that fixes them all
    assert objective == 2.0  # lowest recall 1 + macro F1 1
    assert calibrate_margin(gold, first, second, max_routed=0.1) == (
        0.0,
        pytest.approx(0.5 + (0.8 + 2 / 3 + 1) / 3, abs=1e-3),
        0.0,
        None,
    )
    # Budgeted in words: the five unsure texts are long (50 words) but two are short (5).
    words = [10] * 10 + [5, 5, 50, 50, 50] + [10] * 15
    margin, objective, routed, cap = calibrate_margin(
        gold, first, second, max_routed=0.05, words=words, caps=(5, 50, None)
    )
    assert cap == 5 and 0.4 < margin <= 0.9  # only the short ones fit the budget
    assert routed == round(10 / sum(words), 4) and objective < 2.0
    margin, objective, routed, cap = calibrate_margin(
        gold, first, second, max_routed=0.5, words=words, caps=(5, 50, None)
    )
    assert cap == 50 and objective == 2.0  # ties go to the smaller cap that fixes them all


def test_cascade_relabels_unsure_texts_with_its_second_model(tmp_path):
    from synth.llm.domain_model import FastTextDomainModel

    train = _labelled(tmp_path / "train.jsonl")
    second = tmp_path / "second.bin"
    train_domain_classifier(train, second, epoch=10, minn=3, maxn=4)
    # The first model learns from rows whose law texts are 2/3 mislabelled general: it is
    # unsure of law texts (and often wrong), sure of math; judged on the right labels.
    rows = [json.loads(line) for line in train.read_text().splitlines() if '"domain"' in line]
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text(
        "\n".join(
            json.dumps({**r, "domain": "general"} if r["domain"] == "law" and (i // 3) % 3 else r)
            for i, r in enumerate(rows)
        )
    )
    held = {}
    for name, part in (("valid", rows[::4]), ("test", rows[1::4])):
        held[name] = tmp_path / f"{name}.jsonl"
        held[name].write_text("\n".join(json.dumps(r) for r in part) + "\n")
    first = tmp_path / "first.bin"
    report = train_domain_classifier(
        noisy,
        first,
        valid=held["valid"],
        test=held["test"],
        epoch=5,
        balance=False,
        cascade_to=second,
        cascade_max_routed=1.0,
    )
    cascade = read_metadata(first)["cascade"]
    assert cascade == report["cascade"] and cascade["model"] == "second.bin" and cascade["max_routed"] == 1.0
    assert cascade["margin"] > 0 and 0 < cascade["routed_valid"] <= 1.0, report
    assert all(m["recall"] == 1.0 for m in report["held_out"].values()), report["held_out"]

    model = FastTextDomainModel(first)  # loads its second model from the metadata
    assert (
        model.cascade is not None and model.margin == cascade["margin"] and model.labels == ["general", "law", "math"]
    )
    alone = FastTextDomainModel(second)
    texts = ["solve the equation 3 + x = 7", "the plaintiff appealed the ruling", "shall we walk in the park"]
    first_labels, first_confs = model.predict_lines([t + "\n" for t in domain_tokens_many(texts)], cascade=False)
    labels, confs = model.predict(texts)
    second_labels, second_confs = alone.predict(texts)
    for i in range(3):  # under the margin: the second model's answer and confidence; above: the first's
        if first_confs[i] < model.margin:
            assert (labels[i], confs[i]) == (second_labels[i], second_confs[i])
        else:
            assert (labels[i], confs[i]) == (first_labels[i], first_confs[i])
    model.attach_cascade(alone, 1.01)  # everything routed: the second model's labels
    assert model.predict(texts) == (second_labels, second_confs)
    # the route stage labels through the cascade, and a retrained second model is a new classifier state
    from synth.synthesis.route import classifier_state

    config = ClassifierConfig(model_path=str(first))
    assert [d.domain for d in make_classifier(config).classify_many(texts)] == ["math", "law", "general"]
    before = classifier_state(config)
    train_domain_classifier(train, second, epoch=3)
    assert classifier_state(config) != before


def test_cascade_errors_are_clear(tmp_path):
    from synth.llm.domain_model import DomainDataError, FastTextDomainModel

    train = _labelled(tmp_path / "train.jsonl")
    with pytest.raises(DomainDataError, match="cascade model not found"):
        train_domain_classifier(train, tmp_path / "a.bin", epoch=1, cascade_to=tmp_path / "missing.bin")
    second = tmp_path / "second.bin"
    train_domain_classifier(train, second, epoch=2)
    with pytest.raises(DomainDataError, match="another file"):
        train_domain_classifier(train, second, epoch=1, cascade_to=second)
    with pytest.raises(DomainDataError, match="share of the words"):
        train_domain_classifier(train, tmp_path / "a.bin", epoch=1, cascade_to=second, cascade_max_routed=0)
    train_domain_classifier(train, tmp_path / "a.bin", epoch=1, cascade_to=second)
    second.unlink()
    with pytest.raises(FileNotFoundError, match=r"cascade model .*second\.bin is missing"):
        FastTextDomainModel(tmp_path / "a.bin")


def test_route_train_cli_cascade(tmp_path):
    from synth.cli import app

    train = _labelled(tmp_path / "t.jsonl")
    second = tmp_path / "second.bin"
    args = ["route", "train", str(train), "--epoch", "5"]
    res = CliRunner().invoke(app, [*args, "-o", str(second), "--minn", "3", "--maxn", "4"])
    assert res.exit_code == 0, res.output
    assert read_metadata(second)["params"]["minn"] == 3
    res = CliRunner().invoke(
        app, [*args, "-o", str(tmp_path / "first.bin"), "--cascade-to", str(second), "--cascade-max-routed", "0.5"]
    )
    assert res.exit_code == 0, res.output
    assert "cascade: texts under confidence" in res.output and "second.bin" in res.output
    assert read_metadata(tmp_path / "first.bin")["cascade"]["max_routed"] == 0.5
