"""A resumed run recomputes a stage when a file it reads outside its options changes
(benchmark files, blocklists, a quality model), and only from that stage on."""

import json

import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from synth.cli import app
from synth.core.config import load_pipeline

runner = CliRunner()
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?",
    "A train leaves the station at nine in the morning travelling at sixty miles per hour towards a city two hundred miles away. When does it arrive?",
    "Explain in a few sentences why the leaves of deciduous trees change colour and fall in the autumn months every year.",
]


def _write_pipeline(tmp_path, bench):
    path = tmp_path / "p.yaml"
    stages = [
        {"type": "read_records", "columns": ["text"]},
        {"type": "decontaminate", "benchmarks": [str(bench)], "columns": ["text"], "n": 8, "min_tokens": 8},
    ]
    path.write_text(yaml.safe_dump({"name": "ext", "stages": stages}))
    return path


def _run(pipeline, src, run):
    res = runner.invoke(app, ["run", str(pipeline), "--input", str(src), "--output", str(run), "--workers", "1"])
    assert res.exit_code == 0, res.output
    return sorted(r["text"] for p in sorted((run / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist())


def test_changed_benchmark_file_rechecks_a_resumed_run(tmp_path):
    src = tmp_path / "records.jsonl"
    src.write_text("".join(json.dumps({"text": q}) + "\n" for q in QUESTIONS))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        json.dumps({"question": "An unrelated question about the boiling point of water at altitude in the mountains?"})
        + "\n"
    )
    pipeline, run = _write_pipeline(tmp_path, bench), tmp_path / "run"
    assert _run(pipeline, src, run) == sorted(QUESTIONS)
    before = json.loads((run / "run.json").read_text())["stages"]

    # The benchmark now holds the first question: the same command must drop it.
    bench.write_text(bench.read_text() + json.dumps({"question": QUESTIONS[0]}) + "\n")
    assert _run(pipeline, src, run) == sorted(QUESTIONS[1:])
    after = json.loads((run / "run.json").read_text())["stages"]
    assert before[0]["fingerprint"] == after[0]["fingerprint"]  # the reader is not redone
    assert before[1]["fingerprint"] != after[1]["fingerprint"]


def test_blocklist_and_team_list_contents_join_the_url_filter_fingerprint(tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text("example.org\n")
    lists = tmp_path / "ut1"
    (lists / "adult").mkdir(parents=True)
    (lists / "adult" / "domains").write_text("bad.example\n")
    path = tmp_path / "p.yaml"
    stages = [
        {"type": "read_records", "columns": ["text", "url"]},
        {"type": "url_filter", "categories": ["adult"], "blocklist_dir": str(lists), "allow_file": "allow.txt"},
    ]
    path.write_text(yaml.safe_dump({"name": "url", "stages": stages}))

    def prints():
        return load_pipeline(path).fingerprints(["in"])

    first = prints()
    assert prints() == first  # stable when nothing changed
    (lists / "adult" / "domains").write_text("bad.example\nworse.example\n")
    second = prints()
    assert second[0] == first[0] and second[1] != first[1]
    allow.write_text("example.org\nexample.net\n")
    assert prints()[1] != second[1]


def test_retrained_quality_model_joins_the_quality_classifier_fingerprint(tmp_path):
    model = tmp_path / "quality.bin"
    model.write_bytes(b"model one")
    path = tmp_path / "p.yaml"
    stages = [{"type": "read_records", "columns": ["text"]}, {"type": "quality_classifier", "model": str(model)}]
    path.write_text(yaml.safe_dump({"name": "q", "stages": stages}))
    first = load_pipeline(path).fingerprints(["in"])
    model.write_bytes(b"model two")
    second = load_pipeline(path).fingerprints(["in"])
    assert second[0] == first[0] and second[1] != first[1]


def test_domain_model_file_joins_the_route_fingerprint(tmp_path):
    from synth.llm.domain_model import DEFAULT_MODEL_PATH

    model = tmp_path / "domains.ftz"
    model.write_bytes(DEFAULT_MODEL_PATH.read_bytes())
    path = tmp_path / "p.yaml"
    stages = [
        {"type": "read_records", "columns": ["instruction"]},
        {"type": "route", "classifier": {"model_path": str(model)}},
    ]
    path.write_text(yaml.safe_dump({"name": "r", "stages": stages}))
    first = load_pipeline(path).fingerprints(["in"])
    model.write_bytes(model.read_bytes() + b"\0")
    assert load_pipeline(path).fingerprints(["in"])[1] != first[1]


def test_a_reused_worker_keeps_one_pipeline_per_config_and_rebuilds_it_when_files_change(monkeypatch):
    """A Ray worker outlives runs and never tears down: a new fingerprint replaces the
    cached pipeline (its stages torn down) instead of piling up beside it."""
    import synth.core.executor as executor

    monkeypatch.setattr(executor, "_PIPELINES", {})
    raw = {"name": "w", "stages": [{"type": "read_records", "columns": ["text"]}]}
    first = executor._pipeline(executor.PipelineSource(raw=raw, path=None, seed=0, fingerprint="a"))
    assert executor._pipeline(executor.PipelineSource(raw=raw, path=None, seed=0, fingerprint="a")) is first
    torn = []
    monkeypatch.setattr(executor, "teardown_stages", lambda stages: torn.extend(stages))
    second = executor._pipeline(executor.PipelineSource(raw=raw, path=None, seed=0, fingerprint="b"))
    assert second is not first and torn == [e.stage for e in first.stages]
    assert len(executor._PIPELINES) == 1
