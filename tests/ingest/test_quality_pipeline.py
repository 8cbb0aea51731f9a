"""read -> split_passages -> langid -> Gopher/C4 filters through the real executor."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import audit

RAW = {
    "name": "filters-test",
    "seed": 1,
    "stages": [
        {"type": "read"},
        {"type": "extract_html", "extractor": "resiliparse"},
        {"type": "split_passages", "max_chars": 1500, "min_chars": 200},
        {"type": "langid", "min_score": 0.3},
        {"type": "gopher_quality"},
        {"type": "gopher_repetition"},
        {"type": "c4_quality"},
    ],
}


def test_filters_in_a_pipeline(shared_data, tmp_path):
    books = shared_data / "books"
    inputs = [
        str(books / "pg11_alice.txt"),
        str(books / "pg24675_ontboezemingen_nl.txt"),
        str(books / "pg44157_entre_nous_fr.txt"),
        str(shared_data / "warc" / "cc-style-multilingual.warc.gz"),
    ]
    pipe = build_pipeline(RAW)
    result = run_pipeline(
        pipe,
        PipelineSource(raw=RAW, path=None, seed=pipe.seed),
        tmp_path / "run",
        inputs=inputs,
        executor=LocalExecutor(1),
    )
    report = audit(tmp_path / "run")
    assert report["complete"]
    by = {s["stage"]: s for s in report["stages"]}
    for label in ("03-langid", "04-gopher_quality", "05-gopher_repetition", "06-c4_quality"):
        stage = by[label]
        assert stage["in"] == stage["out"] + sum(stage["dropped"].values()), label
        assert all(reason.startswith(("language_", "gopher_", "c4_")) for reason in stage["dropped"])

    rows = [r for p in result.output for r in pq.read_table(p).to_pylist()]
    for column in (
        "language",
        "language_score",
        "gopher_words",
        "gopher_stop_words",
        "gopher_dup_10gram_frac",
        "c4_sentences",
    ):
        assert column in rows[0]
    languages = Counter(r["language"] for r in rows)
    # Dutch and French prose survive the stop-word rule because langid ran first
    assert languages["en"] >= 50 and languages["nl"] >= 50 and languages["fr"] >= 10
    alice = [r for r in rows if "alice" in (r.get("source") or r.get("title") or "").lower() or "Alice" in r["text"]]
    assert len(alice) >= 50
    # rejected samples are kept with their scores for inspection
    rejected = list((tmp_path / "run").rglob("rejected/*/*"))
    assert rejected
