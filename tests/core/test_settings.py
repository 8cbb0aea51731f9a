"""A pipeline's `settings` is validated like every other field: typos are errors, not ignored."""

import pytest

from synth.core.config import ConfigError, load_pipeline

T = "tests.core.toy_stages"


def _write(tmp_path, settings):
    path = tmp_path / "p.yaml"
    path.write_text(f"name: x\nsettings:\n{settings}\nstages:\n  - type: {T}:CountSource\n")
    return path


def test_unknown_settings_key_names_file_field_and_allowed(tmp_path):
    path = _write(tmp_path, "  model: models.yaml")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    msg = str(err.value)
    assert str(path) in msg and "settings.model" in msg
    assert "unknown field 'model'" in msg and "allowed fields: llm_cache, models" in msg


def test_wrong_settings_value_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"settings\.models.*MODELS file"):
        load_pipeline(_write(tmp_path, "  models: [a, b]"))


def test_known_settings_keys_and_overrides_reach_the_stages(tmp_path):
    pipe = load_pipeline(
        _write(tmp_path, "  models: m.yaml\n  llm_cache: c.sqlite"), overrides={"models": "other.yaml"}
    )
    assert pipe.settings == {"models": "other.yaml", "llm_cache": "c.sqlite"}
    assert pipe.stages[0].stage.pipeline.settings == pipe.settings
    assert load_pipeline(_write(tmp_path, "  {}")).settings == {}
