"""Global clustering over per-shard summaries without holding them in Python objects.

Documents are numbered globally in (shard, row) order; every array here is
indexed by that number, so "lowest number" is the deterministic representative.
Band keys sit on disk in a (bands x docs) memory map and are sorted one band at
a time, which keeps the working set at a few arrays of 8 bytes per document.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PAIR_BLOCK = 1 << 13  # candidate pairs verified per step


def bucket_pairs(keys: np.ndarray, valid: np.ndarray | None = None, max_bucket_all_pairs: int = 16) -> np.ndarray:
    """Candidate pairs (lo, hi) of documents sharing a key, as int64 [n x 2].

    Every member is paired with the bucket's lowest document; small buckets also
    get all their pairs, so a verification step that rejects the star edge
    (representative too far) can still link two members that are close.
    """
    if valid is not None and not valid.all():
        idx = np.flatnonzero(valid)
        k = keys[idx]
    else:
        idx, k = None, keys
    if len(k) < 2:
        return np.zeros((0, 2), np.int64)
    order = np.argsort(k, kind="stable")
    sk = k[order]
    del k
    same = sk[1:] == sk[:-1]
    del sk
    # From here on only positions inside multi-member buckets: a small share.
    in_bucket = np.zeros(len(order), bool)
    in_bucket[1:] |= same
    in_bucket[:-1] |= same
    pos = np.flatnonzero(in_bucket)
    if len(pos) == 0:
        return np.zeros((0, 2), np.int64)
    members = order[pos] if idx is None else idx[order[pos]]
    del order, in_bucket
    new_run = np.ones(len(pos), bool)
    new_run[1:] = ~same[pos[1:] - 1]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_start, len(pos)))
    first = members[run_start[run_id]]
    pairs = [np.stack([first, members], axis=1)[~new_run]]
    for r in np.flatnonzero((run_len > 2) & (run_len <= max_bucket_all_pairs)):
        m = members[run_start[r] : run_start[r] + run_len[r]]
        i, j = np.triu_indices(len(m), k=1)
        keep = i > 0  # pairs with the first member are already in the star
        pairs.append(np.stack([m[i[keep]], m[j[keep]]], axis=1))
    return np.concatenate(pairs).astype(np.int64)


def unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    if len(pairs) == 0:
        return pairs
    lo = np.minimum(pairs[:, 0], pairs[:, 1])
    hi = np.maximum(pairs[:, 0], pairs[:, 1])
    key = np.unique(lo * np.int64(n) + hi)
    return np.stack([key // n, key % n], axis=1)


def gather_rows(path: Path, n: int, width: int, rows: np.ndarray, block: int = 1 << 15) -> np.ndarray:
    """Rows (sorted, unique) of an (n x width) uint32 file, read sequentially in blocks.

    A memory map would be simpler, but random reads through it leave every
    touched page resident (counted in RSS); this keeps only the rows asked for.
    """
    out = np.empty((len(rows), width), np.uint32)
    if len(rows) == 0:
        return out
    done = 0
    with open(path, "rb") as f:
        for start in range(0, n, block):
            stop = min(n, start + block)
            hi = int(np.searchsorted(rows, stop, side="left"))
            if hi == done:
                continue
            f.seek(start * width * 4)
            chunk = np.fromfile(f, dtype=np.uint32, count=(stop - start) * width).reshape(-1, width)
            out[done:hi] = chunk[rows[done:hi] - start]
            done = hi
    return out


def estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Share of equal MinHash values for each pair (reads rows from a memory map in blocks)."""
    out = np.empty(len(pairs), np.float32)
    for s in range(0, len(pairs), _PAIR_BLOCK):
        p = pairs[s : s + _PAIR_BLOCK]
        a = signatures[p[:, 0]]
        b = signatures[p[:, 1]]
        out[s : s + len(p)] = (a == b).mean(axis=1)
    return out


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components by min-label propagation: label[d] = lowest document linked to d."""
    labels = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return labels
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        m = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, m)
        np.minimum.at(labels, b, m)
        # pointer jumping: follow labels to their roots
        while True:
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
        if np.array_equal(labels, before):
            return labels


@dataclass
class Offsets:
    """Global numbering of (shard, row): shard s holds [starts[s], starts[s] + counts[s])."""

    counts: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def locate(self, global_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(np.cumsum(self.counts), global_index, side="right")
        return shard, global_index - self.starts[shard]


def sketch_jaccard(sketches: np.ndarray, pairs: np.ndarray, empty: int = 0xFFFFFFFF) -> np.ndarray:
    """Jaccard estimated from bottom-k sketches (sorted rows padded with `empty`); exact for small unions."""
    out = np.empty(len(pairs), np.float32)
    k = sketches.shape[1]
    step = max(256, _PAIR_BLOCK * 32 // max(k, 1))  # ~30 bytes per sketch value per pair in flight
    for s in range(0, len(pairs), step):
        p = pairs[s : s + step]
        both = np.sort(np.concatenate([sketches[p[:, 0]], sketches[p[:, 1]]], axis=1), axis=1)
        real = both != empty
        repeat = np.zeros_like(real)
        repeat[:, 1:] = both[:, 1:] == both[:, :-1]  # second copy of a value: in both sketches
        distinct = real & ~repeat
        rank = np.cumsum(distinct, axis=1, dtype=np.int32)  # 1-based rank among distinct union values
        within = rank <= k  # the k smallest of the union (all of it if smaller)
        union = np.minimum(rank[:, -1], k)
        shared = (repeat & real & within).sum(axis=1)
        out[s : s + len(p)] = np.where(union > 0, shared / np.maximum(union, 1), 0.0)
    return out
