"""kg_walk as a synth source stage: shards, ledger, resume, and the `kg` commands."""

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kg.cli import kg_app
from kg.verify import verify
from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import stage_totals
from synth.core.rundir import RunDir


def _run(raw, out):
    pipe = build_pipeline(raw, seed=raw.get("seed", 0))
    return pipe, run_pipeline(
        pipe, PipelineSource(raw=raw, path=None, seed=pipe.seed), out, inputs=[], executor=LocalExecutor(1)
    )


def _raw(graph, samples=120, per_shard=50, **extra):
    return {
        "name": "kg",
        "seed": 3,
        "stages": [
            {"type": "kg_walk", "graph": str(graph), "samples": samples, "samples_per_shard": per_shard, **extra}
        ],
    }


def _rows(result):
    return [r for p in result.output for r in pq.read_table(p).to_pylist()]


def test_pipeline_run_shards_ledger_and_verification(kg_data, nations, tmp_path):
    pipe, result = _run(_raw(kg_data / "nations"), tmp_path / "run")
    assert [p.name for p in result.output] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    rows = _rows(result)
    totals = stage_totals(RunDir(result.run_dir), pipe.stages[0].label)
    assert totals["in"] == 120 and totals["out"] == len(rows) == 120 - sum(totals["dropped"].values())
    patterns = {k: v for k, v in totals["counters"].items() if k.startswith("pattern.")}
    assert sum(patterns.values()) == len(rows)
    from kg.tools import Executor, ToolRegistry

    ex = Executor(ToolRegistry(nations))
    assert all(verify(r, ex) is None for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_samples_do_not_depend_on_sharding(kg_data, tmp_path):
    _, a = _run(_raw(kg_data / "nations", samples=60, per_shard=60), tmp_path / "a")
    _, b = _run(_raw(kg_data / "nations", samples=60, per_shard=7), tmp_path / "b")
    assert [r["id"] for r in _rows(a)] == [r["id"] for r in _rows(b)]


def test_resume_redoes_only_missing_shards(kg_data, tmp_path):
    raw = _raw(kg_data / "nations", samples=90, per_shard=30)
    _, first = _run(raw, tmp_path / "run")
    before = _rows(first)
    victim = RunDir(first.run_dir).part("00-kg_walk", "part-00001")
    kept = RunDir(first.run_dir).part("00-kg_walk", "part-00000").stat().st_mtime_ns
    victim.unlink()
    _, second = _run(raw, tmp_path / "run")
    assert _rows(second) == before
    assert RunDir(first.run_dir).part("00-kg_walk", "part-00000").stat().st_mtime_ns == kept


def test_bad_options_are_config_errors(kg_data):
    from synth.core.config import ConfigError

    with pytest.raises(ConfigError, match="unknown pattern"):
        build_pipeline(_raw(kg_data / "nations", patterns={"9p": 1}))
    with pytest.raises(ConfigError):
        build_pipeline(_raw(kg_data / "nations", no_such_option=1))


def test_cli_stats_walk_export(kg_data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(kg_app, ["stats", str(kg_data / "umls"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["triples"] == 6529

    run = tmp_path / "run"
    res = runner.invoke(
        kg_app,
        [
            "walk",
            str(kg_data / "nations"),
            "--output",
            str(run),
            "--samples",
            "40",
            "--seed",
            "1",
            "--patterns",
            "1p,2i,pni",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "samples per pattern" in res.output
    rows = [r for p in sorted((run / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert rows and {json.loads(r["meta"])["pattern"] for r in rows} <= {"1p", "2i", "pni", "irrelevance"}

    for fmt in ("sharegpt", "hermes"):
        res = runner.invoke(kg_app, ["export", str(run), "--format", fmt, "--output", str(tmp_path / f"{fmt}.jsonl")])
        assert res.exit_code == 0, res.output
        assert len((tmp_path / f"{fmt}.jsonl").read_text().splitlines()) == len(rows)

    res = runner.invoke(kg_app, ["walk", str(kg_data / "nations"), "--output", str(run), "--verbalizer", "poetry"])
    assert res.exit_code == 2


def test_shipped_pipeline_file_validates(kg_data):
    from pathlib import Path

    from synth.core.config import load_pipeline

    path = Path(__file__).resolve().parents[2] / "pipelines" / "kg_tool_use.yaml"
    pipe = load_pipeline(path)
    stage = pipe.stages[0].stage
    assert pipe.stages[0].type == "kg_walk"
    assert set(stage.options.patterns) == {
        "1p",
        "2p",
        "3p",
        "2i",
        "3i",
        "ip",
        "pi",
        "2u",
        "up",
        "2in",
        "3in",
        "inp",
        "pin",
        "pni",
    }
    specs = stage.list_shards(pipe.inputs)
    assert len(specs) == 5 and Path(specs[0]["graph"]).resolve() == (kg_data / "fb15k237-labeled.tsv.gz").resolve()


def test_llm_verbaliser_inside_the_stage_drops_with_reasons(kg_data):
    from synth.core.stage import Shard
    from synth.llm import FakeEngine

    pipe = build_pipeline(
        _raw(
            kg_data / "nations", samples=20, per_shard=20, verbalizer="llm", irrelevance_share=0.0, back_translate=False
        )
    )
    stage = pipe.stages[0].stage
    assert stage.parallel is False and stage.resources.llm_engine  # an in-process engine stays in the main process

    # A fake model that names the anchors for samples with an even seed and never for the others.
    def model(request, index):
        seed = int(request.key.split(":")[1])
        wanted = request.messages[-1]["content"].split("exactly as written: ")[1].split(". Do not")[0]
        return f"What about {wanted.replace(chr(34), '')}?" if seed % 2 == 0 else "Which ones?"

    stage.engine = FakeEngine(model)
    spec = stage.list_shards([])[0]
    shard = Shard(pipe.stages[0].label, 0, "part-00000", pipe.seed)
    table = stage.read(spec, shard)
    assert table.num_rows + sum(shard.dropped.values()) == 20
    assert table.num_rows > 0 and set(shard.dropped) == {"llm_missing_anchor"}
    assert all(json.loads(m)["verbalizer"] == "llm" for m in table.column("meta").to_pylist())


def test_editing_the_graph_invalidates_a_resumed_run(tmp_path):
    graph = tmp_path / "g.tsv"
    graph.write_text("a\tr\tb\nb\tr\tc\nc\tr\td\na\ts\tc\nb\ts\td\n")
    raw = _raw(graph, samples=10, per_shard=10, irrelevance_share=0.0)
    _, first = _run(raw, tmp_path / "run")
    graph.write_text("a\tr\tb\nb\tr\tc\nc\tr\td\na\ts\tc\nb\ts\td\nd\tr\ta\n")
    _, second = _run(raw, tmp_path / "run")
    assert second.invalidated == ["00-kg_walk"]
    metas = [json.loads(r["meta"]) for r in _rows(second)]
    from kg.graph import load_graph
    from kg.query import evaluate

    g = load_graph(graph, use_cache=False)
    assert all(evaluate(m["query"], g) == m["answer"] for m in metas if m["query"])
