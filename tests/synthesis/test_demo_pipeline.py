"""pipelines/demo.yaml end to end on real vLLM with the embedded model, as a user
runs it: the ledger accounts for every record, the output loads in `datasets`, and
resuming a half-finished LLM stage pays for no request twice and ends with the
same output."""

import json
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _synth(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "synth", *args], cwd=cwd, capture_output=True, text=True, timeout=1800)


def _audit(run: Path) -> dict:
    res = _synth("audit", str(run), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _rows(run: Path) -> list[dict]:
    return [r for p in sorted((run / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("demo") / "run"
    res = _synth("run", "pipelines/demo.yaml", "--output", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    return run


def test_ledger_accounts_for_every_record(demo_run):
    report = _audit(demo_run)
    assert report["version"] == 2 and report["complete"] and report["status"] == "complete"
    assert not any(k.startswith("audit.statistics_failed") for s in report["stages"] for k in s["counters"])
    stages = report["stages"]
    for prev, stage in pairwise(stages):
        assert stage["in"] == prev["out"], (prev["stage"], stage["stage"])
    for stage in stages:
        if not stage["creates_records"]:
            assert stage["in"] == stage["out"] + sum(stage["dropped"].values()), stage["stage"]
    by_type = {s["type"]: s for s in stages}
    generated = sum(v for k, v in by_type["respond"]["counters"].items() if k.endswith("completion_tokens"))
    assert generated > 0
    assert by_type["instruct"]["out"] > 0


def test_output_schema_and_loads_in_datasets(demo_run):
    from datasets import load_dataset

    rows = _rows(demo_run)
    assert rows, "the demo produced no records"
    ds = load_dataset("parquet", data_files=str(demo_run / "output" / "*.parquet"), split="train")
    assert len(ds) == len(rows)
    for col in (
        "id",
        "kind",
        "domain",
        "messages",
        "provenance",
        "source_id",
        "evolution",
        "critique_grade",
        "response_model",
    ):
        assert col in ds.column_names, col
    row = rows[0]
    assert row["kind"] == "instruction"
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    steps = [s["stage"] for s in json.loads(row["provenance"])]
    assert steps[0] in ("instruct", "self_instruct") and "respond" in steps and "critique" in steps
    assert all("@" in s["prompt"] for s in json.loads(row["provenance"]))


def test_resume_mid_llm_stage_reuses_cached_requests(demo_run, tmp_path):
    before = _rows(demo_run)
    run = tmp_path / "resumed"
    shutil.copytree(demo_run, run)
    labels = [s["label"] for s in json.loads((run / "run.json").read_text())["stages"]]
    respond = next(i for i, label in enumerate(labels) if label.endswith("respond"))
    # As if killed after one shard of `respond` committed: drop the other and all later work.
    (run / "stages" / labels[respond] / "part-00001.parquet").unlink()
    for label in labels[respond + 1 :]:
        shutil.rmtree(run / "stages" / label)
    shutil.rmtree(run / "output")
    res = _synth("run", "pipelines/demo.yaml", "--output", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    redone = json.loads((run / "stages" / labels[respond] / "part-00001.stats.json").read_text())
    new_tokens = sum(v for k, v in redone["counters"].items() if k.endswith("completion_tokens"))
    hits = sum(v for k, v in redone["counters"].items() if k.endswith("cache_hits"))
    assert hits > 0 and new_tokens == 0
    assert _rows(run) == before
