"""Phase 1 of `synth pack`: one input file -> one committed shard of tokenised records.

A shard is done exactly when its parquet exists (written under a temporary name and
renamed, like every synth shard), so a killed pack resumes here without re-tokenising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from synth.core.rundir import atomic_write_parquet
from synth.pack.inputs import iter_record_batches
from synth.pack.render import LossPolicy, Renderer, Skip, load_tokenizer

TOKENS_SCHEMA = pa.schema([
    ("record_id", pa.string()),
    ("source", pa.string()),
    ("domain", pa.string()),
    ("kind", pa.string()),
    ("status", pa.string()),  # ok | skipped
    ("reason", pa.string()),  # why skipped (null when ok)
    ("n_tokens", pa.int64()),
    ("tokens", pa.large_binary()),  # int32 little-endian
    ("mask", pa.large_binary()),  # uint8 per token
])


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


RENDERERS: dict[tuple, Renderer] = {}


def renderer_for(task: TokenizeTask) -> Renderer:
    key = (task.tokenizer, task.chat_loss, task.text_loss, task.eod_token)
    if key not in RENDERERS:
        RENDERERS[key] = Renderer(load_tokenizer(task.tokenizer), LossPolicy.parse(task.chat_loss, task.text_loss), task.eod_token)
    return RENDERERS[key]


def _str(v, default: str) -> str:
    return default if v is None or v == "" else str(v)


def tokenize_file(task: TokenizeTask) -> dict:
    target = Path(task.target)
    if target.exists():
        return {"index": task.index, "skipped": True}
    r = renderer_for(task)
    cols: dict[str, list] = {f.name: [] for f in TOKENS_SCHEMA}
    stats = {"index": task.index, "records": 0, "tokens": 0, "skipped": 0}

    def add(rid, domain, kind, status, reason, rendered=None):
        cols["record_id"].append(rid)
        cols["source"].append(task.source)
        cols["domain"].append(domain)
        cols["kind"].append(kind)
        cols["status"].append(status)
        cols["reason"].append(reason)
        if rendered is None:
            cols["n_tokens"].append(0)
            cols["tokens"].append(b"")
            cols["mask"].append(b"")
            stats["skipped"] += 1
        else:
            cols["n_tokens"].append(len(rendered.tokens))
            cols["tokens"].append(rendered.tokens.astype("<i4").tobytes())
            cols["mask"].append(rendered.mask.tobytes())
            stats["tokens"] += len(rendered.tokens)

    row = 0
    fname = Path(task.path).name
    for batch in iter_record_batches(task.path, batch_rows=4096):
        texts: list[tuple[int, str, str, str]] = []
        slots: list = []
        for rec in batch:
            rid = _str(rec.get("id"), f"{fname}#{row}")
            row += 1
            stats["records"] += 1
            domain = _str(rec.get("domain"), "unknown")
            if rec.get("_bad"):
                slots.append((rid, domain, "unknown", "skipped", rec["_bad"], None))
                continue
            messages, text = rec.get("messages"), rec.get("text")
            if messages is not None and len(messages) > 0:
                kind = _str(rec.get("kind"), "chat")
                try:
                    slots.append((rid, domain, kind, "ok", None, r.render_chat(messages, rec.get("tools"))))
                except Skip as s:
                    slots.append((rid, domain, kind, "skipped", s.reason, None))
            elif isinstance(text, str) and text:
                kind = _str(rec.get("kind"), "text")
                texts.append((len(slots), rid, domain, kind))
                slots.append(text)
            else:
                slots.append((rid, domain, _str(rec.get("kind"), "unknown"), "skipped", "no_messages_or_text", None))
        if texts:
            # One batched encode for all plain-text records of the batch (Rust, parallel).
            ids = r.encode_texts([slots[i] for i, *_ in texts])
            for (i, rid, domain, kind), rendered in zip(texts, r.text_masks(ids)):
                slots[i] = (rid, domain, kind, "ok", None, rendered)
        for s in slots:
            add(*s)
    table = pa.table(cols, schema=TOKENS_SCHEMA)
    atomic_write_parquet(target, table)
    return stats


def decode_tokens(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i4")
