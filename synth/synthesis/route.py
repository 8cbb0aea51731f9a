"""Specialist routing: classify an instruction's domain, then pick its model.

Classifiers, chosen by config (`classifier.kind`):
- `fasttext` (default): a supervised fastText model. Without `model_path` it is the
  packaged one (synth/llm/data/domains.ftz, trained by scripts/build_domain_data.py on
  MMLU, GSM8K, HumanEval, code, books, news and chat); `synth route train` builds one
  from a team's own labelled JSONL, with its own domains.
- `transformers`: a local Hugging Face sequence-classification folder, same interface.
- `rules`: weighted keyword/regex patterns per domain (built-in ones for math, code,
  science, humanities, plus any configured); confidence is the winning domain's share
  of the matched weight, damped when little matched.
Below the confidence threshold (a trained model's calibrated one unless configured)
or when nothing matches, the label is `general`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synth.core.stage import Stage, StageOptions, add_columns

GENERAL = "general"

# Built-in rules. Weights say how much a hit is evidence for the domain: an
# equation or a code fence is stronger evidence than a loose word such as "history".
BUILTIN_RULES: dict[str, list[tuple[str, float]]] = {
    "math": [
        (
            r"\b(solve|equation|integral|derivative|theorem|prove|probability|polynomial|algebra|geometry|calculus|arithmetic|fraction|percent(age)?|sum of|product of|how many|how much)\b",
            1.0,
        ),
        (r"\b(triangle|circle|radius|angle|matrix|vector|prime|divisible|factorial|logarithm|sqrt|modulo)\b", 1.0),
        (r"\d+\s*[-+*/^=]\s*\d+", 1.5),
        (r"\\(frac|sqrt|int|sum|boxed)\b|\$[^$]+\$", 2.0),
    ],
    "code": [
        (r"```|\bdef \w+\(|\bclass \w+[:(]|#include|\bfunction\s*\w*\(|=>|\bconsole\.log|\bprint\(", 2.0),
        (r"\b(python|javascript|typescript|java|c\+\+|rust|golang|sql|bash|html|css|regex|api|json)\b", 1.5),
        (
            r"\b(code|program|function|script|algorithm|compile|debug|bug|implement|refactor|unit test|recursion|array|string|loop|variable)\b",
            1.0,
        ),
    ],
    "science": [
        (
            r"\b(physics|chemistry|biology|molecule|atom|electron|cell|dna|protein|enzyme|evolution|species|gravity|energy|force|velocity|acceleration|photosynthesis|ecosystem|climate|quantum|reaction|compound|element|organism|genetic)\b",
            1.0,
        ),
        (r"\b(experiment|hypothesis|scientific|laboratory)\b", 0.7),
    ],
    "humanities": [
        (
            r"\b(history|historical|war|empire|revolution|philosophy|philosopher|ethics|moral|religion|literature|novel|poem|poetry|author|art|painting|music|culture|language|linguistics|century|king|queen|democracy|politics|society)\b",
            1.0,
        ),
        (r"\b(essay|story|write a (letter|speech|story|poem))\b", 0.7),
    ],
}


class DomainRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(description="Case-insensitive regular expression.")
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _compiles(self):
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {e}") from None
        return self


class ClassifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["fasttext", "rules", "transformers"] = "fasttext"
    # Extra or replacement rules: domain -> rules. A domain listed here is added to
    # the built-in ones (or replaces them with `replace_builtin`).
    rules: dict[str, list[DomainRule]] = Field(default_factory=dict)
    replace_builtin: bool = False
    # Below this confidence the instruction is `general`. None: the threshold calibrated
    # when the model was trained (in its .json), or 0.34 for rules.
    min_confidence: float | None = Field(None, ge=0, le=1)
    # Matched weight needed for full confidence; less matched evidence damps it.
    saturation: float = Field(2.0, gt=0)
    model_path: str | None = Field(
        None,
        description="fastText .bin/.ftz (default: the packaged model) or, for kind 'transformers', a Hugging Face model folder.",
    )
    # Model label -> domain, e.g. {python: code, rust: code} or {law: humanities}.
    rename: dict[str, str] = Field(default_factory=dict)
    device: str | None = Field(None, description="kind 'transformers': torch device (default: cuda when there is one).")

    @model_validator(mode="after")
    def _model_path(self):
        if self.kind == "transformers" and not self.model_path:
            raise ValueError("kind 'transformers' needs 'model_path' (a local Hugging Face model folder)")
        # A wrong path fails when the pipeline is checked, not in a worker mid-run.
        if self.kind == "fasttext" and self.model_path and not Path(self.model_path).is_file():
            raise ValueError(f"model_path {self.model_path!r}: no such fastText model file")
        if self.kind == "transformers" and not Path(self.model_path).is_dir():
            raise ValueError(f"model_path {self.model_path!r}: no such Hugging Face model folder")
        return self


def classifier_state(config: ClassifierConfig) -> str | None:
    """A digest of the model files behind `config` (for `Stage.external_state`): a
    retrained model relabels a resumed run. A transformers folder counts by its
    config and domain files, not its weights (a new checkpoint has a new folder)."""
    from synth.core.stage import files_digest

    if config.kind == "fasttext":
        from synth.llm.domain_model import DEFAULT_MODEL_PATH, cascade_model_path, metadata_path, read_metadata

        model = Path(config.model_path) if config.model_path else DEFAULT_MODEL_PATH
        files = [model, metadata_path(model)]
        cascade = read_metadata(model).get("cascade")
        if cascade:  # a cascade's second model labels too
            second = cascade_model_path(model, cascade["model"])
            files += [second, metadata_path(second)]
        return files_digest(files, names_only=config.model_path is None)
    if config.kind == "transformers":
        return files_digest([Path(config.model_path) / "config.json", Path(config.model_path) / "domains.json"])
    return None


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    # domain -> model name in MODELS.yaml; unlisted domains go to `default`.
    routes: dict[str, str] = Field(default_factory=dict)
    default: str | None = Field(None, description="Model for unrouted domains; None = the MODELS default.")


@dataclass(frozen=True)
class DomainDecision:
    domain: str
    confidence: float


class RuleClassifier:
    def __init__(self, config: ClassifierConfig | None = None):
        self.config = config or ClassifierConfig()
        table: dict[str, list[tuple[str, float]]] = (
            {} if self.config.replace_builtin else {d: list(r) for d, r in BUILTIN_RULES.items()}
        )
        for domain, rules in self.config.rules.items():
            table.setdefault(domain, []).extend((r.pattern, r.weight) for r in rules)
        self._compiled = {d: [(re.compile(p, re.IGNORECASE), w) for p, w in rs] for d, rs in table.items()}

    @property
    def domains(self) -> list[str]:
        return sorted({*self._compiled, GENERAL})

    def classify(self, text: str) -> DomainDecision:
        scores: dict[str, float] = {}
        for domain, rules in self._compiled.items():
            # Each distinct hit counts once per pattern (sub-linear in repeats), so a
            # long passage mentioning "energy" 10 times does not outweigh one equation.
            s = 0.0
            for rx, w in rules:
                hits = len(set(m.group(0).lower() for m in rx.finditer(text)))
                if hits:
                    s += w * (1 + 0.5 * (hits - 1))
            if s:
                scores[domain] = s
        if not scores:
            return DomainDecision(GENERAL, 1.0)
        best = max(sorted(scores), key=lambda d: scores[d])
        total = sum(scores.values())
        share = scores[best] / total
        strength = min(1.0, scores[best] / self.config.saturation)
        confidence = round(share * strength, 4)
        if confidence < (0.34 if self.config.min_confidence is None else self.config.min_confidence):
            return DomainDecision(GENERAL, round(1 - confidence, 4))
        return DomainDecision(best, confidence)

    def classify_many(self, texts: Sequence[str]) -> list[DomainDecision]:
        return [self.classify(t) for t in texts]


class TrainedClassifier:
    """A trained domain model (fastText or transformers) behind the rules' interface:
    calibrated threshold, `general` below it, configured label renames."""

    def __init__(self, config: ClassifierConfig, model):
        self.config = config
        self.model = model
        configured = config.min_confidence
        self.threshold = float(configured if configured is not None else model.metadata.get("threshold", 0.0))

    @property
    def domains(self) -> list[str]:
        return sorted({self.config.rename.get(label, label) for label in self.model.labels} | {GENERAL})

    def classify(self, text: str) -> DomainDecision:
        return self.classify_many([text])[0]

    def classify_many(self, texts: Sequence[str]) -> list[DomainDecision]:
        labels, confs = self.model.predict([t or "" for t in texts])
        rename, threshold = self.config.rename, self.threshold
        return [
            DomainDecision(rename.get(label, label) if conf >= threshold else GENERAL, round(conf, 4))
            for label, conf in zip(labels, confs)
        ]


class FastTextClassifier(TrainedClassifier):
    def __init__(self, config: ClassifierConfig):
        from synth.llm.domain_model import DEFAULT_MODEL_PATH, FastTextDomainModel

        super().__init__(config, FastTextDomainModel(config.model_path or DEFAULT_MODEL_PATH))


class TransformerClassifier(TrainedClassifier):
    def __init__(self, config: ClassifierConfig):
        from synth.llm.domain_model import TransformerDomainModel

        super().__init__(config, TransformerDomainModel(config.model_path, device=config.device))


def make_classifier(config: ClassifierConfig | None = None):
    config = config or ClassifierConfig()
    if config.kind == "fasttext":
        return FastTextClassifier(config)
    if config.kind == "transformers":
        return TransformerClassifier(config)
    return RuleClassifier(config)


def train_fasttext(
    jsonl: Path | str, out: Path | str, text_field: str = "text", label_field: str = "domain", epoch: int = 25
) -> Path:
    """Train a domain classifier from labelled JSONL; returns the saved model path
    (its metadata, with the calibrated threshold, beside it as .json)."""
    from synth.llm.domain_model import train_domain_classifier

    train_domain_classifier(jsonl, out, text_field=text_field, label_field=label_field, epoch=epoch)
    return Path(out)


class Router:
    """Domain classifier + routing table: instruction -> (domain, confidence, model)."""

    def __init__(self, config: RoutingConfig | None = None, default_model: str | None = None):
        self.config = config or RoutingConfig()
        self.classifier = make_classifier(self.config.classifier)
        self.default_model = self.config.default or default_model

    def model_for(self, domain: str) -> str | None:
        return self.config.routes.get(domain, self.default_model)

    def route(self, texts: Sequence[str]) -> list[tuple[DomainDecision, str | None]]:
        return [(d, self.model_for(d.domain)) for d in self.classifier.classify_many(texts)]

    def check_models(self, known: Sequence[str]) -> None:
        """Fail before running when a route names a model MODELS.yaml lacks."""
        bad = {d: m for d, m in self.config.routes.items() if m not in known}
        if self.config.default and self.config.default not in known:
            bad["(default)"] = self.config.default
        if bad:
            raise ValueError(f"routing names unknown models {bad}; MODELS has {sorted(known)}")


# -- the `route` pipeline stage ------------------------------------------------------


class RouteOptions(StageOptions, RoutingConfig):
    text_column: str = Field("instruction", description="Column holding the instruction text.")
    # Keep a domain an earlier stage already set (e.g. the instruct stage's own label).
    keep_existing: bool = False


class RouteByDomain(Stage):
    """Writes `domain`, `domain_confidence` and `route_model` (the model the respond
    stage should use) for every row; never drops."""

    type = "route"
    Options = RouteOptions
    writes = ("domain", "domain_confidence", "route_model")

    def input_columns(self):
        return (self.options.text_column,)

    def column_types(self):
        return {"domain": pa.string(), "domain_confidence": pa.float64(), "route_model": pa.string()}

    def external_state(self) -> str | None:
        return classifier_state(self.options.classifier)

    def setup(self) -> None:
        default_model = None
        try:
            from synth.llm.stage import models_config_for

            models, _ = models_config_for(self.pipeline.settings, self.pipeline.config_path)
            default_model = models.default_name
            self.router = Router(self.options, default_model)
            self.router.check_models(list(models.models))
        except ImportError:  # pragma: no cover - the stage module is part of this package
            self.router = Router(self.options, default_model)

    def process(self, table: pa.Table, shard) -> pa.Table:
        texts = [t or "" for t in table.column(self.options.text_column).to_pylist()]
        decisions = self.router.classifier.classify_many(texts)
        existing = (
            table.column("domain").to_pylist()
            if self.options.keep_existing and "domain" in table.column_names
            else None
        )
        domains, confs, models = [], [], []
        for i, d in enumerate(decisions):
            if existing is not None and existing[i]:
                domains.append(existing[i])
                confs.append(1.0)
            else:
                domains.append(d.domain)
                confs.append(d.confidence)
            models.append(self.router.model_for(domains[-1]))
            shard.count(f"route.{domains[-1]}")
        return add_columns(
            table, {"domain": domains, "domain_confidence": confs, "route_model": models}, self.column_types()
        )
