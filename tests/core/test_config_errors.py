"""Pipeline files are checked before anything runs; errors say where and what is allowed."""

import pytest

from synth.core.config import ConfigError, load_pipeline

T = "tests.core.toy_stages"


def _write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_column_nobody_writes_is_an_error_with_line(tmp_path):
    path = _write(
        tmp_path,
        f"name: x\nstages:\n  - type: {T}:CountSource\n  - type: {T}:DedupText\n  - type: rules\n",
    )
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:5: stages[2]") and "response" in msg and "available:" in msg


def test_wrong_value_names_field_and_constraint(tmp_path):
    path = _write(tmp_path, f"name: x\nstages:\n  - type: {T}:CountSource\n  - type: sample\n    fraction: 2.5\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert f"{path}:5: stages[1].fraction" in str(err.value) and "less than or equal to 1" in str(err.value)


def test_unknown_type_suggests(tmp_path):
    path = _write(tmp_path, f"name: x\nstages:\n  - type: {T}:CountSource\n  - type: smaple\n")
    with pytest.raises(ConfigError, match="did you mean 'sample'"):
        load_pipeline(path)


def test_first_stage_must_be_a_source(tmp_path):
    path = _write(tmp_path, "name: x\nstages:\n  - type: sample\n")
    with pytest.raises(ConfigError, match="first stage must create records"):
        load_pipeline(path)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(_write(tmp_path, "name: [unclosed\n"))


def test_all_shipped_pipelines_validate():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml")):
        assert load_pipeline(path).stages, path
