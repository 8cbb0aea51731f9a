from __future__ import annotations

import pytest

from synth.llm.config import ModelsConfig, ModelsConfigError
from synth.llm.serve import server_command
from synth.llm.types import ChatResult, SamplingParams
from synth.llm.usage import usage_counters


def write(tmp_path, text: str):
    p = tmp_path / "models.yaml"
    p.write_text(text)
    return p


def test_default_config_is_embedded_model_offline():
    cfg = ModelsConfig.default_config()
    name, entry = cfg.entry(None)
    assert name == "default" and entry.mode == "offline" and entry.model == "default"


def test_unknown_field_is_named(tmp_path):
    p = write(tmp_path, "models:\n  a:\n    mode: offline\n    temprature: 1\n")
    with pytest.raises(ModelsConfigError, match=r"models\.a\.temprature"):
        ModelsConfig.load(p)


def test_mode_requirements_are_explained(tmp_path):
    with pytest.raises(ModelsConfigError, match="needs 'url'"):
        ModelsConfig.load(write(tmp_path, "models:\n  a:\n    mode: endpoint\n"))
    with pytest.raises(ModelsConfigError, match="needs 'port'"):
        ModelsConfig.load(write(tmp_path, "models:\n  a:\n    mode: serve\n"))
    with pytest.raises(ModelsConfigError, match="mode"):
        ModelsConfig.load(write(tmp_path, "models:\n  a:\n    mode: cloud\n"))


def test_default_must_exist_and_ports_unique(tmp_path):
    with pytest.raises(ModelsConfigError, match="'default' is 'b'"):
        ModelsConfig.load(write(tmp_path, "default: b\nmodels:\n  a: {}\n"))
    with pytest.raises(ModelsConfigError, match="ports used twice"):
        ModelsConfig.load(write(tmp_path, "models:\n  a: {mode: serve, port: 9000}\n  b: {mode: serve, port: 9000}\n"))


def test_unknown_model_name_lists_known(tmp_path):
    cfg = ModelsConfig.load(write(tmp_path, "models:\n  a: {}\n  b: {}\n"))
    assert cfg.default_name == "a"
    with pytest.raises(ModelsConfigError, match=r"unknown model 'c'.*\['a', 'b'\]"):
        cfg.entry("c")


def test_examples_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("models.cpu.yaml", "models.gpu.yaml"):
        cfg = ModelsConfig.load(root / name)
        assert cfg.models


def test_server_command_uses_module_entry_and_settings(tmp_path, monkeypatch):
    cfg = ModelsConfig.from_dict(
        {
            "models": {
                "m": {
                    "mode": "serve",
                    "model": str(tmp_path),
                    "port": 8123,
                    "max_model_len": 1024,
                    "dtype": "float32",
                    "extra_args": ["--enforce-eager"],
                }
            }
        }
    )
    cmd = server_command("m", cfg.models["m"], python="py")
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for part in (
        "--port 8123",
        "--max-model-len 1024",
        "--dtype float32",
        "--served-model-name m",
        f"--model {tmp_path}",
    ):
        assert part in joined
    assert cmd[-1] == "--enforce-eager"


def test_usage_counters_split_fresh_cached_and_failed():
    results = [
        ChatResult(["a", "b"], ["stop", "length"], 10, 7, latency_s=0.5),
        ChatResult(["c"], ["stop"], 4, 3, cached=True, cached_samples=1),
        ChatResult.failure("boom"),
    ]
    c = usage_counters(results, "m")
    assert c == {
        "llm.m.requests": 3,
        "llm.m.samples": 3,
        "llm.m.failures": 1,
        "llm.m.cache_hits": 1,
        "llm.m.prompt_tokens": 10,
        "llm.m.completion_tokens": 7,
        "llm.m.latency_s": 0.5,
    }


def test_sampling_params_validate():
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)
    assert SamplingParams(stop=["x"]).stop == ("x",)
