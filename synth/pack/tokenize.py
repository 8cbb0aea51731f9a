"""Phase 1 of `synth pack`: one input file -> one committed shard of tokenised records.

A shard is done exactly when its parquet exists (written under a temporary name and
renamed, like every synth shard), so a killed pack resumes here without re-tokenising.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.core.rundir import AtomicParquetWriter
from synth.pack.inputs import ReadPosition, iter_batches
from synth.pack.render import LossPolicy, Renderer, Skip, load_tokenizer

TOKENS_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("kind", pa.string()),
        ("status", pa.string()),  # ok | skipped
        ("reason", pa.string()),  # why skipped (null when ok)
        ("n_tokens", pa.int64()),
        ("tokens", pa.large_binary()),  # int32 little-endian
        ("mask", pa.large_binary()),  # uint8 per token
    ]
)


@dataclass(frozen=True)
class TokenizeTask:
    index: int
    source: str
    path: str
    tokenizer: str
    chat_loss: str
    text_loss: str
    eod_token: str | None
    target: str
    encoders: int = 1


# Records per encode call: large enough for the Rust encoder's threads, small enough that
# rendering the next batch's conversations overlaps encoding this one.
BATCH_ROWS = 4096
# ... and of about this much data: the first batch of a file is encoded while the rest
# is read, and the last one, placed and written after the encoder is done, is short.
BATCH_BYTES = 1 << 20

# Characters of text read and rendered ahead of the oldest batch not yet encoded: the
# bound on the pipeline's memory, and deep enough that the next file's conversations are
# rendered while the last batches of text encode (else that GIL-bound rendering runs
# after them, with a core idle).
READ_AHEAD_CHARS = 16_000_000

# Batches waiting for the shard thread to write them, at most.
WRITES_AHEAD = 4

# A batch's encode is split between the encoder threads when each piece still holds this
# many records: a file of a few hundred conversations is one batch, which one thread
# alone would encode while the other waits.
MIN_PIECE = 64

RENDERERS: dict[tuple, Renderer] = {}


def renderer_for(task: TokenizeTask) -> Renderer:
    key = (task.tokenizer, task.chat_loss, task.text_loss, task.eod_token)
    if key not in RENDERERS:
        RENDERERS[key] = Renderer(
            load_tokenizer(task.tokenizer), LossPolicy.parse(task.chat_loss, task.text_loss), task.eod_token
        )
    return RENDERERS[key]


def _str(v, default: str) -> str:
    return default if v is None or v == "" else str(v)


def _binary_column(chunks: list[np.ndarray], lengths: np.ndarray) -> pa.Array:
    """One large_binary column from per-row byte arrays, built from two buffers."""
    data = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint8)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def tokenize_file(task: TokenizeTask, on_table: Callable[[pa.Table], None] | None = None) -> dict:
    """Tokenises one input file into its shard (see `tokenize_files`)."""
    if Path(task.target).exists():
        return {"index": task.index, "skipped": True}
    (stats,) = tokenize_files([task], on_table)  # run to the end: the encoder threads are shut down
    return stats


def tokenize_files(
    tasks: list[TokenizeTask],
    on_table: Callable[[pa.Table], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[dict]:
    """Tokenises input files, each into its shard (committed when its last batch is in),
    and yields each file's statistics, in input order. A file whose shard exists already
    is not tokenised again: its shard is only handed to `on_table`.

    A pipeline: while `encoders` background threads encode batches (their plain text and
    rendered conversations, in Rust, without the GIL), this thread reads and renders the
    next batch, also of the next file, and builds the oldest batch's table, which
    `on_table` receives at once. Batches are taken back in order, so the shards, and the
    order `on_table` sees, are the same whatever the number of threads. `on_read` gets
    the input bytes behind each batch as it is taken back (a file's size in all)."""
    if not tasks:
        return
    encoders = max(t.encoders for t in tasks)
    in_flight: collections.deque = collections.deque()  # batches, then each file's end
    ahead = 0  # characters of the batches in flight
    # Files whose shard is being written (by a thread of its own, so that compressing
    # and syncing it overlaps the next file's work), with their statistics.
    commits: collections.deque = collections.deque()
    writes: collections.deque = collections.deque()  # batches handed to the shard thread

    def take_back(limit: int) -> Iterator[dict]:
        nonlocal ahead
        while commits and commits[0][0].done():
            future, stats = commits.popleft()
            future.result()  # a failed write stops the pack here
            yield stats
        while in_flight and (ahead > limit or in_flight[0][-1].done()):
            item = in_flight.popleft()
            if item[0] == "batch":
                _, file, meta, rendered, n_bytes, encoding = item
                if on_read is not None and n_bytes:
                    on_read(n_bytes)
                ahead -= encoding.chars
                table = _batch_table(file.renderer, file.task, meta, rendered, encoding, file.stats)
                writes.append(shard_writer.submit(file.shard.write, table))  # in order, one thread
                while len(writes) > WRITES_AHEAD:  # a slow disk holds the pipeline, not memory
                    writes.popleft().result()
                if on_table is not None:
                    on_table(table)
            elif item[0] == "end":
                file = item[1]
                if on_read is not None and item[2]:
                    on_read(item[2])
                commits.append((shard_writer.submit(file.shard.commit), file.stats))
            elif on_table is not None:  # "done": tokenised before
                on_table(pq.read_table(item[1].target))
        if limit < 0:  # the end: every shard is committed before its statistics go out
            for future, stats in commits:
                future.result()
                yield stats
            commits.clear()

    encoder = _encoder_pool(encoders)
    with (
        _one_thread_per_encode(),
        cf.ThreadPoolExecutor(1, thread_name_prefix="pack-shard") as shard_writer,
    ):
        try:
            for task in tasks:
                if Path(task.target).exists():
                    in_flight.append(("done", task, _DONE))
                    continue
                file = _File(task, renderer_for(task))
                rows_before = 0
                position, reported = ReadPosition(), 0
                for batch in iter_batches(task.path, BATCH_ROWS, position, BATCH_BYTES):
                    n_bytes = max(position.bytes - reported, 0)
                    reported += n_bytes
                    if _text_only(batch):
                        meta, rendered, texts, chats = _prepare_text_table(task, batch, rows_before)
                    else:
                        if isinstance(batch, pa.Table):
                            batch = batch.to_pylist()
                        meta, rendered, texts, chats = _prepare_batch(file.renderer, task, batch, rows_before)
                    rows_before += len(batch)
                    encoding = _Encoding(encoder, file.renderer, texts, chats, encoders)
                    in_flight.append(("batch", file, meta, rendered, n_bytes, encoding))
                    ahead += encoding.chars
                    yield from take_back(READ_AHEAD_CHARS)
                in_flight.append(("end", file, max(os.stat(task.path).st_size - reported, 0), _DONE))
            yield from take_back(-1)
        finally:  # an error or an early stop: the batches' encodes not yet started are dropped
            for item in in_flight:
                if item[0] == "batch":
                    item[-1].cancel()


class _Done:
    """What stands in the queue for a step with nothing to wait for."""

    @staticmethod
    def done() -> bool:
        return True


_DONE = _Done()


@dataclass
class _File:
    task: TokenizeTask
    renderer: Renderer
    stats: dict = field(default_factory=dict)
    shard: _ShardWriter = field(init=False)

    def __post_init__(self):
        self.stats = {"index": self.task.index, "records": 0, "tokens": 0, "skipped": 0}
        self.shard = _ShardWriter(Path(self.task.target))


class _ShardWriter:
    """A file's shard, written batch by batch by the shard thread (so compressing it
    overlaps encoding, and memory holds a batch, not the file) and committed at the
    file's end (a file without records gets an empty shard). A failed write fails the
    commit: no shard is renamed into place."""

    def __init__(self, target: Path):
        self.target = target
        self._file: AtomicParquetWriter | None = None
        self._error: BaseException | None = None

    def write(self, table: pa.Table) -> None:
        if self._error is not None:
            return
        try:
            if self._file is None:
                self._file = AtomicParquetWriter(self.target, TOKENS_SCHEMA)
            self._file.write(table)
        except BaseException as exc:
            self._error = exc
            raise

    def commit(self) -> None:
        if self._error is not None:
            if self._file is not None:
                self._file.abort()
            raise self._error
        if self._file is None:
            self._file = AtomicParquetWriter(self.target, TOKENS_SCHEMA)
        self._file.commit()


@contextlib.contextmanager
def _one_thread_per_encode():
    """`tokenizers` spreads one batch call over every core by default; pack runs its own
    encoder threads (and worker processes) instead: the library's threads waiting on one
    another cost a fifth more CPU than the encoding itself on two cores. The variable is
    read at every call and restored afterwards."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def encoder_threads(workers: int) -> int:
    """Encoder threads per tokenising process: the cores this process may use, shared
    between the worker processes."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, workers))


def _encode_batch(r: Renderer, texts: list[str], chats: list[tuple[str, list]]):
    text_tokens = r.encode_text_batch(texts) if texts else None
    return text_tokens, r.encode_chats(chats) if chats else []


def _pieces(items: list, parts: int) -> list[list]:
    """`items` cut into at most `parts` contiguous pieces of at least MIN_PIECE items."""
    parts = max(1, min(parts, len(items) // MIN_PIECE))
    step = -(-len(items) // parts) if items else 1
    return [items[i : i + step] for i in range(0, len(items), step)] or [items]


# Encoder threads of this process, by count. They outlive a pack: `tokenizers` keeps its
# BPE word cache per thread, so a new thread encodes its first megabytes ~4% slower (the
# next pack in the same process finds them warm). Keyed by process id too: threads do
# not survive a fork.
_ENCODER_POOLS: dict[tuple[int, int], cf.ThreadPoolExecutor] = {}


def _encoder_pool(threads: int) -> cf.ThreadPoolExecutor:
    key = (os.getpid(), threads)
    pool = _ENCODER_POOLS.get(key)
    if pool is None:
        pool = _ENCODER_POOLS[key] = cf.ThreadPoolExecutor(threads, thread_name_prefix="pack-encode")
    return pool


class _Encoding:
    """One batch's encode, split between the encoder threads; its result is the one
    `_encode_batch` would give for the whole batch."""

    def __init__(self, encoder: cf.Executor, r: Renderer, texts: list[str], chats: list, parts: int):
        self.futures = [encoder.submit(_encode_batch, r, piece, []) for piece in _pieces(texts, parts) if piece]
        self.futures += [encoder.submit(_encode_batch, r, [], piece) for piece in _pieces(chats, parts) if piece]
        self.chars = sum(map(len, texts)) + sum(len(text) for text, _ in chats)

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def cancel(self) -> None:
        for f in self.futures:
            f.cancel()

    def result(self):
        results = [f.result() for f in self.futures]
        text_parts = [tokens for tokens, _ in results if tokens is not None]
        chats = [chat for _, part in results for chat in part]
        if not text_parts:
            return None, chats
        if len(text_parts) == 1:
            return text_parts[0], chats
        flat = np.concatenate([f for f, _ in text_parts])
        shifts = np.cumsum([0] + [len(f) for f, _ in text_parts[:-1]])
        return (flat, np.concatenate([e + s for (_, e), s in zip(text_parts, shifts)])), chats


def _prepare_batch(r: Renderer, task: TokenizeTask, batch: list[dict], rows_before: int):
    """Per record: its metadata, and what it is (None for a skip, "text" for a plain text
    record, "chat" for a conversation rendered through the chat template); the batch's
    plain text, and its rendered conversations, are each encoded in one call."""
    fname = Path(task.path).name
    meta: dict[str, list] = {"record_id": [], "domain": [], "kind": [], "status": [], "reason": []}
    rendered: list = []
    texts: list[str] = []
    chats: list[tuple[str, list]] = []
    for row, rec in enumerate(batch, rows_before):
        rid = _str(rec.get("id"), f"{fname}#{row}")
        domain = _str(rec.get("domain"), "unknown")
        status, reason, out = "ok", None, None
        if rec.get("_bad"):
            kind, status, reason = "unknown", "skipped", rec["_bad"]
        else:
            messages, text = rec.get("messages"), rec.get("text")
            if messages is not None and len(messages) > 0:
                kind = _str(rec.get("kind"), "chat")
                try:
                    chats.append(r.chat_text_and_spans(messages, rec.get("tools")))
                    out = "chat"
                except Skip as sk:
                    status, reason = "skipped", sk.reason
            elif isinstance(text, str) and text:
                kind = _str(rec.get("kind"), "text")
                texts.append(text)
                out = "text"
            else:
                kind, status, reason = _str(rec.get("kind"), "unknown"), "skipped", "no_messages_or_text"
        for key, v in (("record_id", rid), ("domain", domain), ("kind", kind), ("status", status), ("reason", reason)):
            meta[key].append(v)
        rendered.append(out)
    return meta, rendered, texts, chats


def _text_only(batch) -> bool:
    return isinstance(batch, pa.Table) and (
        "messages" not in batch.column_names or batch.column("messages").null_count == batch.num_rows
    )


def _is_string(col) -> bool:
    return pa.types.is_string(col.type) or pa.types.is_large_string(col.type)


def _string_column(table: pa.Table, name: str, defaults) -> pa.Array | list:
    """`_str` over a column: the column itself when no value needs its default (the
    common case, no per-record Python), else a list with the defaults filled in.
    `defaults(i)` is the default of row i."""
    if name not in table.column_names:
        return [defaults(i) for i in range(table.num_rows)]
    col = table.column(name)
    if _is_string(col) and col.null_count == 0 and not pc.any(pc.equal(pc.binary_length(col), 0)).as_py():
        return col.cast(pa.string())
    return [_str(v, defaults(i)) for i, v in enumerate(col.to_pylist())]


def _prepare_text_table(task: TokenizeTask, table: pa.Table, rows_before: int):
    """`_prepare_batch` for a batch without conversations, column by column: the same
    metadata, skips and texts, without a dict per record."""
    fname = Path(task.path).name
    n = table.num_rows
    text = table.column("text") if "text" in table.column_names else None
    if text is not None and _is_string(text):
        ok = pc.fill_null(pc.greater(pc.binary_length(text), 0), False)
        all_ok = n == 0 or pc.all(ok).as_py()
        texts = (text if all_ok else text.filter(ok)).to_pylist()
        ok_list = [True] * n if all_ok else ok.to_pylist()
    else:  # no text at all, or not strings: every record is a skip
        texts, ok_list, all_ok = [], [False] * n, False
    kinds = (lambda i: "text") if all_ok else (lambda i: "text" if ok_list[i] else "unknown")
    meta = {
        "record_id": _string_column(table, "id", lambda i: f"{fname}#{rows_before + i}"),
        "domain": _string_column(table, "domain", lambda i: "unknown"),
        "kind": _string_column(table, "kind", kinds),
        "status": ["ok" if good else "skipped" for good in ok_list],
        "reason": [None if good else "no_messages_or_text" for good in ok_list],
    }
    rendered = ["text" if good else None for good in ok_list]
    return meta, rendered, texts, []


def _batch_table(
    r: Renderer, task: TokenizeTask, meta: dict, rendered: list, encoding: cf.Future, stats: dict
) -> pa.Table:
    text_mask = np.uint8(1 if r.policy.text else 0)
    n = len(rendered)
    stats["records"] += n
    text_tokens, chats = encoding.result()
    if text_tokens is not None:
        flat, ends = text_tokens
    if text_tokens is not None and len(ends) == n:  # only plain text: the encode is the column
        tok_chunks, mask_chunks = [flat], [np.full(len(flat), text_mask, dtype=np.uint8)]
        lengths = np.diff(ends, prepend=0)
    else:
        tok_chunks, mask_chunks, lengths = [], [], np.zeros(n, dtype=np.int64)
        j = 0
        next_chat = iter(chats)
        for i, out in enumerate(rendered):
            if out is None:
                continue
            if out == "text":  # its slice of the batch encode
                start = ends[j - 1] if j else 0
                t = flat[start : ends[j]]
                m = np.full(len(t), text_mask, dtype=np.uint8)
                j += 1
            else:
                chat = next(next_chat)
                t, m = chat.tokens.astype("<i4"), chat.mask
            tok_chunks.append(t)
            mask_chunks.append(m)
            lengths[i] = len(t)
    stats["skipped"] += sum(out is None for out in rendered)
    stats["tokens"] += int(lengths.sum())
    cols = {
        "record_id": meta["record_id"],
        "source": [task.source] * n,
        "domain": meta["domain"],
        "kind": meta["kind"],
        "status": meta["status"],
        "reason": meta["reason"],
        "n_tokens": lengths.astype(np.int64),
        "tokens": _binary_column([c.astype("<i4", copy=False).view(np.uint8) for c in tok_chunks], lengths * 4),
        "mask": _binary_column(mask_chunks, lengths),
    }
    return pa.table(cols, schema=TOKENS_SCHEMA)


def decode_tokens(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i4")
