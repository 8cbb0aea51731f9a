"""Domain labelling: the regular-expression rules against the packaged fastText model,
side by side in one run, on labelled examples the model never saw.

Held-out sets come from scripts/build_domain_data.py (same sources, same split the
packaged model was trained with): `test` (items of the training sources held out by
source item: MMLU questions, HumanEval tasks, GSM8K problems, whole books, articles,
chat turns, stdlib modules) and `unseen` (MMLU dev and GSM8K test: sources not trained on
at all). Reports per-domain precision and recall of both labellers, and labels/s of
each on one core (one process, one thread). A cascade model (a fast first model whose
unsure texts go to a second one) is also reported without its second model
(`first alone`), so what the cascade buys and costs is visible in the same run; a first
model of word unigrams is also timed through fastText's own prediction instead of the
vectorised one (`vectorised/own=`), after a check that both give the same labels.

    .venv/bin/python benchmarks/routing.py [--shared ../shared/data] [--model PATH]

Last line: `ratio=<trained labels/s / rules labels/s>`; the line before it
`min_recall=<lowest per-domain recall of the trained model on test>`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.llm.domain_model import (  # noqa: E402
    DEFAULT_MODEL_PATH,
    FastTextDomainModel,
    domain_tokens_many,
    line_words,
    per_domain_metrics,
    read_metadata,
)
from synth.synthesis.route import ClassifierConfig, RuleClassifier, make_classifier  # noqa: E402


def _assembly():
    spec = importlib.util.spec_from_file_location("build_domain_data", REPO / "scripts" / "build_domain_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def labels_per_second(label_many, texts: list[str], repeat: int) -> tuple[float, float, float]:
    """(median labels per CPU-second, best labels per CPU-second, median labels per wall
    second). Labelling is one thread, so CPU time is one core's time; it stays honest on
    a busy shared machine, and the best pass is the one least disturbed by neighbours."""
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        label_many(texts)
        cpu.append(len(texts) / max(time.process_time() - c0, 1e-9))
        wall.append(len(texts) / (time.perf_counter() - w0))
    return statistics.median(cpu), max(cpu), statistics.median(wall)


class FirstModelAlone:
    """A cascade's first model without its second: the same threshold and interface."""

    def __init__(self, trained):
        self.trained = trained

    def classify_many(self, texts: list[str]) -> list:
        from synth.synthesis.route import DomainDecision

        labels, confs = self.trained.model.predict(texts, cascade=False)
        threshold = self.trained.threshold
        return [DomainDecision(lab if c >= threshold else "general", round(c, 4)) for lab, c in zip(labels, confs)]


def report(name: str, rows: list[dict], labellers: dict) -> dict[str, dict]:
    gold = [r["domain"] for r in rows]
    out = {}
    print(f"\n{name}: {len(rows):,} examples")
    header = f"{'domain':12s} {'support':>8s}" + "".join(f" {lab + ' P':>11s} {lab + ' R':>11s}" for lab in labellers)
    print(header)
    results = {
        lab: per_domain_metrics(gold, [d.domain for d in c.classify_many([r["text"] for r in rows])])
        for lab, c in labellers.items()
    }
    for domain in sorted(set(gold)):
        line = f"{domain:12s} {gold.count(domain):8d}"
        for lab in labellers:
            m = results[lab].get(domain, {"precision": 0.0, "recall": 0.0})
            line += f" {m['precision']:11.4f} {m['recall']:11.4f}"
        print(line)
    for lab in labellers:
        out[lab] = {d: m for d, m in results[lab].items() if d in set(gold)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", default=None, help="fastText model (default: the packaged one)")
    ap.add_argument(
        "--sources",
        type=Path,
        action="append",
        default=None,
        help="sources file the model was assembled from (repeat for an overlay; default: the packaged model's, scripts/domain_sources.yaml + domain_sources_fine.yaml)",
    )
    ap.add_argument("--repeat", type=int, default=5, help="timing passes (median and best)")
    ap.add_argument("--speed-texts", type=int, default=20_000, help="texts per timing pass")
    args = ap.parse_args()

    build = _assembly()
    sources = {}
    for path in args.sources or build.DEFAULT_SOURCES:
        sources.update(build.yaml.safe_load(path.read_text()) or {})
    splits = build.assemble(args.shared, sources)
    model_path = Path(args.model) if args.model else DEFAULT_MODEL_PATH
    meta = read_metadata(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.jsonl"
        build.write_split(train_file, splits["train"])
        digest = hashlib.sha1(train_file.read_bytes()).hexdigest()
    if meta.get("train_sha1") and meta["train_sha1"] != digest:
        print(
            f"warning: {model_path} was trained on other data than this assembly gives (sha1 {meta['train_sha1'][:12]} vs {digest[:12]}): held-out figures may overlap training",
            file=sys.stderr,
        )

    rules = RuleClassifier()
    trained = make_classifier(ClassifierConfig(model_path=str(model_path)))
    labellers = {"rules": rules, "trained": trained}
    fine = f", {len(meta['label_domains'])} fine labels summed into domains" if meta.get("label_domains") else ""
    print(
        f"model {model_path.name}: {model_path.stat().st_size:,} bytes{fine}, threshold {trained.threshold:.2f} (calibrated on {meta.get('calibration', {}).get('examples', 0):,} held-out examples), domain weights {meta.get('domain_weights') or 'none'}"
    )
    second = trained.model.cascade
    if second is not None:
        labellers["first alone"] = FirstModelAlone(trained)
        second_meta = second.metadata
        second_fine = f", {len(second_meta['label_domains'])} fine labels" if second_meta.get("label_domains") else ""
        params = second_meta.get("params", {})
        print(
            f"cascade: texts under confidence {trained.model.margin:.2f} and of at most {trained.model.max_words or 'any'} words go to {second.path.name} ({second.path.stat().st_size:,} bytes{second_fine}, "
            f"char n-grams {params.get('minn', 0)}-{params.get('maxn', 0)}, word n-grams {params.get('word_ngrams')}, dim {params.get('dim')}); "
            f"routed {meta['cascade'].get('routed_valid', 0):.1%} of valid's words, at most {meta['cascade'].get('max_routed', 0):.0%}"
        )
    test = report("held-out (test split, never trained or calibrated on)", splits["test"], labellers)
    report("unseen sources (MMLU dev, GSM8K test)", splits["unseen"], labellers)
    # Where the misses are: accuracy per source of the held-out split.
    by_source: dict[str, list[bool]] = {}
    for row, decision in zip(splits["test"], trained.classify_many([r["text"] for r in splits["test"]])):
        by_source.setdefault(row["source"].split("/")[0], []).append(decision.domain == row["domain"])
    print(
        "\ntrained, held-out accuracy by source: "
        + ", ".join(f"{s} {sum(v) / len(v):.2f} ({len(v)})" for s, v in sorted(by_source.items()))
    )

    texts = [r["text"] for r in splits["test"] + splits["unseen"]]
    texts = (texts * (args.speed_texts // len(texts) + 1))[: args.speed_texts]
    # fastText's own batch prediction of the first model on already normalised lines: what
    # its binding costs without any wrapper (the vectorised first model replaces it).
    # With calibrated domain weights or fine labels it needs every label's probability (k=-1).
    fasttext_model = trained.model.model
    k = -1 if trained.model.metadata.get("domain_weights") or trained.model.metadata.get("label_domains") else 1
    lines = [t + "\n" for t in domain_tokens_many(texts)]
    timed = {
        "rules": rules.classify_many,
        "trained": trained.classify_many,
        "fastText predict alone": lambda _: fasttext_model.f.multilinePredict(lines, k, 0.0, "strict"),
    }
    own_label = "trained, fastText's own"
    if trained.model.unigram is not None:
        # The same labeller with fastText's own prediction for the first model instead of
        # the vectorised one: what the vectorising buys, and a check that it changes nothing.
        own = make_classifier(ClassifierConfig(model_path=str(model_path)))
        own.model = FastTextDomainModel(model_path, vectorised=False)
        same = [(d.domain, d.confidence) for d in own.classify_many(texts)] == [
            (d.domain, d.confidence) for d in trained.classify_many(texts)
        ]
        print(
            f"vectorised first model: labels and confidences identical to fastText's own on {len(texts):,} texts: {same}"
        )
        timed[own_label] = own.classify_many
    if second is not None:
        words = [line_words(line) for line in lines]
        routed = trained.model.routed(lines, trained.model.predict_lines(lines, cascade=False)[1])
        print(
            f"cascade routes {len(routed) / len(lines):.1%} of the timed texts "
            f"({sum(words[i] for i in routed) / sum(words):.1%} of their words) to its second model"
        )
        timed["first alone"] = labellers["first alone"].classify_many
        timed["second model, every text"] = lambda _: second.predict_lines(lines)
    speed = {lab: labels_per_second(fn, texts, args.repeat) for lab, fn in timed.items()}
    mean_chars = statistics.mean(len(t) for t in texts)
    print(
        f"\nlabels/s ({len(texts):,} texts, mean {mean_chars:.0f} chars, {args.repeat} passes), per CPU-second (one core) median / best, per wall second median:"
    )
    for lab, (cpu, best, wall) in speed.items():
        print(f"  {lab:26s} {cpu:10,.0f} {best:10,.0f} {wall:10,.0f}")
    print(f"trained/predict-alone={speed['trained'][0] / speed['fastText predict alone'][0]:.2f}")
    if own_label in speed:
        print(f"vectorised/own={speed['trained'][0] / speed[own_label][0]:.2f}")
    print(f"labels_per_s={speed['trained'][0]:.0f}")
    print(f"min_recall={min(m['recall'] for m in test['trained'].values()):.4f}")
    print(f"ratio={speed['trained'][0] / speed['rules'][0]:.2f}")


if __name__ == "__main__":
    main()
