"""The LLM layer's commands (wired into `synth` as `synth models ...` and `synth serve`)."""

from __future__ import annotations

from typer.testing import CliRunner

from synth.llm.cli import _standalone

runner = CliRunner()


def test_models_list_default_and_file(tmp_path):
    r = runner.invoke(_standalone, ["models", "list"])
    assert r.exit_code == 0 and "default (default): mode=offline" in r.output
    f = tmp_path / "m.yaml"
    f.write_text("default: b\nmodels:\n  a: {mode: endpoint, url: 'http://h:1/v1'}\n  b: {mode: serve, port: 8100}\n")
    r = runner.invoke(_standalone, ["models", "list", str(f)])
    assert r.exit_code == 0
    assert "a: mode=endpoint model=default at http://h:1/v1" in r.output
    assert "b (default): mode=serve model=default at http://127.0.0.1:8100/v1" in r.output


def test_serve_rejects_a_bad_file_naming_the_field(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("models:\n  a: {mode: serve, prot: 8100}\n")
    r = runner.invoke(_standalone, ["serve", str(f)])
    assert r.exit_code == 2 and "models.a.prot" in r.output


def test_serve_with_nothing_to_serve_exits_cleanly(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("models:\n  a: {mode: offline}\n")
    r = runner.invoke(_standalone, ["serve", str(f), "--log-dir", str(tmp_path / "logs")])
    assert r.exit_code == 0 and "nothing to start" in r.output


def test_check_fails_clearly_on_a_dead_endpoint(tmp_path, dead_url):
    f = tmp_path / "m.yaml"
    f.write_text(f"models:\n  a: {{mode: endpoint, url: '{dead_url}', startup_timeout_s: 1}}\n")
    r = runner.invoke(_standalone, ["models", "check", str(f), "--message", "hi"])
    assert r.exit_code == 1 and "did not answer within 1s" in r.output
