"""A deterministic engine for unit tests of orchestration (no model, no network)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from synth.llm.types import ChatRequest, ChatResult, Progress

# A script maps a request (and its sample index) to the text to return; raising
# inside it turns into a failed result, as a real engine's request error would.
Script = Callable[[ChatRequest, int], str]


def echo_script(request: ChatRequest, index: int) -> str:
    last = request.messages[-1]["content"] if request.messages else ""
    return f"echo[{index}]: {last}"


class FakeEngine:
    """Returns `script(request, sample_index)` for every sample.

    Also counts calls and requests so tests can prove a cache hit never reached it.
    `fail_keys` makes requests with those keys fail (engine-side error).
    """

    def __init__(
        self,
        script: Script | dict[str, str] | None = None,
        name: str = "fake",
        model_id: str = "fake-model",
        fail_keys: set[str] | None = None,
    ):
        if isinstance(script, dict):
            table = dict(script)
            script = lambda req, i: table[req.messages[-1]["content"]]  # noqa: E731
        self.script: Script = script or echo_script
        self.name = name
        self.model_id = model_id
        self.fail_keys = set(fail_keys or ())
        self.calls = 0
        self.requests_seen: list[ChatRequest] = []
        self._lock = threading.Lock()

    def generate(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[ChatResult]:
        with self._lock:
            self.calls += 1
            self.requests_seen.extend(requests)
        results = []
        for i, req in enumerate(requests):
            result = self._one(req)
            results.append(result)
            if progress is not None:
                progress(i, result)
        return results

    def _one(self, req: ChatRequest) -> ChatResult:
        if req.key in self.fail_keys:
            return ChatResult.failure(f"fake failure for {req.key}")
        try:
            texts = [self.script(req, i) for i in range(req.sampling.n)]
        except Exception as e:  # noqa: BLE001 - the script stands in for the model: its errors are request errors
            return ChatResult.failure(f"{type(e).__name__}: {e}")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in req.messages)
        completion = sum(len(t.split()) for t in texts)
        reasons = ["length" if len(t.split()) >= req.sampling.max_tokens else "stop" for t in texts]
        return ChatResult(
            texts=texts, finish_reasons=reasons, prompt_tokens=prompt_tokens, completion_tokens=completion
        )

    def close(self) -> None:
        pass
