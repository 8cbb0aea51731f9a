"""Commands of the LLM layer, wired into `synth` by synth/cli.py:

- `synth models prepare-default` / `synth models list` / `synth models check`
  (the `models_app` Typer group);
- `synth serve MODELS.yaml` (the `serve` function).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from synth.core.errors import fail as _fail

models_app = typer.Typer(help="The models LLM stages use: the embedded default, MODELS files.", no_args_is_help=True)


@models_app.command("prepare-default")
def prepare_default(
    cache_dir: Path | None = typer.Option(
        None, help="Folder for models; default $SYNTH_CACHE/models or ~/.cache/synth/models."
    ),
) -> None:
    """Convert the embedded SmolLM2-135M-Instruct GGUF into an HF folder vLLM loads (once, offline)."""
    from synth.llm.default_model import DefaultModelError, default_model_dir, is_prepared, prepare_default_model

    already = is_prepared(default_model_dir(cache_dir))
    try:
        path = prepare_default_model(cache_dir)
    except DefaultModelError as e:
        _fail(str(e))
    typer.echo(f"{'already prepared' if already else 'prepared'}: {path}")


@models_app.command("list")
def list_models(
    models_yaml: Path | None = typer.Argument(None, help="MODELS file; default: the embedded model, offline."),
) -> None:
    """Show the models of a MODELS file and how each is reached."""
    from synth.llm.config import ModelsConfig, ModelsConfigError

    try:
        cfg = ModelsConfig.load(models_yaml) if models_yaml else ModelsConfig.default_config()
    except ModelsConfigError as e:
        _fail(str(e), 2)
    for name, e in cfg.models.items():
        where = ", ".join(e.base_urls()) if e.mode != "offline" else "in-process"
        mark = " (default)" if name == cfg.default_name else ""
        typer.echo(f"{name}{mark}: mode={e.mode} model={e.model} at {where}")


@models_app.command("check")
def check(
    models_yaml: Path | None = typer.Argument(None, help="MODELS file; default: the embedded model, offline."),
    model: str | None = typer.Option(None, help="Model name; default: the file's default."),
    message: str | None = typer.Option(None, help="The user message to send."),
    prompt_file: Path | None = typer.Option(None, help="A text file whose content is sent as the user message."),
    max_tokens: int = typer.Option(32, min=1),
) -> None:
    """Open a model as its entry says, send one greedy request, print the answer and usage."""
    from synth.llm.config import ModelsConfig, ModelsConfigError
    from synth.llm.engines import open_engine
    from synth.llm.types import ChatRequest, EngineError, SamplingParams
    from synth.llm.usage import usage_counters

    try:
        cfg = ModelsConfig.load(models_yaml) if models_yaml else ModelsConfig.default_config()
    except ModelsConfigError as e:
        _fail(str(e), 2)
    if (message is None) == (prompt_file is None):
        _fail("give exactly one of --message or --prompt-file", 2)
    content = prompt_file.read_text() if prompt_file else message
    try:
        engine = open_engine(model, cfg)
    except EngineError as e:
        _fail(str(e))
    try:
        (res,) = engine.generate(
            [
                ChatRequest(
                    [{"role": "user", "content": content}], SamplingParams(temperature=0.0, max_tokens=max_tokens)
                )
            ]
        )
    finally:
        engine.close()
    if res.error:
        _fail(res.error)
    typer.echo(res.text)
    typer.echo(json.dumps(usage_counters([res], engine.name)), err=True)


def serve(
    models_yaml: Path = typer.Argument(..., help="MODELS file; every entry with mode: serve gets a vLLM server."),
    log_dir: Path | None = typer.Option(
        None, help="Folder for server logs; default: the file's log_dir or ./vllm-logs."
    ),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Start only these models (repeatable)."),
    timeout: float | None = typer.Option(None, help="Seconds to wait for each server; default: its startup_timeout_s."),
) -> None:
    """Start one vLLM OpenAI server per model, wait until each answers, stop all on Ctrl-C."""
    from synth.llm.config import ModelsConfig, ModelsConfigError
    from synth.llm.serve import serve_forever
    from synth.llm.types import EngineError

    try:
        cfg = ModelsConfig.load(models_yaml)
    except ModelsConfigError as e:
        _fail(str(e), 2)
    if timeout is not None:
        for entry in cfg.models.values():
            entry.startup_timeout_s = timeout
    folder = log_dir or (Path(cfg.log_dir) if cfg.log_dir else Path("vllm-logs"))
    try:
        code = serve_forever(cfg, folder, names=model or None, echo=lambda m: typer.echo(m, err=True))
    except EngineError as e:
        _fail(str(e))
    raise typer.Exit(code)


# Stand-alone entry for testing without synth/cli.py: `python -m synth.llm.cli ...`.
_standalone = typer.Typer(no_args_is_help=True)
_standalone.add_typer(models_app, name="models")
_standalone.command("serve")(serve)

if __name__ == "__main__":
    sys.exit(_standalone())
