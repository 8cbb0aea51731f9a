"""One unreadable input file is a counted drop (file and reason in the
reject sample), not the end of the run; a run where nothing can be read is one
clear error."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core.config import build_pipeline
from synth.core.executor import InputError, LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import audit, reject_samples


def run(tmp_path, inputs):
    raw = {"name": "read-only", "seed": 0, "stages": [{"type": "read"}]}
    pipe = build_pipeline(raw)
    return run_pipeline(
        pipe,
        PipelineSource(raw=raw, path=None, seed=0),
        tmp_path / "run",
        inputs=[str(p) for p in inputs],
        executor=LocalExecutor(1),
    )


def bad_parquet(path):
    pq.write_table(pa.table({"body": ["no text column here"]}), path)
    return path


def test_a_parquet_without_the_text_column_is_a_counted_drop(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a readable document"}\n{"text": "another one"}\n')
    bad = bad_parquet(tmp_path / "bad.parquet")
    result = run(tmp_path, [good, bad])
    texts = [r["text"] for p in result.output for r in pq.read_table(p).to_pylist()]
    assert texts == ["a readable document", "another one"]
    stage = audit(tmp_path / "run")["stages"][0]
    assert stage["dropped"] == {"unreadable_file": 1}
    # the reject sample only: rejected/NN/scores/ holds the audit's per-record scores
    rejects = [r for rows in reject_samples(tmp_path / "run", stage["stage"]).values() for r in rows]
    assert len(rejects) == 1
    sample = json.dumps(rejects[0], default=str)
    assert "bad.parquet" in sample and "no column 'text'" in sample


def test_a_run_where_no_input_can_be_read_is_one_clear_error(tmp_path):
    bad = bad_parquet(tmp_path / "bad.parquet")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as err:
        run(tmp_path, [bad, empty])
    message = str(err.value)
    assert "\n" not in message and "no input could be read" in message
    assert "1 unreadable_file" in message and "1 empty_file" in message
