"""Prompt and wording templates for the kg subsystem, read from versioned YAML files.

Files live in `prompts/kg/` at the repository root (or `$SYNTH_KG_PROMPTS`). Each has a
`name`, a `version` and either `template` (one string) or `templates` (a pool or a
mapping of pools). Versions go into sample metadata so a data team can tell which
wording produced which samples.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

PROMPT_FILES = ("system_prompts", "question_grammar", "answers", "reflection", "irrelevance", "llm_question", "hermes_system",
                "llm_back_translate")


def prompts_dir() -> Path:
    env = os.environ.get("SYNTH_KG_PROMPTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "prompts" / "kg"


@functools.lru_cache(maxsize=None)
def load_prompt(name: str, directory: str | None = None) -> dict:
    path = Path(directory) if directory else prompts_dir()
    with (path / f"{name}.yaml").open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    for key in ("name", "version"):
        if key not in data:
            raise ValueError(f"{path / name}.yaml: missing '{key}' header")
    if "template" not in data and "templates" not in data:
        raise ValueError(f"{path / name}.yaml: needs 'template' or 'templates'")
    return data


def prompt_versions() -> dict[str, int]:
    return {name: load_prompt(name)["version"] for name in PROMPT_FILES}
