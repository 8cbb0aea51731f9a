"""Prompt templates: versioned files under prompts/, never strings in code.

A template file is YAML:

    name: instruct/generate        # how stages refer to it
    version: 3                     # bump on any change; recorded in every output row
    description: what it is for
    variables: [passage, kind]     # what render() must be given
    messages:                      # chat turns; content is a Jinja2 template
      - role: system
        content: ...
      - role: user
        content: ... {{ passage }} ...
    data: {...}                    # optional structured data the stage reads

Rendering is strict: a missing variable is an error, not an empty string.

Instead of `messages`, a file may hold wording: `template` (one `str.format`
string) or `templates` (a pool of alternatives, or a mapping of pools), which a
stage fills and draws from itself (the kg conversations do).

The files ship inside the package (`synth/prompt_files`, copied from the repo's
top-level `prompts/` at build time), so an installed wheel has them; in the repo
the top-level folder is read directly.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROMPTS_ENV = "SYNTH_PROMPTS"


class PromptError(ValueError):
    pass


class _PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(ge=1)
    description: str = ""
    variables: list[str] = Field(default_factory=list)
    messages: list[dict[str, str]] = Field(default_factory=list)
    template: str | None = None
    templates: list | dict | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_body(self):
        bodies = [k for k in ("messages", "template", "templates") if getattr(self, k)]
        if len(bodies) != 1:
            raise ValueError(f"needs exactly one of messages, template, templates (has {bodies or 'none'})")
        return self


_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    variables: tuple[str, ...]
    messages: tuple[tuple[str, str], ...]
    data: dict = field(default_factory=dict, hash=False, compare=False)
    path: str = ""
    # wording files: one format string, or a pool (list or mapping of pools)
    template: str | None = None
    templates: Any = field(default=None, hash=False, compare=False)

    @property
    def ref(self) -> str:
        """`name@version`: what output rows record as provenance."""
        return f"{self.name}@{self.version}"

    def render(self, **values: Any) -> list[dict]:
        if not self.messages:
            raise PromptError(f"prompt {self.ref} ({self.path}) holds wording (template/templates), not chat messages")
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise PromptError(f"prompt {self.ref} ({self.path}) needs {', '.join(missing)}")
        try:
            return [
                {"role": role, "content": _env.from_string(content).render(**values).strip()}
                for role, content in self.messages
            ]
        except jinja2.TemplateError as exc:
            raise PromptError(f"prompt {self.ref} ({self.path}): {exc}") from exc


def prompts_dir() -> Path:
    """$SYNTH_PROMPTS, else prompts/ beside the package (the repo layout), else the
    copy shipped inside the package (an installed wheel)."""
    env = os.environ.get(PROMPTS_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1] / "prompts"
    return repo if repo.is_dir() else Path(__file__).resolve().parent / "prompt_files"


@functools.cache
def load_prompt(name: str, directory: str | None = None) -> Prompt:
    base = Path(directory) if directory else prompts_dir()
    path = base / f"{name}.yaml"
    if not path.is_file():
        raise PromptError(f"prompt template '{name}' not found at {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = _PromptFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise PromptError(f"{path}: invalid prompt template: {exc}") from None
    if spec.name != name:
        raise PromptError(f"{path}: declares name '{spec.name}' but is loaded as '{name}'")
    for turn in spec.messages:
        if set(turn) != {"role", "content"}:
            raise PromptError(f"{path}: each message needs exactly role and content")
    messages = tuple((m["role"], m["content"]) for m in spec.messages)
    return Prompt(
        spec.name, spec.version, tuple(spec.variables), messages, spec.data, str(path), spec.template, spec.templates
    )
