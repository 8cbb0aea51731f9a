from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pydantic import ValidationError

from synth.core.stage import PipelineContext, Shard
from synth.synthesis.route import ClassifierConfig, RouteByDomain, Router, RoutingConfig, RuleClassifier, train_fasttext

CASES = {
    "math": "Solve for x: 3x + 5 = 20, then compute the sum of its digits.",
    "code": "Write a Python function that returns the n-th Fibonacci number using recursion.",
    "science": "Explain how photosynthesis turns light energy into chemical energy in a plant cell.",
    "humanities": "Discuss the causes of the French Revolution and its effect on European politics.",
    "general": "Suggest a nice name for my new puppy.",
}


@pytest.mark.parametrize("domain", sorted(CASES))
def test_rules_find_builtin_domains(domain):
    d = RuleClassifier().classify(CASES[domain])
    assert d.domain == domain
    assert 0 < d.confidence <= 1


def test_confidence_is_lower_for_mixed_evidence():
    clear = RuleClassifier().classify(CASES["math"])
    mixed = RuleClassifier().classify("Write a Python program to solve the equation 2x + 1 = 5")
    assert mixed.confidence < clear.confidence


def test_configured_domain_and_rules():
    cfg = ClassifierConfig(rules={"legal": [{"pattern": r"\b(contract|plaintiff|statute|court)\b", "weight": 2}]})
    d = RuleClassifier(cfg).classify("Summarise the court ruling on the contract dispute.")
    assert d.domain == "legal"
    assert "legal" in RuleClassifier(cfg).domains


def test_bad_regex_names_the_pattern():
    with pytest.raises(ValidationError, match="not a valid regex"):
        ClassifierConfig(rules={"x": [{"pattern": "(unclosed"}]})


def test_router_table_with_default():
    router = Router(RoutingConfig(routes={"math": "mathy", "code": "coder"}), default_model="general")
    routed = router.route([CASES["math"], CASES["code"], CASES["general"]])
    assert [(d.domain, m) for d, m in routed] == [("math", "mathy"), ("code", "coder"), ("general", "general")]
    with pytest.raises(ValueError, match="unknown models"):
        router.check_models(["general", "mathy"])


def test_fasttext_classifier_trains_and_predicts(tmp_path):
    rows = []
    for _ in range(30):
        rows += [{"text": CASES["math"], "domain": "math"}, {"text": CASES["code"], "domain": "code"}]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    model = train_fasttext(data, tmp_path / "domain.bin")
    router = Router(
        RoutingConfig(classifier=ClassifierConfig(kind="fasttext", model_path=str(model), min_confidence=0.0))
    )
    decisions = router.classifier.classify_many([CASES["math"], "a Python function with recursion"])
    assert [d.domain for d in decisions] == ["math", "code"]


def test_route_stage_writes_columns_and_counts():
    stage = RouteByDomain(RouteByDomain.Options(routes={"math": "default"}), PipelineContext())
    table = pa.table({"id": ["a", "b"], "instruction": [CASES["math"], CASES["general"]]})
    shard = Shard("03-route", 0, "00000", 0)
    out = stage.process(table, shard)
    assert out.column("domain").to_pylist() == ["math", "general"]
    assert out.column("route_model").to_pylist() == ["default", "default"]
    assert all(0 < c <= 1 for c in out.column("domain_confidence").to_pylist())
    assert shard.counters["route.math"] == 1 and out.num_rows == 2
