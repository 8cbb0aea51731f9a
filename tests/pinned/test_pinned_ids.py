"""Output record ids of the ingest pipeline and of the whole demo, pinned.

Consolidations of the stage contract must not change what synth produces: these tests run
`synth run` on a fixed subset of the shared data and compare the sorted output ids with
the committed lists in `tests/pinned/` (regenerate with SYNTH_REPIN=1 only when a change
of output is intended, and say so in the commit).

The CPU vLLM engine does not repeat sampled outputs across engine starts even with a seed
(see README, Models), so the demo's ids after `instruct` are reproducible only through the
request cache: `demo.llm-cache.sqlite.gz` is the cache of one demo run, and the whole demo
runs from it with no engine at all (a request that misses it fails the test, naming the
change: a prompt, a sampling option or a request's key changed). Regenerate both together
(SYNTH_REPIN=1 with a real engine, see `test_demo_ids_pinned_from_its_request_cache`) only
when a change of output is intended. The demo's LLM-free prefix (up to `sample`) is also
pinned on its own, so a change there is told apart from one in the LLM stages.
"""

import gzip
import json
import os
import shutil
import sqlite3
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
    return sorted(
        i
        for p in sorted((run / "output").glob("*.parquet"))
        for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()
    )


def _check(name: str, ids: list[str]) -> None:
    pinned = HERE / f"{name}.ids.json"
    if os.environ.get("SYNTH_REPIN") == "1":
        pinned.write_text(json.dumps(ids, indent=0) + "\n")
    expected = json.loads(pinned.read_text())
    assert ids, "the pinned run produced no records"
    missing, extra = sorted(set(expected) - set(ids)), sorted(set(ids) - set(expected))
    assert ids == expected, (
        f"{name}: {len(missing)} pinned ids missing (e.g. {missing[:3]}), {len(extra)} new (e.g. {extra[:3]})"
    )


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


DEMO_CACHE = HERE / "demo.llm-cache.sqlite.gz"


@pytest.mark.slow
def test_demo_ids_pinned_from_its_request_cache(tmp_path, shared_data, monkeypatch):
    run = tmp_path / "demo"
    run.mkdir()
    repin = os.environ.get("SYNTH_REPIN") == "1"
    if not repin:
        with gzip.open(DEMO_CACHE) as src, open(run / "llm-cache.sqlite", "wb") as dst:
            shutil.copyfileobj(src, dst)
        import synth.llm.engines as engines

        def no_engine(*_args, **_kwargs):
            raise AssertionError(
                f"a request missed the committed cache {DEMO_CACHE.name}: the demo's LLM requests changed"
            )

        monkeypatch.setattr(engines, "open_engine", no_engine)
    _run(
        REPO / "pipelines" / "demo.yaml",
        run,
        [shared_data / "warc" / "aut-2008-crawl.warc.gz", shared_data / "books" / "pg11_alice.txt"],
    )
    if repin:
        # The session keeps the cache open in WAL mode: copy a consistent snapshot of it
        # (the backup API reads through the WAL) into one compact standalone file.
        snapshot = tmp_path / "snapshot.sqlite"
        with sqlite3.connect(run / "llm-cache.sqlite") as live, sqlite3.connect(snapshot) as copy:
            live.backup(copy)
            copy.execute("VACUUM")
        with open(snapshot, "rb") as src, gzip.GzipFile(DEMO_CACHE, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
    _check("demo", _ids(run))
