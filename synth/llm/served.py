"""Client for any OpenAI-compatible `/v1/chat/completions` endpoint.

Keeps up to `max_in_flight` requests open (a vLLM server batches whatever is in
flight), retries connection errors, 429 and 5xx with exponential backoff and jitter,
and fails a request with a clear error once its endpoint has been unreachable for
`down_timeout_s`, so a dead server costs a bounded wait, never a hang or a loss.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time

import httpx

from synth.llm.config import ModelEntry, api_key, model_identity
from synth.llm.types import ChatRequest, ChatResult, EngineError, Progress, replicate_greedy

log = logging.getLogger(__name__)

# Errors that mean "the server is not there (now)": worth waiting out a restart.
_CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection


class ServedEngine:
    def __init__(self, name: str, entry: ModelEntry, base_url: str | None = None):
        self.name = name
        self.entry = entry
        self.base_url = (base_url or entry.base_url()).rstrip("/")
        self.model_id = model_identity(name, entry)
        # The name the server knows the model by; `synth serve` registers the entry name.
        self.served_name = entry.served_model_name or name
        self._down_since: float | None = None
        self._rng = random.Random()
        key = api_key(entry)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    # -- readiness ---------------------------------------------------------------
    def wait_ready(self, timeout_s: float | None = None, poll_s: float = 1.0, proc_alive=None) -> None:
        """Block until GET /models answers 200, or raise EngineError naming the URL."""
        timeout_s = self.entry.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=min(5.0, self.entry.connect_timeout_s))) as client:
            while True:
                try:
                    r = client.get(f"{self.base_url}/models", headers=self._headers)
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last = f"{type(e).__name__}: {e}"
                if proc_alive is not None and not proc_alive():
                    raise EngineError(f"model {self.name!r}: server process exited before {self.base_url} answered ({last})")
                if time.monotonic() >= deadline:
                    raise EngineError(
                        f"model {self.name!r}: endpoint {self.base_url} did not answer within {timeout_s:.0f}s (last: {last})"
                    )
                time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    # -- generation --------------------------------------------------------------
    def generate(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[ChatResult]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, progress))
        # Called from inside an event loop (e.g. a notebook): run ours in a thread.
        box: list = []
        t = threading.Thread(target=lambda: box.append(asyncio.run(self.agenerate(requests, progress))))
        t.start()
        t.join()
        return box[0]

    async def agenerate(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[ChatResult]:
        e = self.entry
        limits = httpx.Limits(max_connections=e.max_in_flight, max_keepalive_connections=e.max_in_flight)
        timeout = httpx.Timeout(e.request_timeout_s, connect=e.connect_timeout_s)
        sem = asyncio.Semaphore(e.max_in_flight)
        results: list[ChatResult | None] = [None] * len(requests)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=self._headers) as client:

            async def run(i: int, req: ChatRequest) -> None:
                async with sem:
                    try:
                        res = await self._one(client, req)
                    except Exception as ex:  # never let one request take the batch down
                        res = ChatResult.failure(f"{type(ex).__name__}: {ex}")
                results[i] = res
                if progress is not None:
                    progress(i, res)

            await asyncio.gather(*(run(i, r) for i, r in enumerate(requests)))
        return results  # type: ignore[return-value]

    def _body(self, req: ChatRequest) -> dict:
        sp = req.sampling
        body = {
            "model": self.served_name,
            "messages": req.messages,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "max_tokens": sp.max_tokens,
            "n": sp.engine_n,
        }
        if sp.stop:
            body["stop"] = list(sp.stop)
        if sp.seed is not None and self.entry.per_request_seed:
            body["seed"] = sp.seed
        if sp.json_schema is not None and self.entry.structured_output:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": sp.json_schema},
            }
        return body

    async def _one(self, client: httpx.AsyncClient, req: ChatRequest) -> ChatResult:
        e = self.entry
        body = self._body(req)
        url = f"{self.base_url}/chat/completions"
        started = time.perf_counter()
        attempt = 0  # retries of non-connection errors (429/5xx/timeouts)
        backoff_step = 0
        while True:
            try:
                response = await client.post(url, json=body)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}", _retry_after(response))
                if response.status_code != 200:
                    # A request the server rejects will be rejected again: fail it now.
                    return ChatResult.failure(
                        f"HTTP {response.status_code} from {self.base_url}: {response.text[:500]}",
                        time.perf_counter() - started,
                    )
                self._down_since = None
                return replicate_greedy(_parse(response.json(), time.perf_counter() - started), req.sampling)
            except _CONNECTION_ERRORS as ex:
                err = _Retryable(f"{type(ex).__name__}: {ex}", connection=True)
            except httpx.TimeoutException as ex:
                err = _Retryable(f"timeout after {e.request_timeout_s:.0f}s ({type(ex).__name__})")
            except _Retryable as ex:
                err = ex
            except ValueError as ex:  # body not JSON: a broken proxy or server
                err = _Retryable(f"bad response body: {ex}")

            now = time.monotonic()
            if err.connection:
                # Connection failures are waited out up to down_timeout_s (a server
                # restart takes about a minute on CPU), counted from the first failure
                # any request saw, so a dead endpoint fails everything promptly.
                if self._down_since is None:
                    self._down_since = now
                down_for = now - self._down_since
                if down_for >= e.down_timeout_s:
                    return ChatResult.failure(
                        f"endpoint {self.base_url} unreachable for {down_for:.0f}s "
                        f"(down_timeout_s={e.down_timeout_s:g}): {err}",
                        time.perf_counter() - started,
                    )
                delay = self._backoff(backoff_step)
                delay = min(delay, max(0.05, e.down_timeout_s - down_for))
            else:
                attempt += 1
                if attempt > e.max_retries:
                    return ChatResult.failure(
                        f"gave up after {attempt} attempts at {self.base_url}: {err}", time.perf_counter() - started
                    )
                delay = err.retry_after if err.retry_after is not None else self._backoff(backoff_step)
            backoff_step += 1
            log.debug("model %s: retry in %.2fs after %s", self.name, delay, err)
            await asyncio.sleep(delay)

    def _backoff(self, step: int) -> float:
        """Exponential backoff with equal jitter: spreads retries of many requests."""
        cap = min(self.entry.backoff_max_s, self.entry.backoff_base_s * (2**step))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def close(self) -> None:
        pass


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _parse(payload: dict, latency: float) -> ChatResult:
    choices = sorted(payload.get("choices") or [], key=lambda c: c.get("index", 0))
    if not choices:
        return ChatResult.failure(f"response without choices: {str(payload)[:300]}", latency)
    usage = payload.get("usage") or {}
    return ChatResult(
        texts=[(c.get("message") or {}).get("content") or "" for c in choices],
        finish_reasons=[str(c.get("finish_reason")) for c in choices],
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=latency,
    )
