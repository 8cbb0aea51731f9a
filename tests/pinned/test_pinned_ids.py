"""Output record ids of the ingest pipeline and of the demo's LLM-free prefix, pinned.

Consolidations of the stage contract must not change what synth produces: these tests run
`synth run` on a fixed subset of the shared data and compare the sorted output ids with
the committed lists in `tests/pinned/` (regenerate with SYNTH_REPIN=1 only when a change
of output is intended, and say so in the commit).

The demo is pinned up to its `sample` stage, the last stage before the first LLM call: the
CPU vLLM engine does not repeat sampled outputs across engine starts even with a seed (see
README, Models), so ids after `instruct` are only reproducible through the request cache.
Every stage pinned here is deterministic: no LLM, seeded sampling, content-hash ids.
"""

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app

HERE = Path(__file__).parent
REPO = HERE.parents[1]
runner = CliRunner()


def _ids(run: Path) -> list[str]:
    return sorted(i for p in sorted((run / "output").glob("*.parquet")) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist())


def _check(name: str, ids: list[str]) -> None:
    pinned = HERE / f"{name}.ids.json"
    if os.environ.get("SYNTH_REPIN") == "1":
        pinned.write_text(json.dumps(ids, indent=0) + "\n")
    expected = json.loads(pinned.read_text())
    assert ids, "the pinned run produced no records"
    missing, extra = sorted(set(expected) - set(ids)), sorted(set(ids) - set(expected))
    assert ids == expected, f"{name}: {len(missing)} pinned ids missing (e.g. {missing[:3]}), {len(extra)} new (e.g. {extra[:3]})"


def _run(pipeline: Path, run: Path, inputs: list[Path]) -> None:
    args = ["run", str(pipeline), "--output", str(run), "--workers", "1"]
    for p in inputs:
        args += ["--input", str(p)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_ingest_pipeline_ids_pinned(tmp_path, shared_data):
    run = tmp_path / "ingest"
    inputs = [shared_data / "warc" / "aut-2008-crawl.warc.gz", shared_data / "books" / "pg11_alice.txt"]
    _run(REPO / "pipelines" / "ingest.yaml", run, inputs)
    _check("ingest", _ids(run))


@pytest.mark.slow
def test_demo_llm_free_prefix_ids_pinned(tmp_path, shared_data):
    demo = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    names = [s["type"] for s in demo["stages"]]
    demo["stages"] = demo["stages"][: names.index("sample") + 1]
    assert "instruct" not in [s["type"] for s in demo["stages"]]
    prefix = tmp_path / "demo_prefix.yaml"
    prefix.write_text(yaml.safe_dump(demo))
    run = tmp_path / "demo"
    _run(prefix, run, [shared_data / "warc" / "aut-2008-crawl.warc.gz", shared_data / "books" / "pg11_alice.txt"])
    _check("demo_prefix", _ids(run))
