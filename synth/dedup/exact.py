"""`dedup_exact`: drop records whose normalised text was already seen in the run.

Summaries hold a 128-bit hash (xxh3) per row; the reduce sorts all hashes once
(24 bytes per document in memory) and keeps the first occurrence in (shard,
row) order. Rows with no text (null, or a field path that matches nothing) are
kept and counted, never hashed together as "the empty document".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from pydantic import Field

from synth.core.stage import Shard
from synth.dedup.clusters import Offsets
from synth.dedup.common import DedupOptions, DedupStage
from synth.dedup.text import normalize_for_exact

SUMMARY_SCHEMA = pa.schema([("id", pa.string()), ("h1", pa.uint64()), ("h2", pa.uint64()), ("has_text", pa.bool_())])


class ExactDedupOptions(DedupOptions):
    nfkc: bool = Field(True, description="Unicode NFKC (full-width letters, ligatures) before hashing.")
    lowercase: bool = True
    strip_punctuation: bool = Field(True, description="Remove Unicode punctuation and symbols.")
    collapse_whitespace: bool = Field(True, description="Runs of whitespace become one space; ends trimmed.")


class ExactDedup(DedupStage):
    type = "dedup_exact"
    Options = ExactDedupOptions
    reason: ClassVar[str] = "exact_duplicate"
    score_name: ClassVar[str] = "kept_id"

    def summarize(self, table: pa.Table, shard: Shard) -> pa.Table:
        o = self.options
        texts = normalize_for_exact(
            self.texts(table, shard),
            nfkc=o.nfkc,
            lowercase=o.lowercase,
            strip_punctuation=o.strip_punctuation,
            collapse_whitespace=o.collapse_whitespace,
        )
        n = len(texts)
        h1 = np.zeros(n, np.uint64)
        h2 = np.zeros(n, np.uint64)
        has = np.zeros(n, bool)
        for i, t in enumerate(texts.to_pylist()):
            if t:
                d = xxhash.xxh3_128_digest(t.encode("utf-8"))
                h1[i] = int.from_bytes(d[:8], "little")
                h2[i] = int.from_bytes(d[8:], "little")
                has[i] = True
        ids = table.column(o.id_column).cast(pa.string()) if n else pa.array([], pa.string())
        return pa.table({"id": ids, "h1": h1, "h2": h2, "has_text": has}, schema=SUMMARY_SCHEMA)

    def reduce(self, summaries: list[Path], state_dir: Path) -> None:
        started = time.perf_counter()
        parts = [pq.read_table(p, columns=["h1", "h2", "has_text"]) for p in summaries]
        counts = np.array([t.num_rows for t in parts], np.int64)
        offsets = Offsets(counts)
        n = offsets.total
        h1 = np.concatenate([t.column("h1").to_numpy() for t in parts]) if n else np.zeros(0, np.uint64)
        h2 = np.concatenate([t.column("h2").to_numpy() for t in parts]) if n else np.zeros(0, np.uint64)
        has = (
            np.concatenate([t.column("has_text").to_numpy(zero_copy_only=False) for t in parts])
            if n
            else np.zeros(0, bool)
        )
        del parts
        idx = np.flatnonzero(has)
        # lexsort is stable: within equal hashes, lower global index (shard, row) first
        order = idx[np.lexsort((h2[idx], h1[idx]))]
        s1, s2 = h1[order], h2[order]
        new_group = np.ones(len(order), bool)
        if len(order) > 1:
            new_group[1:] = (s1[1:] != s1[:-1]) | (s2[1:] != s2[:-1])
        group_first = order[np.flatnonzero(new_group)][np.cumsum(new_group) - 1]
        dup = ~new_group
        dropped, kept = order[dup], group_first[dup]
        report = {
            "documents": n,
            "without_text": int(n - len(idx)),
            "distinct": int(new_group.sum()),
            "dropped": int(dup.sum()),
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.write_drops(state_dir, summaries, offsets, dropped, kept, np.ones(len(dropped), np.float32), report, has)
