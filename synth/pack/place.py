"""Phase 3 of `synth pack`: tokenised records -> their place in the output.

Records arrive table by table, in input order: a whole shard after a mix was planned,
or each encoded batch while later input is still being encoded (no mix: every record
is taken once, so nothing needs the totals first). Each record is packed (native) or
appended to its group's Megatron prefix, and gets a row in packing.parquet saying where
it went or why not.

Provenance codes in documents.bin index the sorted names of all inputs, which are only
known at the end: rows are written with codes in order of first sight and renumbered
in place by `finish` (one vectorised pass over documents.bin).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.pack.formats import MegatronWriter, NativeWriter
from synth.pack.mix import repeats_for
from synth.pack.packer import WindowPacker

PACKING_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("kind", pa.string()),
        ("status", pa.string()),  # packed | split | dropped | skipped | not_sampled
        ("reason", pa.string()),
        ("record_tokens", pa.int64()),  # the whole record's tokens (end-of-document token included)
        ("copy", pa.int32()),  # 0 for the first copy; repeats from up-sampling count up
        ("piece", pa.int32()),  # which slice of a split record
        ("output", pa.string()),  # Megatron: the prefix written to
        ("sequence", pa.int64()),  # native: packed sequence; Megatron: document index in its prefix
        ("offset", pa.int64()),
        ("tokens", pa.int64()),  # tokens of this placement
    ]
)
PROVENANCE = ("source", "domain", "kind")
# Rows of packing.parquet per row group (written as they fill).
ROW_GROUP = 65536
_META_COLUMNS = ("record_id", "source", "domain", "kind", "status", "reason", "n_tokens")


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "group"


def binary_values(column: pa.ChunkedArray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A large_binary column as one array of its values' bytes viewed as `dtype` (zero
    copy for a single chunk) and the element offsets of each row in it."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, dtype=np.uint8)
    data = data[offsets[0] : offsets[-1]]
    return data.view(dtype), (offsets - offsets[0]) // dtype.itemsize


def group_tokens(table: pa.Table, by: str, available: Counter, names: dict[str, set]) -> None:
    """Adds a tokenised table's names (every record's) and its usable tokens per group."""
    for key in names:
        names[key].update(table.column(key).unique().to_pylist())
    # Per group in order of first sight (a dictionary's order), with no per-record Python.
    groups = table.column(by).combine_chunks().dictionary_encode()
    usable = pc.if_else(pc.equal(table.column("status"), "ok"), table.column("n_tokens"), 0)
    sums = np.bincount(
        groups.indices.to_numpy(zero_copy_only=False),
        weights=usable.to_numpy(),
        minlength=len(groups.dictionary),
    )
    for g, n in zip(groups.dictionary.to_pylist(), sums.tolist()):
        available[g] += int(n)


class Placement:
    """Where every record goes. `ratios` maps a group (the value of column `by`) to its
    mix ratio; None takes every record once (no mix)."""

    def __init__(
        self,
        staging: Path,
        *,
        fmt: str,
        seq_len: int,
        dtype: type,
        pad_id: int,
        by: str,
        ratios: dict[str, float] | None,
        seed: int,
        long_docs: str,
        window: int,
        tick: Callable[[int], None] | None = None,
    ):
        self.staging, self.seq_len, self.dtype, self.by = staging, seq_len, dtype, by
        self.ratios, self.seed, self.long_docs, self.tick = ratios, seed, long_docs, tick
        # A whole ratio needs no per-record hash (repeats_for returns it as it is).
        self.whole = {g: int(r) for g, r in (ratios or {}).items() if r == math.floor(r)}
        self.codes: dict[str, dict[str, int]] = {k: {} for k in PROVENANCE}  # first sight
        self.counts: Counter = Counter()
        self.skipped: Counter = Counter()
        self.written: dict[str, Counter] = {k: Counter() for k in PROVENANCE}
        self.trained: Counter = Counter()
        self.group_written: Counter = Counter()
        self.rows: list[tuple] = []
        self.pwriter = pq.ParquetWriter(staging / "packing.parquet", PACKING_SCHEMA, compression="zstd")
        self.native = self.packer = None
        self.megatron: dict[str, MegatronWriter] = {}
        if fmt == "native":
            self.native = NativeWriter(staging, seq_len, dtype, pad_id)
            self.packer = WindowPacker(seq_len, window=window)
        else:
            (staging / "megatron").mkdir()

    # -- rows of packing.parquet ------------------------------------------------------
    def row(self, rid, s, d, k, status, reason, rtok, copy=None, piece=None, output=None, seq=None, off=None, n=None):
        self.rows.append((rid, s, d, k, status, reason, rtok, copy, piece, output, seq, off, n))
        if len(self.rows) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self._write_rows(len(self.rows))

    def _write_rows(self, n: int) -> None:
        self.pwriter.write_table(pa.table([list(c) for c in zip(*self.rows[:n])], schema=PACKING_SCHEMA))
        del self.rows[:n]

    def code(self, key: str, name: str) -> int:
        codes = self.codes[key]
        c = codes.get(name)
        if c is None:
            c = codes[name] = len(codes)
        return c

    def _codes(self, table: pa.Table, key: str) -> list[int]:
        """Every record's code for `key` (source, domain or kind), one lookup per name."""
        enc = table.column(key).combine_chunks().dictionary_encode()
        remap = np.array([self.code(key, v) for v in enc.dictionary.to_pylist()] or [0], dtype=np.int64)
        return remap[enc.indices.to_numpy(zero_copy_only=False)].tolist()

    def account(self, s, d, k, g, n, m) -> None:
        self.written["source"][s] += n
        self.written["domain"][d] += n
        self.written["kind"][k] += n
        self.group_written[g] += n
        self.trained[g] += m

    # -- records ----------------------------------------------------------------------
    def add(self, table: pa.Table, copy: int = 0) -> None:
        """Places one tokenised table's records (copy 0 also counts the records and
        notes the skips)."""
        by, seq_len, ratios, whole = self.by, self.seq_len, self.ratios, self.whole
        counts, row = self.counts, self.row
        cols = [table.column(c).to_pylist() for c in _META_COLUMNS]
        cols.append(cols[_META_COLUMNS.index(by)] if by in _META_COLUMNS else table.column(by).to_pylist())
        # Every record's tokens and mask as views into the table's two buffers, and its
        # trained-token count from one cumulative sum (no per-record copies).
        all_toks, offsets = binary_values(table.column("tokens"), np.dtype("<i4"))
        all_mask, _ = binary_values(table.column("mask"), np.dtype(np.uint8))
        trained_before = np.zeros(len(all_mask) + 1, dtype=np.int64)
        np.cumsum(all_mask, dtype=np.int64, out=trained_before[1:])
        rec_trained = (trained_before[offsets[1:]] - trained_before[offsets[:-1]]).tolist()
        offs = offsets.tolist()
        s_codes, d_codes, k_codes = (self._codes(table, key) for key in PROVENANCE)
        for i, (rid, s, d, k, status, reason, n, g) in enumerate(zip(*cols)):
            if status != "ok":
                if copy == 0:
                    self.skipped[reason] += 1
                    row(rid, s, d, k, "skipped", reason, n)
                continue
            if ratios is None:
                ratio = reps = 1
            else:
                ratio = ratios[g]
                reps = whole.get(g)
                if reps is None:
                    reps = repeats_for(rid, s, ratio, self.seed)
            if copy == 0:
                counts["records"] += 1
                if reps == 0:
                    counts["not_sampled"] += 1
                    row(rid, s, d, k, "not_sampled", f"mix ratio {ratio:.4f} for {by} {g}", n)
                counts["repeats"] += max(reps - 1, 0)
            if reps <= copy:
                continue
            a = offs[i]
            toks, mask = all_toks[a : a + n], all_mask[a : a + n]
            if self.native is None:
                w = self._megatron_writer(g)
                idx = w.add(toks)
                row(rid, s, d, k, "packed", None, n, copy, 0, w.prefix.name, idx, 0, n)
                self.account(s, d, k, g, n, rec_trained[i])
                counts["documents"] += 1
                if self.tick:
                    self.tick(n)
                continue
            if n > seq_len:
                if self.long_docs == "drop":
                    if copy == 0:
                        counts["dropped"] += 1
                        row(rid, s, d, k, "dropped", f"longer_than_seq_len ({n} > {seq_len})", n)
                    continue
                counts["split"] += copy == 0
                for j, start in enumerate(range(0, n, seq_len)):
                    stop = min(start + seq_len, n)
                    piece_trained = int(trained_before[a + stop] - trained_before[a + start])
                    piece = (
                        rid,
                        s,
                        d,
                        k,
                        copy,
                        j,
                        toks[start:stop],
                        mask[start:stop],
                        n,
                        "split",
                        piece_trained,
                        g,
                    ) + (s_codes[i], d_codes[i], k_codes[i])
                    done_bins = self.packer.add(stop - start, piece)
                    if done_bins:
                        self._emit(done_bins)
            else:
                done_bins = self.packer.add(
                    n,
                    (
                        rid,
                        s,
                        d,
                        k,
                        copy,
                        0,
                        toks,
                        mask,
                        n,
                        "packed",
                        rec_trained[i],
                        g,
                        s_codes[i],
                        d_codes[i],
                        k_codes[i],
                    ),
                )
                if done_bins:
                    self._emit(done_bins)

    def _megatron_writer(self, g: str) -> MegatronWriter:
        w = self.megatron.get(g)
        if w is None:
            w = self.megatron[g] = MegatronWriter(
                self.staging / "megatron" / f"{sanitize(g)}_text_document", self.dtype
            )
        return w

    def _emit(self, bins) -> None:
        """Writes packed sequences; a row per document, and the tokens written per
        source, domain, kind and group, counted per call, not per document."""
        docs = [p for b in bins for p in b.docs]
        places = self.native.write_sequences([[(p[6], p[7], p[12], p[13], p[14], p[10]) for p in b.docs] for b in bins])
        lengths = np.fromiter((len(p[6]) for p in docs), dtype=np.int64, count=len(docs))
        self.rows.extend(
            (p[0], p[1], p[2], p[3], p[9], None, p[8], p[4], p[5], None, seq, off, n)
            for p, (seq, off), n in zip(docs, places, lengths.tolist())
        )
        while len(self.rows) >= ROW_GROUP:
            self._write_rows(ROW_GROUP)
        codes = np.array([p[12:15] for p in docs], dtype=np.int64).reshape(-1, 3)
        trained = np.fromiter((p[10] for p in docs), dtype=np.int64, count=len(docs))
        for col, key in enumerate(PROVENANCE):
            names = list(self.codes[key])  # in code order
            sums = [(self.written[key], lengths)]
            if key == self.by:  # the group is this column's value
                sums += [(self.group_written, lengths), (self.trained, trained)]
            for counter, weights in sums:
                per_code = np.bincount(codes[:, col], weights=weights, minlength=len(names))
                for c in np.flatnonzero(per_code).tolist():
                    counter[names[c]] += int(per_code[c])
        if self.tick and docs:
            self.tick(int(lengths.sum()))

    # -- the end ----------------------------------------------------------------------
    def finish(self, groups: list[str], vocab: dict[str, list[str]]) -> tuple[list[str], list[tuple[float, str]]]:
        """Closes every file; returns the files written (relative to staging) and, for
        Megatron, (token share, prefix name) per group. `groups`: the groups with a
        positive ratio, each of which gets a Megatron prefix (empty if nothing went in);
        `vocab`: the sorted names of all inputs, which documents.bin's codes index."""
        files = ["packing.parquet"]
        blend: list[tuple[float, str]] = []
        if self.native is not None:
            self._emit(self.packer.finish())
            files += self.native.close()
            self._renumber_provenance(vocab)
        else:
            for g in groups:
                self._megatron_writer(g)
            total = sum(w.tokens for w in self.megatron.values()) or 1
            for g in sorted(self.megatron):
                w = self.megatron[g]
                files += [f"megatron/{n}" for n in w.close()]
                blend.append((w.tokens / total, w.prefix.name))
        self.flush()
        self.pwriter.close()
        return files, blend

    def _renumber_provenance(self, vocab: dict[str, list[str]]) -> None:
        """Codes of first sight -> indices into the sorted vocabulary, in place."""
        n_docs = self.native.n_docs
        if not n_docs:
            return
        docs = np.memmap(self.staging / "documents.bin", dtype=np.int64, mode="r+", shape=(n_docs, 6))
        for col, key in enumerate(PROVENANCE, start=3):
            index = {name: i for i, name in enumerate(vocab[key])}
            remap = np.array([index[name] for name in self.codes[key]], dtype=np.int64)
            docs[:, col] = remap[docs[:, col]]
        docs.flush()
        del docs
