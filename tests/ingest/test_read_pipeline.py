"""read -> extract_html -> split_passages through the real executor: broken files
included, every loss accounted for in the audit, and a rerun changes nothing."""

from __future__ import annotations

import pyarrow.parquet as pq

from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import audit

RAW = {
    "name": "ingest-test",
    "seed": 3,
    "stages": [
        {"type": "read"},
        # resiliparse keeps this test fast; the default extractor is covered in test_extract
        {"type": "extract_html", "extractor": "resiliparse"},
        {"type": "split_passages", "max_chars": 1500, "min_chars": 200},
    ],
}


def _run(run_dir, inputs, workers=1):
    pipe = build_pipeline(RAW)
    return run_pipeline(
        pipe,
        PipelineSource(raw=RAW, path=None, seed=pipe.seed),
        run_dir,
        inputs=inputs,
        executor=LocalExecutor(workers),
    )


def test_ingest_with_broken_inputs_accounts_for_everything(shared_data, tmp_path):
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "junk.warc.gz").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "docs.jsonl").write_text('{"text": "A good line.\\n\\nWith two paragraphs."}\n{"text": broken\n')
    inputs = [
        str(shared_data / "warc" / "bad-*"),
        str(shared_data / "warc" / "odd-block-sized-records.warc.gz"),
        str(shared_data / "warc" / "cc-style-multilingual.warc.gz"),
        str(shared_data / "books" / "pg11_alice.txt"),
        str(tmp_path / "*.warc.gz"),
        str(tmp_path / "docs.jsonl"),
    ]
    result = _run(tmp_path / "run", inputs, workers=2)
    report = audit(tmp_path / "run")
    assert report["complete"]
    by = {s["stage"]: s for s in report["stages"]}
    read = by["00-read"]
    assert read["dropped"] == {"empty_file": 1, "malformed_json": 1, "truncated_record": 1, "unknown_format": 1}
    assert read["out"] == 7 + 16 + 1 + 1  # bad-length, multilingual, the book, the good JSONL line
    extract = by["01-extract_html"]
    assert extract["in"] == extract["out"] + sum(extract["dropped"].values())
    rows = [r for p in result.output for r in pq.read_table(p).to_pylist()]
    assert {r["format"] for r in rows} == {"warc", "gutenberg", "jsonl"}
    assert all(r["text"] and r["doc_id"] for r in rows)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))

    # the same command again: nothing to redo, same output
    again = _run(tmp_path / "run", inputs)
    assert sorted(r["id"] for p in again.output for r in pq.read_table(p).to_pylist()) == sorted(ids)
