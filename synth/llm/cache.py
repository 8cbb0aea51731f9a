"""Persistent request cache: a finished request is never paid for twice.

Each *sample* (request x sample index) is stored under a content hash of (model,
messages, sampling params, sample index), so a request for n=4 that already has 2
samples cached only asks the engine for the 2 missing ones. SQLite in WAL mode lets
several worker processes read and write one file; results are written as the
engine reports them, so a stage killed half-way keeps what it finished.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from synth.llm.types import ChatRequest, ChatResult, Progress, request_hash

BUSY_SECONDS = 60.0


def _enter_wal(conn: sqlite3.Connection) -> None:
    # WAL is a property of the file: only its first opener has to switch it.
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")


def _when_unlocked(statement, seconds: float = BUSY_SECONDS):
    """Run `statement`, retrying while SQLite reports the file locked.

    SQLite's busy timeout does not cover everything: switching a new file to WAL, or
    opening it while another connection does, fails at once with "database is locked".
    Several workers opening one new cache file hit exactly that."""
    deadline = time.monotonic() + seconds
    pause = 0.005
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.5)


@dataclass(frozen=True)
class CachedSample:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class RequestCache:
    """A key -> sample store in one SQLite file, safe across threads and processes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        conn = self._conn()
        _when_unlocked(
            lambda: conn.execute(
                "CREATE TABLE IF NOT EXISTS samples ("
                " key TEXT PRIMARY KEY, model TEXT, value TEXT NOT NULL, created REAL)"
            )
        )

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread (sqlite3 objects must not cross threads).
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            _when_unlocked(lambda: _enter_wal(conn))
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedSample]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedSample] = {}
        conn = self._conn()
        # SQLite caps host parameters per statement; query in slices.
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, value in conn.execute(f"SELECT key, value FROM samples WHERE key IN ({marks})", part):
                found[key] = CachedSample(**json.loads(value))
        return found

    def put_many(self, items: Iterable[tuple[str, str, CachedSample]]) -> None:
        """Store (key, model_id, sample) rows; an existing key keeps its first value."""
        rows = [
            (key, model, json.dumps(sample.__dict__, ensure_ascii=False), time.time()) for key, model, sample in items
        ]
        if not rows:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO samples (key, model, value, created) VALUES (?,?,?,?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class CachedEngine:
    """Wraps any engine: cached samples are served from the cache, the rest are
    generated (only the missing samples of each request) and stored as they finish.
    Failed results are not cached, so a rerun retries them."""

    def __init__(self, engine, cache: RequestCache, flush_every: int = 32):
        self.engine = engine
        self.cache = cache
        self.name = engine.name
        self.model_id = getattr(engine, "model_id", engine.name)
        self._flush_every = flush_every

    def generate(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[ChatResult]:
        keys = [[request_hash(self.model_id, r.messages, r.sampling, i) for i in range(r.sampling.n)] for r in requests]
        found = self.cache.get_many(k for ks in keys for k in ks)
        results: list[ChatResult | None] = [None] * len(requests)
        todo: list[ChatRequest] = []
        todo_from: list[tuple[int, list[int]]] = []  # (request index, missing sample indices)
        for i, (req, ks) in enumerate(zip(requests, keys)):
            missing = [j for j, k in enumerate(ks) if k not in found]
            if not missing:
                results[i] = self._from_cache([found[k] for k in ks])
                self.cache.hits += len(ks)
                if progress is not None:
                    progress(i, results[i])
                continue
            self.cache.hits += len(ks) - len(missing)
            self.cache.misses += len(missing)
            # Ask only for the missing samples: they are exchangeable draws.
            todo.append(replace(req, sampling=replace(req.sampling, n=len(missing))))
            todo_from.append((i, missing))
        if not todo:
            return results  # type: ignore[return-value]

        pending: list[tuple[str, str, CachedSample]] = []
        lock = threading.Lock()

        def on_result(t: int, res: ChatResult) -> None:
            i, missing = todo_from[t]
            merged = self._merge(keys[i], found, missing, res)
            results[i] = merged
            if res.ok:
                per_prompt = res.prompt_tokens
                counts = _split_tokens(res.completion_tokens, res.texts)
                with lock:
                    for j, text, reason, ctoks in zip(missing, res.texts, res.finish_reasons, counts):
                        pending.append((keys[i][j], self.model_id, CachedSample(text, reason, per_prompt, ctoks)))
                    if len(pending) >= self._flush_every:
                        self.cache.put_many(pending)
                        pending.clear()
            if progress is not None:
                progress(i, merged)

        try:
            inner = self.engine.generate(todo, progress=on_result)
        finally:
            with lock:
                self.cache.put_many(pending)
                pending.clear()
        # Engines that do not report progress per request still return everything.
        for t, res in enumerate(inner):
            i, missing = todo_from[t]
            if results[i] is None:
                on_result(t, res)
                with lock:
                    self.cache.put_many(pending)
                    pending.clear()
        return results  # type: ignore[return-value]

    @staticmethod
    def _from_cache(samples: list[CachedSample]) -> ChatResult:
        return ChatResult(
            texts=[s.text for s in samples],
            finish_reasons=[s.finish_reason for s in samples],
            prompt_tokens=samples[0].prompt_tokens if samples else 0,
            completion_tokens=sum(s.completion_tokens for s in samples),
            cached=True,
            cached_samples=len(samples),
        )

    @staticmethod
    def _merge(keys: list[str], found: dict[str, CachedSample], missing: list[int], res: ChatResult) -> ChatResult:
        if not res.ok:
            return res
        fresh = dict(zip(missing, zip(res.texts, res.finish_reasons)))
        texts, reasons, cached_tokens = [], [], 0
        for j, key in enumerate(keys):
            if j in fresh:
                texts.append(fresh[j][0])
                reasons.append(fresh[j][1])
            else:
                texts.append(found[key].text)
                reasons.append(found[key].finish_reason)
                cached_tokens += found[key].completion_tokens
        n_cached = len(keys) - len(missing)
        return ChatResult(
            texts=texts,
            finish_reasons=reasons,
            prompt_tokens=res.prompt_tokens,
            # Only what this call generated counts as paid completion tokens.
            completion_tokens=res.completion_tokens,
            cached=False,
            latency_s=res.latency_s,
            cached_samples=n_cached,
            replica=res.replica,
            replica_failures=res.replica_failures,
        )

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close:
            close()


def _split_tokens(total: int, texts: list[str]) -> list[int]:
    """Share a request's completion tokens among its samples, proportionally to length
    (engines report per-sample counts only offline; the sum is what matters)."""
    if not texts:
        return []
    lengths = [max(1, len(t)) for t in texts]
    whole = sum(lengths)
    parts = [total * n // whole for n in lengths]
    parts[-1] += total - sum(parts)
    return parts
