"""`synth serve` bound beyond loopback requires a key on the server side."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

import synth.llm.serve as serve
from synth.llm.config import ModelEntry
from synth.llm.serve import ServerProcess, is_loopback
from synth.llm.types import EngineError

KEY = "hostile-test-key-0123456789"


class _Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    seen = {}
    real_popen = subprocess.Popen

    def fake_popen(cmd, *args, **kwargs):
        if "vllm.entrypoints.openai.api_server" not in cmd:
            return real_popen(cmd, *args, **kwargs)  # e.g. platform's `uname -p`
        seen["cmd"], seen["env"] = cmd, kwargs.get("env", {})
        raise _Captured

    monkeypatch.setattr(serve.subprocess, "Popen", fake_popen)
    return seen


def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "gpu-box.internal"))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gpu-box.internal"])
def test_beyond_loopback_without_a_key_does_not_start(tmp_path, captured, host):
    entry = ModelEntry(mode="serve", model="/nonexistent", host=host, port=8001)
    with pytest.raises(EngineError, match=r"not a loopback address.*api_key_env"):
        ServerProcess("general", entry, tmp_path).start()
    assert not captured  # nothing was launched


def test_key_named_but_unset_does_not_start(tmp_path, captured, monkeypatch):
    monkeypatch.delenv("SYNTH_TEST_UNSET_KEY", raising=False)
    entry = ModelEntry(
        mode="serve", model="/nonexistent", host="0.0.0.0", port=8001, api_key_env="SYNTH_TEST_UNSET_KEY"
    )
    with pytest.raises(EngineError, match=r"SYNTH_TEST_UNSET_KEY.*not set"):
        ServerProcess("general", entry, tmp_path).start()
    assert not captured


def test_key_goes_to_the_server_environment_not_its_command_line(tmp_path, captured, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", KEY)
    entry = ModelEntry(mode="serve", model="/nonexistent", host="0.0.0.0", port=8001, api_key_env="SYNTH_TEST_KEY")
    with pytest.raises(_Captured):
        ServerProcess("general", entry, tmp_path).start()
    assert captured["env"]["VLLM_API_KEY"] == KEY
    assert KEY not in " ".join(captured["cmd"])
    assert KEY not in (tmp_path / "vllm-general.log").read_text()


def test_loopback_without_a_key_still_starts(tmp_path, captured):
    entry = ModelEntry(mode="serve", model="/nonexistent", port=8001)
    with pytest.raises(_Captured):
        ServerProcess("general", entry, tmp_path).start()
    assert captured["cmd"][captured["cmd"].index("--host") + 1] == "127.0.0.1"


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_real_server_beyond_loopback_refuses_requests_without_the_key(tmp_path, monkeypatch):
    pytest.importorskip("vllm")
    from synth.llm.default_model import prepare_default_model

    prepare_default_model()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SYNTH_TEST_KEY", KEY)
    entry = ModelEntry(
        mode="serve",
        host="0.0.0.0",
        port=port,
        api_key_env="SYNTH_TEST_KEY",
        max_model_len=512,
        kv_cache_gib=0.5,
        enforce_eager=True,
        startup_timeout_s=600,
    )
    server = ServerProcess("smol", entry, tmp_path).start()
    try:
        server.wait_ready()
        with open(f"/proc/{server.proc.pid}/cmdline", "rb") as fh:
            assert KEY.encode() not in fh.read()
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, timeout=30).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "smol"
    finally:
        server.stop()
