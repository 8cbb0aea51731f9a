"""The plugin examples in examples/plugins/ run through `synth run`, by `pkg.mod:Class`
and by the short names their package declares as `synth.stages` entry points."""

import json
import os
from importlib.metadata import EntryPoint
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import synth.core.registry as registry
import synth.llm.stage as llm_stage
from synth.cli import app
from synth.core.ledger import audit
from synth.llm.fake import FakeEngine

PLUGINS = Path(__file__).resolve().parents[2] / "examples" / "plugins"
FILTER = "synth_example_plugins.length_filter:InstructionLength"
TRANSLATE = "synth_example_plugins.translate:TranslateInstruction"
runner = CliRunner()
INSTRUCTIONS = [
    "Hi",
    "Describe the water cycle in three sentences.",
    "List two prime numbers greater than ten.",
    "word " * 60,
]


@pytest.fixture
def plugins_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    # worker processes import the plugin too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))


def _run(tmp_path, stage: dict):
    src = tmp_path / "tasks.jsonl"
    src.write_text("".join(json.dumps({"instruction": t, "source": "team"}) + "\n" for t in INSTRUCTIONS))
    pipe = tmp_path / "p.yaml"
    pipe.write_text(
        yaml.safe_dump({"name": "plugins", "stages": [{"type": "read_records", "columns": ["instruction"]}, stage]})
    )
    run = tmp_path / "run"
    res = runner.invoke(app, ["run", str(pipe), "--input", str(src), "--output", str(run), "--workers", "1"])
    assert res.exit_code == 0, res.output
    rows = [r for p in sorted((run / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return rows, audit(run)["stages"][1]


def test_heuristic_filter_plugin_by_class_path(tmp_path, plugins_importable):
    rows, stage = _run(tmp_path, {"type": FILTER, "min_words": 3, "max_words": 50})
    assert sorted(r["instruction"] for r in rows) == sorted(INSTRUCTIONS[1:3])
    assert stage["dropped"] == {"instruction_too_short": 1, "instruction_too_long": 1} and stage["balanced"]
    assert [r["instruction_words"] for r in rows] == [7, 7] and {r["source"] for r in rows} == {"team"}


def test_heuristic_filter_annotate_only_keeps_everything(tmp_path, plugins_importable):
    rows, stage = _run(tmp_path, {"type": FILTER, "annotate_only": True})
    assert len(rows) == 4 and stage["dropped"] == {}


def test_entry_point_names_a_stage_and_cannot_replace_a_builtin(tmp_path, plugins_importable, monkeypatch):
    eps = [EntryPoint("instruction_length", FILTER, "synth.stages"), EntryPoint("rules", FILTER, "synth.stages")]
    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in eps if e.group == group])
    assert registry.stage_class("instruction_length").__name__ == "InstructionLength"
    assert registry.stage_class("rules").__name__ != "InstructionLength"
    listed = runner.invoke(app, ["stages"]).output
    assert "instruction_length" in listed and FILTER in listed
    rows, stage = _run(tmp_path, {"type": "instruction_length", "min_words": 3, "max_words": 50})
    assert len(rows) == 2 and stage["type"] == "instruction_length"


def test_unknown_type_lists_plugins_among_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [EntryPoint("instruction_length", FILTER, "synth.stages")]
    )
    from synth.core.config import ConfigError, build_pipeline

    with pytest.raises(ConfigError, match="did you mean 'instruction_length'"):
        build_pipeline({"name": "x", "stages": [{"type": "read_records"}, {"type": "instruction_lenght"}]})


def test_llm_plugin_on_fake_engine(tmp_path, plugins_importable, monkeypatch):
    engine = FakeEngine(lambda req, i: "FR: " + req.messages[-1]["content"])
    monkeypatch.setattr(llm_stage, "shared_engine", lambda *a, **k: engine)
    rows, stage = _run(tmp_path, {"type": TRANSLATE, "language": "French"})
    assert sorted(r["translated_instruction"] for r in rows) == sorted("FR: " + t.strip() for t in INSTRUCTIONS)
    assert {r["translation_prompt"] for r in rows} == {"translate@1"}
    assert "French" in engine.requests_seen[0].messages[0]["content"]
    assert stage["counters"].get("llm.fake.requests") == 4


@pytest.mark.vllm
def test_llm_plugin_on_real_default_model(tmp_path, plugins_importable):
    rows, stage = _run(tmp_path, {"type": TRANSLATE, "sampling": {"temperature": 0.0, "max_tokens": 48}})
    assert stage["balanced"] and len(rows) + sum(stage["dropped"].values()) == 4
    assert rows and all(r["translated_instruction"].strip() for r in rows)
    assert any(k.endswith(".completion_tokens") and v > 0 for k, v in stage["counters"].items())


def test_plugin_that_fails_to_import_is_named(monkeypatch):
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [EntryPoint("broken", "no_such_pkg.mod:Stage", "synth.stages")]
    )
    with pytest.raises(
        registry.StageImportError, match=r"stage type 'broken' could not be loaded from no_such_pkg\.mod:Stage"
    ):
        registry.stage_class("broken")
