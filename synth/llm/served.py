"""Client for any OpenAI-compatible `/v1/chat/completions` endpoint, or several
replicas of one model.

Keeps up to `max_in_flight` requests open per replica (a vLLM server batches
whatever is in flight) and sends each request to the replica with the fewest in
flight. A replica that refuses connections is taken out: its requests are retried
on the others, and it is probed (GET /models every `probe_interval_s`) and taken
back once it answers; one that times out is taken out the same way. 429, 5xx and
timeouts are retried with exponential backoff and jitter (on another replica when
there is one). When every replica has been
unreachable for `down_timeout_s` the waiting requests fail with a clear error, so a
dead fleet costs a bounded wait, never a hang or a loss. Each request ends with
exactly one result.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass

import httpx

from synth.llm.config import ModelEntry, api_key, model_identity
from synth.llm.types import ChatRequest, ChatResult, EngineError, Progress, replicate_greedy

log = logging.getLogger(__name__)

# Errors that mean "the server is not there (now)": the replica is taken out.
_CONNECTION_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False, stalled: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection
        self.stalled = stalled


@dataclass
class Replica:
    """One server of a model, and what the client knows about it."""

    index: int
    url: str
    up: bool = True
    in_flight: int = 0
    last_error: str = ""
    next_probe: float = 0.0


class ServedEngine:
    def __init__(self, name: str, entry: ModelEntry, base_url: str | None = None):
        self.name = name
        self.entry = entry
        urls = [base_url.rstrip("/")] if base_url else entry.base_urls()
        self.replicas = [Replica(i, u) for i, u in enumerate(urls)]
        self.base_url = urls[0]
        self.model_id = model_identity(name, entry)
        # The name the server knows the model by; `synth serve` registers the entry name.
        self.served_name = entry.served_model_name or name
        # When the last replica was taken out (None while one is up).
        self._down_since: float | None = None
        self._rng = random.Random()
        self._cond: asyncio.Condition | None = None
        key = api_key(entry)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def replicated(self) -> bool:
        return len(self.replicas) > 1

    # -- readiness ---------------------------------------------------------------
    def wait_ready(self, timeout_s: float | None = None, poll_s: float = 1.0, proc_alive=None) -> None:
        """Block until GET /models answers 200 on some replica, or raise EngineError
        naming the URLs. Replicas that did not answer start out taken out (probed later)."""
        timeout_s = self.entry.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        last = {r.index: "no answer" for r in self.replicas}
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=min(5.0, self.entry.connect_timeout_s))) as client:
            while True:
                answered = []
                for r in self.replicas:
                    try:
                        resp = client.get(f"{r.url}/models", headers=self._headers)
                        if resp.status_code == 200:
                            answered.append(r)
                            continue
                        last[r.index] = f"HTTP {resp.status_code}"
                    except httpx.HTTPError as e:
                        last[r.index] = f"{type(e).__name__}: {e}"
                if answered:
                    for r in self.replicas:
                        r.up = r in answered
                        if not r.up:
                            r.last_error = last[r.index]
                            log.warning(
                                "model %s: replica %d at %s does not answer (%s); taken out until it does",
                                self.name,
                                r.index,
                                r.url,
                                last[r.index],
                            )
                    self._down_since = None
                    return
                if proc_alive is not None and not proc_alive():
                    raise EngineError(
                        f"model {self.name!r}: server process exited before {self.base_url} answered ({last[0]})"
                    )
                if time.monotonic() >= deadline:
                    if not self.replicated:
                        raise EngineError(
                            f"model {self.name!r}: endpoint {self.base_url} did not answer within {timeout_s:.0f}s (last: {last[0]})"
                        )
                    where = "; ".join(f"{r.url} ({last[r.index]})" for r in self.replicas)
                    raise EngineError(
                        f"model {self.name!r}: none of its {len(self.replicas)} replicas answered within {timeout_s:.0f}s: {where}"
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
        total = e.max_in_flight * len(self.replicas)
        limits = httpx.Limits(max_connections=total, max_keepalive_connections=total)
        timeout = httpx.Timeout(e.request_timeout_s, connect=e.connect_timeout_s)
        self._cond = asyncio.Condition()
        for r in self.replicas:
            r.in_flight = 0
        results: list[ChatResult | None] = [None] * len(requests)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=self._headers) as client:

            async def run(i: int, req: ChatRequest) -> None:
                try:
                    res = await self._one(client, req)
                except Exception as ex:  # noqa: BLE001 - never let one request take the batch down
                    res = ChatResult.failure(f"{type(ex).__name__}: {ex}")
                results[i] = res
                if progress is not None:
                    progress(i, res)

            await self._probe_due(client)  # replicas out since the last batch may be back
            prober = asyncio.create_task(self._probe_loop(client))
            try:
                await asyncio.gather(*(run(i, r) for i, r in enumerate(requests)))
            finally:
                prober.cancel()
                try:
                    await prober
                except asyncio.CancelledError:
                    pass
        return results  # type: ignore[return-value]

    # -- replicas ------------------------------------------------------------------
    async def _acquire(self, avoid: int | None) -> Replica | None:
        """The up replica with the fewest in flight (not `avoid` when another is up),
        waiting for a free slot; None once every replica has been down for down_timeout_s."""
        assert self._cond is not None
        cap = self.entry.max_in_flight
        async with self._cond:
            while True:
                up = [r for r in self.replicas if r.up]
                if up:
                    choices = [r for r in up if r.index != avoid] or up
                    free = [r for r in choices if r.in_flight < cap]
                    if free:
                        best = min(free, key=lambda r: (r.in_flight, r.index))
                        best.in_flight += 1
                        return best
                    await self._cond.wait()
                    continue
                if self._down_since is None:
                    self._down_since = time.monotonic()
                left = self.entry.down_timeout_s - (time.monotonic() - self._down_since)
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout=min(left, 0.5))
                except asyncio.TimeoutError:
                    pass

    async def _release(self, replica: Replica) -> None:
        assert self._cond is not None
        async with self._cond:
            replica.in_flight -= 1
            self._cond.notify_all()

    async def _take_out(self, replica: Replica, error: str) -> None:
        assert self._cond is not None
        async with self._cond:
            replica.last_error = error
            if replica.up:
                replica.up = False
                replica.next_probe = time.monotonic() + min(self.entry.probe_interval_s, 0.5)
                if not any(r.up for r in self.replicas):
                    self._down_since = time.monotonic()
                log.warning("model %s: replica %d at %s taken out: %s", self.name, replica.index, replica.url, error)
            self._cond.notify_all()

    async def _probe_loop(self, client: httpx.AsyncClient) -> None:
        """Ask replicas that were taken out whether they answer again."""
        while True:
            await self._probe_due(client)
            await asyncio.sleep(min(0.25, self.entry.probe_interval_s))

    async def _probe_due(self, client: httpx.AsyncClient) -> None:
        e = self.entry
        now = time.monotonic()
        for r in self.replicas:
            if r.up or r.next_probe > now:
                continue
            r.next_probe = now + e.probe_interval_s
            try:
                resp = await client.get(
                    f"{r.url}/models", timeout=httpx.Timeout(5.0, connect=min(5.0, e.connect_timeout_s))
                )
                ok = resp.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                assert self._cond is not None
                async with self._cond:
                    r.up = True
                    self._down_since = None
                    self._cond.notify_all()
                log.warning("model %s: replica %d at %s answers again; taken back", self.name, r.index, r.url)

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
        started = time.perf_counter()
        attempt = 0  # retries of non-connection errors (429/5xx/timeouts)
        backoff_step = 0
        failed_on: list[int] = []  # replicas where an attempt of this request failed
        avoid: int | None = None

        def done(result: ChatResult, replica: Replica | None) -> ChatResult:
            if self.replicated:
                result.replica = replica.index if replica is not None else None
                result.replica_failures = failed_on
            return result

        while True:
            replica = await self._acquire(avoid)
            if replica is None:
                down_for = time.monotonic() - (self._down_since or time.monotonic())
                where = "; ".join(f"{r.url}: {r.last_error}" for r in self.replicas)
                what = (
                    f"endpoint {self.base_url}"
                    if not self.replicated
                    else f"all {len(self.replicas)} replicas of model {self.name!r}"
                )
                return done(
                    ChatResult.failure(
                        f"{what} unreachable for {down_for:.0f}s (down_timeout_s={e.down_timeout_s:g}): {where}",
                        time.perf_counter() - started,
                    ),
                    None,
                )
            try:
                response = await client.post(f"{replica.url}/chat/completions", json=body)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}", _retry_after(response))
                if response.status_code != 200:
                    # A request the server rejects will be rejected again: fail it now.
                    return done(
                        ChatResult.failure(
                            f"HTTP {response.status_code} from {replica.url}: {response.text[:500]}",
                            time.perf_counter() - started,
                        ),
                        replica,
                    )
                result = replicate_greedy(_parse(response.json(), time.perf_counter() - started), req.sampling)
                return done(result, replica)
            except _CONNECTION_ERRORS as ex:
                err = _Retryable(f"{type(ex).__name__}: {ex}", connection=True)
            except httpx.TimeoutException as ex:
                err = _Retryable(f"timeout after {e.request_timeout_s:.0f}s ({type(ex).__name__})", stalled=True)
            except _Retryable as ex:
                err = ex
            except ValueError as ex:  # body not JSON: a broken proxy or server
                err = _Retryable(f"bad response body: {ex}")
            finally:
                await self._release(replica)

            failed_on.append(replica.index)
            avoid = replica.index
            if err.connection:
                # The replica is gone (killed, restarting): take it out and retry at
                # once elsewhere, or wait for a probe to find it back (up to down_timeout_s).
                await self._take_out(replica, str(err))
                continue
            if err.stalled:
                # A replica that stops answering is taken out too; the probe takes it
                # back as soon as it answers GET /models (a merely busy server does).
                await self._take_out(replica, str(err))
            attempt += 1
            if attempt > e.max_retries:
                return done(
                    ChatResult.failure(
                        f"gave up after {attempt} attempts at {replica.url}: {err}", time.perf_counter() - started
                    ),
                    None,
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
