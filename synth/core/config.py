"""Pipeline files: YAML, validated by a schema, checked before anything runs.

Every error names the file, the line, the field and what is allowed, because a
typo found after an hour of LLM calls is the most expensive kind.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synth.core.errors import ConfigError
from synth.core.registry import StageImportError, UnknownStageType, all_stage_types, stage_class
from synth.core.stage import PipelineContext, SourceStage, Stage


class PipelineSettings(BaseModel):
    """Settings every stage of a pipeline shares; an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    models: str | None = Field(None, description="MODELS file for LLM stages, relative to the pipeline file")
    llm_cache: str | None = Field(None, description="LLM request cache file (default RUN/llm-cache.sqlite)")


class PipelineHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Pipeline name, shown in progress and audit.")
    description: str = ""
    seed: int = 0
    inputs: list[str] = Field(default_factory=list, description="Default input globs, relative to this file.")
    reject_sample_per_reason: int = Field(
        20,
        ge=0,
        le=10_000,
        description="Rejected records kept as examples per drop reason: per shard while a run works; "
        "per stage once a completed fused run merges its files (every reason keeps at least one).",
    )
    settings: PipelineSettings = Field(
        default_factory=PipelineSettings, description="Shared settings, e.g. models: FILE."
    )
    stages: list[dict[str, Any]]


@dataclass
class StageEntry:
    index: int
    label: str  # "NN-name": folder name in the run directory
    type: str
    options: dict[str, Any]
    stage: Stage
    # the options as the file wrote them (${VAR} not expanded): what goes to disk
    written_options: dict[str, Any] | None = None
    # `materialize: true`: write this stage's shards even inside a fused group
    # (a debugging or reuse point; not part of the fingerprint: output is the same)
    materialize: bool = False


@dataclass
class Pipeline:
    name: str
    seed: int
    path: Path | None
    inputs: list[str]
    reject_sample_per_reason: int
    settings: dict[str, Any]
    stages: list[StageEntry] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def bind_run_dir(self, run_dir: Path) -> None:
        """Tell every stage where the run lives (caches, logs); all share one context."""
        for entry in self.stages:
            entry.stage.pipeline.run_dir = run_dir

    def fingerprints(self, inputs: list[str]) -> list[str]:
        """A chained hash per stage: its options and everything upstream of it."""
        prints = []
        upstream = json.dumps({"inputs": inputs, "seed": self.seed}, sort_keys=True)
        for entry in self.stages:
            fact = {"type": entry.type, "options": entry.options}
            state = entry.stage.external_state()
            if state:  # only when a stage has one, so other stages keep their prints
                fact["external_state"] = state
            blob = json.dumps(fact, sort_keys=True, default=str)
            upstream = hashlib.sha256((upstream + blob).encode()).hexdigest()
            prints.append(upstream)
        return prints


def _line_of(node: yaml.Node | None, path: tuple) -> int | None:
    """The line of `path` inside a composed YAML node, for error messages."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                match = next((k for k, _ in node.value if k.value == key), None)
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _explain(model: type[BaseModel], err: dict) -> str:
    loc = err["loc"]
    if model is PipelineHeader and loc and loc[0] == "settings" and len(loc) > 1:
        model = PipelineSettings  # settings' own fields, not the header's
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(model.model_fields))
        return f"unknown field '{loc[-1]}'; allowed fields: {allowed}"
    if err["type"] == "missing":
        return f"field '{loc[-1]}' is required"
    field_name = ".".join(str(p) for p in loc)
    info = model.model_fields.get(str(loc[1 if model is PipelineSettings else 0])) if loc else None
    hint = f" ({info.description})" if info is not None and info.description else ""
    return f"field '{field_name}': {err['msg']}{hint}"


def default_data_dir() -> Path:
    """Where the sample data lives: $SYNTH_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("SYNTH_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


_VAR = re.compile(r"\$\{(env:)?([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys whose values are paths or endpoints: `${VAR}` expands there. Anywhere else
# only an explicit `${env:VAR}` does, so a `$` in a regex or a prompt stands.
_PATH_KEY = re.compile(
    r"(^|_)(path|paths|file|files|dir|dirs|directory|url|urls|endpoint|host|address|input|inputs|benchmark|benchmarks|models|graph)$"
)


class _UnsetVariable(ValueError):
    pass


def _expand(value: str, any_var: bool = True) -> str:
    """`${VAR}` (when `any_var`) and `${env:VAR}` from the environment; an unset one is an error."""

    def sub(m: re.Match) -> str:
        explicit, name = m.group(1), m.group(2)
        if not explicit and not any_var:
            return m.group(0)
        if name in os.environ:
            return os.environ[name]
        if name == "SYNTH_DATA":
            return str(default_data_dir())
        raise _UnsetVariable(f"names ${{{m.group(1) or ''}{name}}}, but the environment variable {name} is not set")

    return _VAR.sub(sub, value) if "${" in value else value


def _expand_tree(value: Any, any_var: bool, changed: list[bool]) -> Any:
    """${VAR} under path/endpoint keys (and below them), ${env:VAR} everywhere."""
    if isinstance(value, str):
        out = _expand(value, any_var)
        if out != value:
            changed[0] = True
        return out
    if isinstance(value, list):
        return [_expand_tree(v, any_var, changed) for v in value]
    if isinstance(value, dict):
        return {
            k: _expand_tree(v, any_var or bool(_PATH_KEY.search(str(k).lower())), changed) for k, v in value.items()
        }
    return value


def load_pipeline(path: str | Path, *, seed: int | None = None, overrides: dict[str, Any] | None = None) -> Pipeline:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return build_pipeline(raw, path=path, node=node, seed=seed, overrides=overrides)


def build_pipeline(
    raw: Any,
    *,
    path: Path | None = None,
    node: yaml.Node | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Pipeline:
    where = str(path) if path else "<pipeline>"

    def fail(loc: tuple, message: str) -> ConfigError:
        line = _line_of(node, loc)
        at = f":{line}" if line else ""
        dotted = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        return ConfigError(f"{where}{at}: {dotted or 'top level'}: {message}")

    if not isinstance(raw, dict):
        raise fail((), "a pipeline is a mapping with at least 'name' and 'stages'")
    # `raw` stays as written (it is what run.json records: no expanded secrets);
    # the expanded copy is what runs.
    written = raw
    expanded_keys: dict[tuple, bool] = {}
    expanded_raw: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "stages" and isinstance(value, list):
            stages = []
            for i, spec in enumerate(value):
                if not isinstance(spec, dict):
                    stages.append(spec)
                    continue
                out = {}
                for k, v in spec.items():
                    changed = [False]
                    try:
                        out[k] = _expand_tree(v, bool(_PATH_KEY.search(str(k).lower())), changed)
                    except _UnsetVariable as exc:
                        raise fail(("stages", i, k), str(exc)) from None
                    expanded_keys[(i, k)] = changed[0]
                stages.append(out)
            expanded_raw[key] = stages
        else:
            try:
                expanded_raw[key] = _expand_tree(value, key in ("inputs", "settings"), [False])
            except _UnsetVariable as exc:
                raise fail((key,), str(exc)) from None
    raw = expanded_raw
    try:
        header = PipelineHeader.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            "\n".join(str(fail(tuple(e["loc"]), _explain(PipelineHeader, e))) for e in exc.errors())
        ) from None
    if not header.stages:
        raise fail(("stages",), "a pipeline needs at least one stage")

    base = path.parent if path else Path.cwd()
    # ${VAR} in inputs (expanded above) lets a team point a shared pipeline at its own data.
    inputs = [str(base / p) if not Path(p).is_absolute() else p for p in header.inputs]
    settings = header.settings.model_dump(exclude_none=True)
    if overrides:
        settings.update(overrides)
    ctx = PipelineContext(seed=header.seed if seed is None else seed, config_path=path, settings=settings)

    entries: list[StageEntry] = []
    used_labels: set[str] = set()
    for i, spec in enumerate(header.stages):
        loc = ("stages", i)
        if not isinstance(spec, dict) or "type" not in spec:
            raise fail(loc, "each stage is a mapping with a 'type'")
        type_name = spec["type"]
        options = {k: v for k, v in spec.items() if k not in ("type", "name", "materialize")}
        materialize = spec.get("materialize", False)
        if not isinstance(materialize, bool):
            raise fail(loc + ("materialize",), f"'materialize' is true or false, not {materialize!r}")
        try:
            cls = stage_class(str(type_name))
        except StageImportError as exc:
            raise fail(loc + ("type",), str(exc)) from None
        except UnknownStageType as exc:
            known = all_stage_types()
            allowed = ", ".join(sorted(known))
            close = difflib.get_close_matches(str(type_name), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise fail(
                loc + ("type",), f"unknown stage type {exc}{hint}; allowed: {allowed}, or package.module:Class"
            ) from None
        try:
            opts = cls.Options.model_validate(options)
        except ValidationError as exc:
            messages = [
                str(fail(loc + tuple(e["loc"]), f"({type_name}) " + _explain(cls.Options, e))) for e in exc.errors()
            ]
            raise ConfigError("\n".join(messages)) from None
        # Plugin types ("pkg.mod:Class") name their folder after the stage's own type.
        name = str(spec.get("name") or (cls.type or cls.__name__ if ":" in str(type_name) else type_name))
        label = f"{i:02d}-{name}"
        if label in used_labels:
            raise fail(loc + ("name",), f"duplicate stage name '{name}'")
        used_labels.add(label)
        dumped = opts.model_dump(mode="json")
        written_spec = written["stages"][i] if isinstance(written.get("stages"), list) else {}
        as_written = {
            k: (written_spec[k] if expanded_keys.get((i, k)) and k in written_spec else v) for k, v in dumped.items()
        }
        entries.append(
            StageEntry(i, label, str(type_name), dumped, cls.configured(opts)(opts, ctx), as_written, materialize)
        )

    pipeline = Pipeline(
        name=header.name,
        seed=ctx.seed,
        path=path,
        inputs=inputs,
        reject_sample_per_reason=header.reject_sample_per_reason,
        settings=settings,
        stages=entries,
        raw=written,
    )
    _check_columns(pipeline, fail)
    return pipeline


def _check_columns(pipeline: Pipeline, fail) -> None:
    first = pipeline.stages[0].stage
    if not isinstance(first, SourceStage):
        raise fail(
            ("stages", 0, "type"),
            f"the first stage must create records (a source such as read or kg_walk), not '{pipeline.stages[0].type}'",
        )
    available: set[str] = set()
    for entry in pipeline.stages:
        if entry.index > 0 and isinstance(entry.stage, SourceStage):
            raise fail(("stages", entry.index, "type"), "only the first stage may be a source")
        missing = [c for c in entry.stage.input_columns() if c not in available]
        if missing:
            have = ", ".join(sorted(available)) or "nothing"
            raise fail(
                ("stages", entry.index),
                f"({entry.type}) reads column(s) {', '.join(missing)} that no earlier stage writes; available: {have}",
            )
        available -= set(entry.stage.removed_columns())
        available |= set(entry.stage.output_columns())
