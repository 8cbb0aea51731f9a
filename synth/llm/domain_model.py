"""Trained domain classifiers: the packaged fastText default, training with a
calibrated confidence threshold, and an optional Hugging Face transformer.

A trained model travels with a metadata file beside it (same name, `.json`): its
labels, the confidence threshold below which a label becomes `general`
(calibrated on held-out data) and the held-out precision/recall per domain.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from synth.ingest.fasttext_trainer import (
    TrainingDataError,
    label_metrics,
    labelled_objects,
    read_labelled_jsonl,
    stratified_split,
    train_fasttext,
)
from synth.llm.unigram_fasttext import UnigramFastText

GENERAL = "general"
DEFAULT_MODEL_PATH = Path(__file__).parent / "data" / "domains.ftz"

# C-speed passes over UTF-8 bytes: a one-to-one table lowercases ASCII and turns
# control characters into spaces (fastText reads one example per line), then each ASCII
# punctuation character gets spaces around it and becomes its own token (so "end." and
# "end" share a feature, and code keeps its "(", "=", ":"). One `bytes.replace` per
# punctuation character is 3-4x faster than one regex with a substitution per match
# (the regex calls back into Python for every hit). Only ASCII bytes change, so a
# multi-byte UTF-8 character is never touched.
_SEP = "\x1f"  # joins texts for the passes; the only control character kept
_CONTROL = ("".join(chr(c) for c in range(32) if c != 0x1F) + "\x7f").encode()
_LOWER_BLANK = bytes.maketrans(
    string.ascii_uppercase.encode() + _CONTROL, string.ascii_lowercase.encode() + b" " * len(_CONTROL)
)
_SPACED_PUNCT = [(bytes([c]), b" " + bytes([c]) + b" ") for c in string.punctuation.encode()]


def _split_punct(raw: bytes) -> bytes:
    for mark, spaced in _SPACED_PUNCT:
        raw = raw.replace(mark, spaced)
    return raw


class DomainDataError(TrainingDataError):
    """Unusable training input; the message is meant for the user, one line."""


def domain_tokens_many(texts: Sequence[str], max_chars: int = 1000) -> list[str]:
    """The one normalisation for training and prediction (see `_LOWER_BLANK`); the
    first `max_chars` decide (instructions are short). Done on one joined buffer, so
    the per-text cost stays in C."""
    if not texts:
        return []
    return _split_punct(normalised_buffer(texts, max_chars)).decode("utf-8").split(_SEP)


def normalised_buffer(texts: Sequence[str], max_chars: int = 1000) -> bytes:
    """The texts' first `max_chars` joined by `_SEP` as UTF-8, lowercased and with
    control characters blank (`domain_tokens_many` before the punctuation is spaced);
    a separator inside a text becomes a space."""
    joined = _SEP.join(texts if max(map(len, texts)) <= max_chars else (t[:max_chars] for t in texts))
    if joined.count(_SEP) != len(texts) - 1:
        joined = _SEP.join(t[:max_chars].replace(_SEP, " ") for t in texts)
    return joined.encode("utf-8", "replace").translate(_LOWER_BLANK)


def domain_tokens(text: str, max_chars: int = 1000) -> str:
    raw = text[:max_chars].replace(_SEP, " ").encode("utf-8", "replace").translate(_LOWER_BLANK)
    return _split_punct(raw).decode("utf-8")


def line_words(line: str) -> int:
    """Words of a normalised line (`domain_tokens_many`: tokens joined by one space)."""
    return line.count(" ") + 1


def metadata_path(model_path: Path | str) -> Path:
    return Path(model_path).with_suffix(".json")


def read_metadata(model_path: Path | str) -> dict:
    path = metadata_path(model_path)
    return json.loads(path.read_text()) if path.exists() else {}


# -- data ---------------------------------------------------------------------------


def load_labelled(
    path: Path | str, text_field: str = "text", label_field: str = "domain"
) -> tuple[list[tuple[str, str]], Counter]:
    """(text, domain) pairs from JSONL; malformed, unlabelled, blank or oddly labelled
    lines are counted, not fatal."""
    path = Path(path)
    if not path.is_file():
        raise DomainDataError(f"labelled examples not found: {path}")
    skipped: Counter = Counter()
    pairs = []
    for text, label in read_labelled_jsonl(path, skipped, text_field, label_field):
        if not text.strip():
            skipped["skipped_blank_text"] += 1
        elif not _LABEL.fullmatch(label):  # fastText labels are one token
            skipped["skipped_bad_label"] += 1
        else:
            pairs.append((text, label))
    return pairs, skipped


_LABEL = re.compile(r"[\w.+-]+")


def load_fine_labelled(
    path: Path | str, fine_field: str, text_field: str = "text", label_field: str = "domain"
) -> tuple[list[tuple[str, str]], dict[str, str], Counter]:
    """(text, fine label) pairs and the fine label -> domain map from JSONL whose rows
    carry a domain and, optionally, a finer label (`fine_field`; a row without one
    trains under its domain's name). A fine label under two domains is an error."""
    path = Path(path)
    if not path.is_file():
        raise DomainDataError(f"labelled examples not found: {path}")
    skipped: Counter = Counter()
    pairs, label_domains = [], {}
    for obj, text, domain in labelled_objects(path, skipped, text_field, label_field):
        fine = str(obj.get(fine_field) or domain)
        if not text.strip():
            skipped["skipped_blank_text"] += 1
        elif not _LABEL.fullmatch(fine) or not _LABEL.fullmatch(str(domain)):
            skipped["skipped_bad_label"] += 1
        elif label_domains.setdefault(fine, str(domain)) != str(domain):
            raise DomainDataError(
                f"{path}: {fine_field} {fine!r} is under two domains ({label_domains[fine]!r} and {domain!r}); a fine label maps to one domain"
            )
        else:
            pairs.append((text, fine))
    return pairs, label_domains, skipped


def split_held_out(pairs: list[tuple[str, str]], fraction: float, seed: int) -> tuple[list, list]:
    """Stratified split by distinct text: a text (and all its copies) lands on one
    side only; copies in training keep their weight."""
    return stratified_split(pairs, fraction, seed, distinct_texts=True)


# -- metrics and calibration ------------------------------------------------------


def per_domain_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, dict]:
    return label_metrics(gold, predicted, digits=4)


def apply_threshold(labels: Sequence[str], confidences: Sequence[float], threshold: float) -> list[str]:
    return [lab if conf >= threshold else GENERAL for lab, conf in zip(labels, confidences)]


def calibrate_threshold(
    gold: Sequence[str], labels: Sequence[str], confidences: Sequence[float]
) -> tuple[float, float]:
    """The confidence threshold (below it: `general`) that maximises macro F1 over the
    gold domains on held-out data; ties go to the lower threshold. Returns (threshold, macro F1)."""
    domains = sorted(set(gold))
    best = (0.0, -1.0)
    for step in range(0, 96):
        t = step / 100
        m = per_domain_metrics(gold, apply_threshold(labels, confidences, t))
        macro = sum(m.get(d, {}).get("f1", 0.0) for d in domains) / len(domains)
        if macro > best[1] + 1e-9:
            best = (t, macro)
    return best[0], round(best[1], 4)


# -- fastText ---------------------------------------------------------------------


class FastTextDomainModel:
    """A fastText domain model: `predict(texts) -> (labels, confidences)`.

    With a `cascade` in its metadata ({"model": file beside it, "margin": p}) it is the
    fast first stage of two: the texts it labels with a confidence under the margin are
    labelled again by the second model (typically fine labels with character n-grams:
    more accurate, slower), whose answer and confidence replace the first.

    A model of word unigrams (the cascade's first model) predicts through
    `UnigramFastText`, fastText's computation vectorised over the batch (same labels and
    confidences, about twice as fast); `vectorised=False` keeps fastText's own."""

    def __init__(self, path: Path | str, vectorised: bool = True):
        import fasttext

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"domain model not found: {path}")
        self.path = path
        self.model = fasttext.load_model(str(path))
        self.metadata = read_metadata(path)
        self.unigram = None
        if vectorised and not self.metadata.get("label_domains") and not self.metadata.get("domain_weights"):
            self.unigram = UnigramFastText.from_file(path)
            self.unigram_labels = [x.removeprefix("__label__") for x in self.unigram.labels] if self.unigram else []
        self.cascade, self.margin, self.max_words = None, 0.0, None
        cascade = self.metadata.get("cascade")
        if cascade:
            second = cascade_model_path(path, cascade["model"])
            if not second.is_file():
                raise FileNotFoundError(f"{metadata_path(path)}: its cascade model {second} is missing")
            self.attach_cascade(
                FastTextDomainModel(second, vectorised), float(cascade["margin"]), cascade.get("max_words")
            )

    def attach_cascade(self, second: FastTextDomainModel | None, margin: float, max_words: int | None = None) -> None:
        self.cascade, self.margin, self.max_words = second, margin, max_words

    @property
    def labels(self) -> list[str]:
        """The domains it answers (with fine labels: the domains they map to)."""
        return sorted(set(self._own_labels()) | set(self.cascade.labels if getattr(self, "cascade", None) else ()))

    def _own_labels(self) -> list[str]:
        label_domains = self.metadata.get("label_domains") or {}
        return sorted(
            {
                label_domains.get(x.removeprefix("__label__"), x.removeprefix("__label__"))
                for x in self.model.get_labels()
            }
        )

    def _domain_probabilities(self, texts: Sequence[str]):
        return self._line_probabilities([t + "\n" for t in domain_tokens_many(texts)])

    def _line_probabilities(self, lines: list[str]):
        """(domains, array texts x domains): each domain's probability, its fine labels'
        summed. Summed by one `bincount` over all rows: a Python loop over every label of
        every row cost more than fastText's prediction itself."""
        import numpy as np

        labels, probs = self.model.f.multilinePredict(lines, -1, 0.0, "strict")
        label_domains = self.metadata.get("label_domains") or {}
        domains = self._own_labels()
        index = {
            "__label__" + lab: domains.index(label_domains.get(lab, lab))
            for lab in (x.removeprefix("__label__") for x in self.model.get_labels())
        }
        cols = np.fromiter((index[lab] for labs in labels for lab in labs), dtype=np.int64)
        rows = np.repeat(np.arange(len(labels)), [len(labs) for labs in labels])
        values = np.concatenate(probs) if len(probs) else np.zeros(0)
        summed = np.bincount(rows * len(domains) + cols, weights=values, minlength=len(labels) * len(domains))
        return domains, np.minimum(summed.reshape(len(labels), len(domains)), 1.0)

    def probabilities(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Every domain's probability for each text (a domain's fine labels summed), by
        this model alone (a cascade's second model is not asked)."""
        domains, matrix = self._domain_probabilities(texts)
        return [dict(zip(domains, row)) for row in matrix.tolist()]

    def predict(self, texts: Sequence[str], cascade: bool = True) -> tuple[list[str], list[float]]:
        """Labels and confidences of raw texts; with `cascade`, the unsure ones relabelled
        by the second model (`predict_lines`)."""
        if self.unigram is None or not texts:
            # The line end matters: it is the end-of-line token every training line had.
            return self.predict_lines([t + "\n" for t in domain_tokens_many(texts)], cascade)
        label_ids, confs = self.unigram.predict_normalised(normalised_buffer(texts), len(texts))
        names = self.unigram_labels
        labels = [names[i] if i >= 0 else GENERAL for i in label_ids]
        if cascade and self.cascade is not None and self.margin > 0:
            # Only the unsure texts are normalised into lines: the word cap and the second model.
            unsure = [i for i, c in enumerate(confs) if c < self.margin]
            lines = [t + "\n" for t in domain_tokens_many([texts[i] for i in unsure])]
            routed = self.routed(lines, [confs[i] for i in unsure])
            if routed:
                self._relabel([lines[j] for j in routed], [unsure[j] for j in routed], labels, confs)
        return labels, confs

    def predict_lines(self, lines: list[str], cascade: bool = True) -> tuple[list[str], list[float]]:
        """Labels of already normalised lines (`domain_tokens_many` + a line end); with
        `cascade`, the unsure ones (confidence under the margin, at most `max_words` words)
        relabelled by the second model."""
        labels, confs = self._predict_own(lines)
        unsure = self.routed(lines, confs) if cascade else []
        if unsure:
            self._relabel([lines[i] for i in unsure], unsure, labels, confs)
        return labels, confs

    def _relabel(self, lines: list[str], at: list[int], labels: list[str], confs: list[float]) -> None:
        """The second model's labels and confidences of `lines`, written at positions `at`."""
        second_labels, second_confs = self.cascade.predict_lines(lines)
        for i, label, conf in zip(at, second_labels, second_confs):
            labels[i], confs[i] = label, conf

    def routed(self, lines: list[str], confs: Sequence[float]) -> list[int]:
        """The lines a cascade sends to its second model, given this model's confidences:
        under the margin, and of at most `max_words` words."""
        if self.cascade is None or self.margin <= 0:
            return []
        margin, cap = self.margin, self.max_words
        if cap is None:
            return [i for i, c in enumerate(confs) if c < margin]
        return [i for i, c in enumerate(confs) if c < margin and line_words(lines[i]) <= cap]

    def _predict_own(self, lines: list[str]) -> tuple[list[str], list[float]]:
        # The binding's batch call directly (skips the wrapper's per-text checks and numpy copies).
        weights = self.metadata.get("domain_weights")
        if self.metadata.get("label_domains"):
            # Fine labels, coarse answers: the domain whose fine labels' probabilities sum
            # highest (times its calibrated weight, if any); its sum is the confidence.
            import numpy as np

            domains, matrix = self._line_probabilities(lines)
            scores = matrix * np.array([(weights or {}).get(d, 1.0) for d in domains])
            best = scores.argmax(axis=1) if len(domains) else np.zeros(len(lines), dtype=np.int64)
            confs = matrix[np.arange(len(lines)), best].tolist()
            return [domains[b] if c > 0 else GENERAL for b, c in zip(best.tolist(), confs)], confs
        if not weights:
            labels, probs = self.model.f.multilinePredict(lines, 1, 0.0, "strict")
            out_l = [lab[0][9:] if lab else GENERAL for lab in labels]  # strip "__label__"
            out_c = [min(float(p[0]), 1.0) if len(p) else 0.0 for p in probs]
            return out_l, out_c
        # Calibrated domain weights: the label is the top weighted probability, the
        # confidence that label's own probability (what the threshold is calibrated on).
        by_label = {"__label__" + d: w for d, w in weights.items()}
        labels, probs = self.model.f.multilinePredict(lines, -1, 0.0, "strict")
        out_l, out_c = [], []
        for labs, ps in zip(labels, probs):
            ps = ps.tolist()
            scores = [p * by_label.get(lab, 1.0) for lab, p in zip(labs, ps)]
            if not scores:
                out_l.append(GENERAL)
                out_c.append(0.0)
                continue
            best = scores.index(max(scores))
            out_l.append(labs[best][9:])
            out_c.append(min(ps[best], 1.0))
        return out_l, out_c


def cascade_model_path(model_path: Path | str, name: str) -> Path:
    """A cascade's second model: a name relative to the first model's folder, or absolute."""
    return Path(model_path).parent / name


# Length caps tried for a cascade: the second model's time grows with a text's words,
# and long passages are the ones the first model already labels best.
CASCADE_WORD_CAPS: tuple[int | None, ...] = (16, 32, 64, 96, 128, 256, None)


def calibrate_margin(
    gold: Sequence[str],
    first: tuple[Sequence[str], Sequence[float]],
    second_labels: Sequence[str],
    max_routed: float,
    words: Sequence[int] | None = None,
    caps: Sequence[int | None] = (None,),
) -> tuple[float, float, float, int | None]:
    """The cascade margin (first-model confidence under which the second model decides)
    and word cap (longer texts keep the first label) that maximise the lowest per-domain
    recall plus macro F1 on held-out data, among those that route at most `max_routed`
    of the work: of the texts, or with `words` (each text's), of the words, which is
    what the second model's time follows (labels/s = 1 / (1/v_first + routed/v_second)).
    Ties go to the lower margin, then the smaller cap. Returns (margin, objective,
    routed share, cap)."""
    domains = sorted(set(gold))
    first_labels, first_confs = first
    weight = list(words) if words is not None else [1] * len(first_confs)
    total = max(sum(weight), 1)
    best = (0.0, -1.0, 0.0, None)
    for cap in caps:
        for step in range(0, 101):
            margin = step / 100
            routed = [c < margin and (cap is None or w <= cap) for c, w in zip(first_confs, weight)]
            share = sum(w for w, r in zip(weight, routed) if r) / total
            if share > max_routed + 1e-9:
                break
            labels = [s if r else f for f, s, r in zip(first_labels, second_labels, routed)]
            m = per_domain_metrics(gold, labels)
            score = min(m.get(d, {}).get("recall", 0.0) for d in domains) + sum(
                m.get(d, {}).get("f1", 0.0) for d in domains
            ) / len(domains)
            if score > best[1] + 1e-9:
                best = (margin, score, share, cap)
    return best[0], round(best[1], 4), round(best[2], 4), best[3]


def weighted_labels(
    probabilities: Sequence[dict[str, float]], weights: dict[str, float]
) -> tuple[list[str], list[float]]:
    labels, confs = [], []
    for probs in probabilities:
        best = max(probs, key=lambda d: probs[d] * weights.get(d, 1.0))  # ties: the likelier, as in predict()
        labels.append(best)
        confs.append(probs[best])
    return labels, confs


def calibrate_domain_weights(
    gold: Sequence[str], probabilities: Sequence[dict[str, float]], rounds: int = 3
) -> tuple[dict[str, float], float]:
    """Per-domain weights on the predicted probabilities, chosen on held-out data to
    maximise the lowest per-domain recall plus macro F1: balanced training still leaves
    some domains (those whose questions share words with a large neighbour) under-called,
    and a weight moves the boundary without retraining. Coordinate ascent over powers of
    2**(1/4) in [1/8, 8]; a weight changes only when it improves the objective.
    Returns (weights, objective)."""
    domains = sorted(set(gold))

    def objective(weights: dict[str, float]) -> float:
        m = per_domain_metrics(gold, weighted_labels(probabilities, weights)[0])
        return min(m.get(d, {}).get("recall", 0.0) for d in domains) + sum(
            m.get(d, {}).get("f1", 0.0) for d in domains
        ) / len(domains)

    weights = dict.fromkeys(domains, 1.0)
    best = objective(weights)
    for _ in range(rounds):
        for domain in domains:
            for step in range(-12, 13):
                trial = {**weights, domain: round(2 ** (step / 4), 4)}
                score = objective(trial)
                if score > best + 1e-9:
                    best, weights = score, trial
    return weights, round(best, 4)


def _resized(rows: list, n: int, rng: random.Random) -> list:
    """`n` of `rows`: repeated whole and topped up by a sample, or a sample of them."""
    return rows * (n // len(rows)) + rng.sample(rows, n % len(rows))


def _balanced(
    pairs: list[tuple[str, str]], seed: int, label_domains: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """Repeat the examples of smaller domains until every domain is as large as the
    largest: fastText has no class weights, and a rare domain must not be drowned.
    With fine labels each domain's share is split evenly among its fine labels (a
    small subject is repeated, a large one sampled), so a domain of many subjects is
    not decided by its largest one."""
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        by_label.setdefault(pair[1], []).append(pair)
    out = []
    if not label_domains:
        top = max(len(v) for v in by_label.values())
        for label in sorted(by_label):
            out += _resized(by_label[label], top, rng)
    else:
        by_domain: dict[str, list[str]] = {}
        for label in sorted(by_label):
            by_domain.setdefault(label_domains.get(label, label), []).append(label)
        top = max(sum(len(by_label[lab]) for lab in labels) for labels in by_domain.values())
        for domain in sorted(by_domain):
            share = max(1, top // len(by_domain[domain]))
            for label in by_domain[domain]:
                out += _resized(by_label[label], share, rng)
    rng.shuffle(out)
    return out


def train_domain_classifier(
    train: Path | str,
    output: Path | str,
    valid: Path | str | None = None,
    test: Path | str | None = None,
    held_out_fraction: float = 0.15,
    seed: int = 0,
    epoch: int = 25,
    lr: float = 0.5,
    dim: int = 32,
    word_ngrams: int = 2,
    bucket: int = 200_000,
    minn: int = 0,
    maxn: int = 0,
    quantize: bool = False,
    cutoff: int = 50_000,
    balance: bool = True,
    text_field: str = "text",
    label_field: str = "domain",
    calibrate_weights: bool = False,
    fine_field: str | None = None,
    cascade_to: Path | str | None = None,
    cascade_max_routed: float = 0.15,
) -> dict:
    """Train a fastText domain classifier from labelled JSONL, calibrate its
    threshold on held-out data, and write the model plus its metadata JSON.

    `valid` calibrates the threshold (and, with `calibrate_weights`, per-domain weights
    on the probabilities) and `test` reports precision/recall; each defaults to a
    stratified share of `train` split off before training.

    `fine_field` names a finer label in the training rows (a subject: physics, law);
    the model learns the fine labels and answers their domain (the sum of its fine
    labels' probabilities); the fine label -> domain map goes into the metadata
    (`label_domains`). Held-out rows are judged by their domain.

    `cascade_to` names a trained second model: this one becomes the fast first stage
    of a cascade, and the margin under which a text goes to the second model is
    calibrated on `valid` (at most `cascade_max_routed` of it routed), before the
    threshold; the held-out report is the cascade's."""
    if cascade_to is not None:
        cascade_to = Path(cascade_to)
        if not cascade_to.is_file():
            raise DomainDataError(f"cascade model not found: {cascade_to}")
        if cascade_to.resolve() == Path(output).resolve():
            raise DomainDataError(f"{cascade_to}: the cascade's second model must be another file than --output")
        if not 0 < cascade_max_routed <= 1:
            raise DomainDataError(f"cascade_max_routed {cascade_max_routed}: a share of the words in (0, 1]")
    label_domains: dict[str, str] = {}
    if fine_field:
        pairs, label_domains, skipped = load_fine_labelled(train, fine_field, text_field, label_field)
    else:
        pairs, skipped = load_labelled(train, text_field, label_field)
    if len({label_domains.get(lab, lab) for _, lab in pairs}) < 2:
        raise DomainDataError(
            f"{train}: need examples of at least two domains, found {sorted({lab for _, lab in pairs})}"
        )
    overlap = 0

    def without(held: list[tuple[str, str]]) -> list[tuple[str, str]]:
        nonlocal overlap  # never train on what we judge by
        texts = {t for t, _ in held}
        kept = [(t, lab) for t, lab in pairs if t not in texts]
        overlap += len(pairs) - len(kept)
        return kept

    if test is not None:
        test_pairs = load_labelled(test, text_field, label_field)[0]
        pairs = without(test_pairs)
    else:
        pairs, test_pairs = split_held_out(pairs, held_out_fraction, seed)
    if valid is not None:
        valid_pairs = load_labelled(valid, text_field, label_field)[0]
        pairs = without(valid_pairs)
    else:
        pairs, valid_pairs = split_held_out(pairs, held_out_fraction, seed + 1)
    if not pairs:
        raise DomainDataError(f"{train}: no training examples left after holding out")
    # Held out of the training file, a row keeps its fine label: judge it by its domain.
    test_pairs = [(t, label_domains.get(lab, lab)) for t, lab in test_pairs]
    valid_pairs = [(t, label_domains.get(lab, lab)) for t, lab in valid_pairs]

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # fastText learns in file order: examples grouped by source would leave the model
    # with the last group's view of the world, so the rows are always shuffled.
    rows = _balanced(pairs, seed, label_domains) if balance else random.Random(seed).sample(pairs, len(pairs))
    model = train_fasttext(
        zip((label for _, label in rows), domain_tokens_many([t for t, _ in rows])),
        epoch=epoch,
        lr=lr,
        dim=dim,
        word_ngrams=word_ngrams,
        bucket=bucket,
        minn=minn,
        maxn=maxn,
        seed=seed,
        quantize=quantize,
        retrain_quantized=True,
        cutoff=cutoff,
    )
    model.save_model(str(output))

    scorer = FastTextDomainModel.__new__(FastTextDomainModel)
    base_metadata = {"label_domains": label_domains} if label_domains else {}
    scorer.model, scorer.path, scorer.metadata, scorer.unigram = model, output, dict(base_metadata), None
    scorer.attach_cascade(None, 0.0)
    threshold, macro_f1, weights, weights_objective = 0.0, None, {}, None
    cascade: dict | None = None
    if cascade_to is not None:
        second = FastTextDomainModel(cascade_to)
        cascade = {
            "model": os.path.relpath(cascade_to.resolve(), output.resolve().parent),
            "margin": 0.0,
            "max_routed": cascade_max_routed,
            "rule": "first-model confidence < margin and at most max_words words -> the second model decides; "
            "margin and max_words: max (lowest recall + macro F1) with at most max_routed of the words routed",
        }
    if valid_pairs:
        gold = [g for _, g in valid_pairs]
        if calibrate_weights:
            weights, weights_objective = calibrate_domain_weights(
                gold, scorer.probabilities([t for t, _ in valid_pairs])
            )
            scorer.metadata = {**base_metadata, "domain_weights": weights}
        if cascade is not None:
            lines = [t + "\n" for t in domain_tokens_many([t for t, _ in valid_pairs])]
            margin, objective, routed, cap = calibrate_margin(
                gold,
                scorer.predict_lines(lines, cascade=False),
                second.predict_lines(lines)[0],
                cascade_max_routed,
                words=[line_words(line) for line in lines],
                caps=CASCADE_WORD_CAPS,
            )
            cascade.update(margin=margin, max_words=cap, objective=objective, routed_valid=routed)
            scorer.attach_cascade(second, margin, cap)
        labels, confs = scorer.predict([t for t, _ in valid_pairs])
        threshold, macro_f1 = calibrate_threshold(gold, labels, confs)
    report = {
        "model": output.name,
        "kind": "fasttext",
        "size_bytes": output.stat().st_size,
        "labels": scorer.labels,
        "threshold": threshold,
        "calibration": {
            "examples": len(valid_pairs),
            "macro_f1": macro_f1,
            "rule": "max macro F1; below threshold -> general",
        },
        "domain_weights": weights,
        **({"label_domains": dict(sorted(label_domains.items())), "fine_field": fine_field} if label_domains else {}),
        "domain_weights_calibration": {
            "objective": weights_objective,
            "rule": "max (lowest recall + macro F1); label = argmax probability x weight",
        }
        if weights
        else None,
        **({"cascade": cascade} if cascade is not None else {}),
        "n_train": len(pairs),
        "train_sha1": hashlib.sha1(Path(train).read_bytes()).hexdigest(),
        "n_train_by_domain": dict(sorted(Counter(label_domains.get(lab, lab) for _, lab in pairs).items())),
        **({"n_train_by_label": dict(sorted(Counter(lab for _, lab in pairs).items()))} if label_domains else {}),
        "skipped": dict(skipped),
        "dropped_overlapping_held_out": overlap,
        "params": {
            "epoch": epoch,
            "lr": lr,
            "dim": dim,
            "word_ngrams": word_ngrams,
            "bucket": bucket,
            "minn": minn,
            "maxn": maxn,
            "quantize": quantize,
            "cutoff": cutoff,
            "balance": balance,
            "seed": seed,
        },
    }
    if test_pairs:
        labels, confs = scorer.predict([t for t, _ in test_pairs])
        gold = [g for _, g in test_pairs]
        report["held_out"] = per_domain_metrics(gold, apply_threshold(labels, confs, threshold))
        report["n_test"] = len(test_pairs)
        if cascade is not None and scorer.margin > 0:
            test_lines = [t + "\n" for t in domain_tokens_many([t for t, _ in test_pairs])]
            routed = scorer.routed(test_lines, scorer.predict_lines(test_lines, cascade=False)[1])
            words = [line_words(line) for line in test_lines]
            cascade["routed_test"] = round(sum(words[i] for i in routed) / max(sum(words), 1), 4)
    metadata_path(output).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report


# -- transformers -----------------------------------------------------------------


class TransformerDomainModel:
    """A local Hugging Face sequence-classification folder (labels from its
    `id2label`); runs on GPU when one is there. Same interface as fastText."""

    def __init__(self, path: Path | str, device: str | None = None, batch_size: int = 64, max_length: int = 256):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
        self.path = path
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        )
        self.id2label = {int(i): str(lab) for i, lab in self.model.config.id2label.items()}
        self.batch_size, self.max_length = batch_size, max_length
        # Optional `domains.json` in the folder: {"threshold": ...} calibrated like fastText's.
        meta = path / "domains.json"
        self.metadata = json.loads(meta.read_text()) if meta.is_file() else {}

    @property
    def labels(self) -> list[str]:
        return sorted(self.id2label.values())

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        labels: list[str] = []
        confs: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = [t or "" for t in texts[i : i + self.batch_size]]
            enc = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with self.torch.no_grad():
                probs = self.model(**enc).logits.float().softmax(-1)
            top = probs.max(-1)
            labels += [self.id2label[int(j)] for j in top.indices.tolist()]
            confs += [round(float(p), 6) for p in top.values.tolist()]
        return labels, confs
