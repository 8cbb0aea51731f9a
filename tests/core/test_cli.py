"""The CLI as a user meets it: run, audit (table and JSON), errors without tracebacks."""

import json

import yaml
from typer.testing import CliRunner

from synth.cli import app

runner = CliRunner()
T = "tests.core.toy_stages"


def _pipeline(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "stages": [
                    {"type": f"{T}:CountSource", "per_shard": 10, "shards": 2},
                    {"type": f"{T}:DropOdd"},
                ],
            }
        )
    )
    return path


def test_run_then_audit_table_and_json(tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["run", str(_pipeline(tmp_path)), "--output", str(run), "--workers", "1"])
    assert res.exit_code == 0, res.output
    table = runner.invoke(app, ["audit", str(run)])
    assert table.exit_code == 0, table.output
    assert "01-toy_drop_odd" in table.output and "odd 10" in table.output
    assert "dropped odd (10), e.g.:" in table.output
    report = json.loads(runner.invoke(app, ["audit", str(run), "--json"]).output)
    assert [s["stage"] for s in report["stages"]] == ["00-toy_count", "01-toy_drop_odd"]
    assert report["stages"][1]["dropped"] == {"odd": 10} and report["stages"][1]["balanced"]


def test_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 1 and "not a synth run directory" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - type: nope\n")
    res = runner.invoke(app, ["run", str(bad), "--output", str(tmp_path / "r")])
    assert res.exit_code == 2 and "unknown stage type nope" in res.output and "Traceback" not in res.output
