"""Opening an engine for a model name from MODELS.yaml."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import httpx

from synth.llm.cache import CachedEngine, RequestCache
from synth.llm.config import ModelsConfig
from synth.llm.served import ServedEngine
from synth.llm.types import EngineError

log = logging.getLogger(__name__)


class ManagedServedEngine(ServedEngine):
    """A served engine that started its own server (mode serve, nothing on the port)
    and stops it on close."""

    def __init__(self, name, entry, servers):
        super().__init__(name, entry)
        self.servers = servers if isinstance(servers, list) else [servers]

    @property
    def server(self):
        return self.servers[0] if self.servers else None

    def close(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/models", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def open_engine(
    model_name: str | None,
    models: ModelsConfig | None = None,
    *,
    cache: RequestCache | Path | str | None = None,
    log_dir: Path | str | None = None,
):
    """The engine for `model_name` (None = the default model) as its entry says:

    - offline: an in-process vLLM engine;
    - endpoint: a client for the running URL (checked to answer within startup_timeout_s);
    - serve: a client for the local server on `port`; when nothing answers there and
      `autostart` is on, the server is started here and stopped by `close()`.

    With `cache` (a RequestCache or a path), the engine is wrapped in CachedEngine.
    Callers must `close()` the engine (offline engines hold worker processes).
    """
    models = models or ModelsConfig.default_config()
    name, entry = models.entry(model_name)
    if entry.mode == "offline":
        from synth.llm.offline import OfflineEngine

        engine = OfflineEngine(name, entry)
    elif entry.mode == "endpoint":
        engine = ServedEngine(name, entry)
        engine.wait_ready()
    else:
        # Replicas already answering are used as they are; the others are started here.
        silent = [i for i, url in enumerate(entry.base_urls()) if not _answers(url)]
        if not silent or not entry.autostart:
            engine = ServedEngine(name, entry)
            engine.wait_ready()
        else:
            from synth.llm.serve import ServerProcess, stop_servers

            folder = log_dir or models.log_dir or tempfile.mkdtemp(prefix="synth-vllm-logs-")
            servers = []
            try:
                for i in silent:
                    servers.append(ServerProcess(name, entry, folder, i).start())
                for server in servers:
                    server.wait_ready()
            except BaseException:
                stop_servers(servers)
                raise
            engine = ManagedServedEngine(name, entry, servers)
    if cache is None:
        return engine
    if not isinstance(cache, RequestCache):
        cache = RequestCache(cache)
    return CachedEngine(engine, cache)


__all__ = ["EngineError", "ManagedServedEngine", "open_engine"]
