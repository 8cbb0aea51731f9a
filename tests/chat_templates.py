"""Real chat templates for tests, read from the `trl` package (which ships Qwen2.5,
Qwen3, Llama-3.1 and other templates), so no hub download is needed."""

import importlib.util
from pathlib import Path

import pytest


def trl_template(name: str) -> str:
    spec = importlib.util.find_spec("trl")
    if spec is None:
        pytest.skip("trl (which ships real chat templates) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "chat_templates" / name
    if not path.exists():
        pytest.skip(f"trl has no {name}")
    return path.read_text()
