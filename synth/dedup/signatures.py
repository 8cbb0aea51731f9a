"""MinHash signatures for a batch of texts, vectorised over the whole batch.

Why our own: per-document Python work is what makes MinHash slow (datasketch
hashes each shingle with SHA-1 in a Python loop, ~1.4k docs/s in bulk). Here a
batch of texts is split into words by Arrow (C++), each *distinct* word of the
batch is hashed once with xxh3, word 5-grams are combined and mixed with
numpy, and the permutations are multiply-add-shift hashes applied to a
(shingles x permutations) block, reduced per document with `minimum.reduceat`.
Nothing is keyed on Python's salted `hash()`, so signatures are identical across
processes, machines and runs.

Engine `rensa` applies rensa's Rust MinHash to the same shingle hashes (its
batch API over one flat hash buffer); engine `datasketch` feeds the same
shingles, as strings, to datasketch's MinHash (its SHA-1 hash family, slow, for
teams that need signatures compatible with datasketch). All engines return a
(docs x permutations) uint32 matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from synth.dedup.text import word_lists

U64 = np.uint64
EMPTY = np.uint32(0xFFFFFFFF)  # signature value of a document with no words
_SHINGLE_CHUNK = 2048  # shingles per (shingles x permutations) block: ~2 MB at 112 perms, cache-sized


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: spreads combined word hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> U64(30))
        x = x * U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> U64(27))
        x = x * U64(0x94D049BB133111EB)
        return x ^ (x >> U64(31))


def _odd_constants(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**63, n, dtype=np.uint64) * U64(2) + U64(1)


@dataclass
class Shingles:
    """Shingle hashes of a batch: `hashes[starts[d]:starts[d]+counts[d]]` belong to doc d."""

    hashes: np.ndarray  # uint64
    counts: np.ndarray  # int64 per doc
    words: np.ndarray  # int64 per doc

    @property
    def starts(self) -> np.ndarray:
        return (
            np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
            if len(self.counts)
            else np.zeros(0, np.int64)
        )


class Shingler:
    """Word n-grams of lower-cased Unicode words, hashed to uint64."""

    def __init__(self, ngram: int = 5, lowercase: bool = True, seed: int = 1):
        self.ngram = ngram
        self.lowercase = lowercase
        self._position = _odd_constants(np.random.default_rng([seed, 0x5EED]), ngram)

    def words(self, texts: pa.Array) -> tuple[pa.Array, np.ndarray, int]:
        """Non-empty words of the batch (flat), their document index, and the doc count."""
        lists = word_lists(texts, self.lowercase)
        flat = pc.list_flatten(lists)
        parent = pc.list_parent_indices(lists).to_numpy()
        keep = pc.greater(pc.binary_length(flat), 0)
        return pc.filter(flat, keep), parent[keep.to_numpy(zero_copy_only=False)], len(texts)

    def shingle_strings(self, texts: pa.Array) -> list[list[str]]:
        """The same shingles as strings (space-joined words), for library engines."""
        flat, parent, n = self.words(texts)
        words = flat.to_pylist()
        out: list[list[str]] = [[] for _ in range(n)]
        per_doc: list[list[str]] = [[] for _ in range(n)]
        for w, d in zip(words, parent.tolist()):
            per_doc[d].append(w)
        k = self.ngram
        for d, ws in enumerate(per_doc):
            if not ws:
                continue
            if len(ws) < k:
                out[d] = [" ".join(ws)]
            else:
                out[d] = list(dict.fromkeys(" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1)))
        return out

    def __call__(self, texts: pa.Array) -> Shingles:
        flat, parent, n = self.words(texts)
        n_words = np.bincount(parent, minlength=n).astype(np.int64)
        if len(flat) == 0:
            return Shingles(np.zeros(0, np.uint64), np.zeros(n, np.int64), n_words)
        # Hash each distinct word of the batch once: natural text repeats words a lot.
        encoded = flat.dictionary_encode()
        vocab = encoded.dictionary.cast(pa.binary()).to_pylist()
        vocab_hash = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in vocab), dtype=np.uint64, count=len(vocab))
        word_hash = vocab_hash[encoded.indices.to_numpy()]

        k = self.ngram
        total = len(word_hash)
        ends = np.cumsum(n_words)
        starts = ends - n_words
        padded = np.concatenate([word_hash, np.zeros(k, np.uint64)])
        combined = np.zeros(total, np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):
                combined += padded[j : j + total] * self._position[j]
            # A document shorter than k words is one gram of all its words:
            # recompute those few grams without the words of the next document.
            short = np.flatnonzero((n_words > 0) & (n_words < k))
            if len(short):
                first = starts[short]
                gram = np.zeros(len(short), np.uint64)
                for j in range(k - 1):
                    inside = j < n_words[short]
                    gram += np.where(inside, word_hash[np.minimum(first + j, total - 1)], U64(0)) * self._position[j]
                combined[first] = gram
        hashes = mix64(combined)
        pos = np.arange(total, dtype=np.int64)
        # A gram starts at every position with k words left, or at the first word
        # of a document shorter than k.
        valid = (pos + k) <= ends[parent]
        if len(short):
            valid[starts[short]] = True
        counts = np.bincount(parent[valid], minlength=n).astype(np.int64)
        return Shingles(hashes[valid], counts, n_words)


class Permutations:
    """`num_perm` hash functions h_i(x) = (a_i * x + b_i) mod 2^64 >> 32, a_i odd."""

    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.default_rng([seed, 0x9E3779B9])
        self.a = _odd_constants(rng, num_perm)
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signatures(self, shingles: Shingles) -> np.ndarray:
        n = len(shingles.counts)
        sig = np.full((n, self.num_perm), EMPTY, dtype=np.uint32)
        starts = shingles.starts
        h = shingles.hashes
        # A huge document (a 50 MB page) goes through in slices with a running
        # minimum, so the block never exceeds _SHINGLE_CHUNK rows.
        for d in np.flatnonzero(shingles.counts > _SHINGLE_CHUNK):
            lo, hi = int(starts[d]), int(starts[d] + shingles.counts[d])
            for s in range(lo, hi, _SHINGLE_CHUNK):
                block = h[s : min(hi, s + _SHINGLE_CHUNK)]
                sig[d] = np.minimum(sig[d], self._block(block).min(axis=0))
        docs = np.flatnonzero((shingles.counts > 0) & (shingles.counts <= _SHINGLE_CHUNK))
        if len(docs) == 0:
            return sig
        cum = np.cumsum(shingles.counts[docs])
        i = 0
        buf = np.empty((_SHINGLE_CHUNK, self.num_perm), np.uint64)
        with np.errstate(over="ignore"):
            while i < len(docs):
                # Take whole documents until the block holds ~_SHINGLE_CHUNK shingles.
                base = cum[i - 1] if i else 0
                j = int(np.searchsorted(cum, base + _SHINGLE_CHUNK, side="right"))
                j = max(j, i + 1)
                block_docs = docs[i:j]
                lo = starts[block_docs[0]]
                hi = starts[block_docs[-1]] + shingles.counts[block_docs[-1]]
                if hi - lo > len(buf):
                    buf = np.empty((hi - lo, self.num_perm), np.uint64)
                values = buf[: hi - lo]
                # in place: no temporaries the size of the block
                np.multiply(h[lo:hi, None], self.a[None, :], out=values)
                np.add(values, self.b[None, :], out=values)
                np.right_shift(values, U64(32), out=values)
                sig[block_docs] = np.minimum.reduceat(values, starts[block_docs] - lo, axis=0)
                i = j
        return sig

    def _block(self, h: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            values = h[:, None] * self.a[None, :]
            values += self.b[None, :]
            values >>= U64(32)
        return values.astype(np.uint32)


class MinHasher:
    """texts -> (signatures uint32 [docs x perms], words per doc)."""

    def __init__(
        self, num_perm: int = 112, ngram: int = 5, seed: int = 1, engine: str = "numpy", lowercase: bool = True
    ):
        self.engine = engine
        self.num_perm = num_perm
        self.seed = seed
        self.shingler = Shingler(ngram, lowercase, seed)
        self.permutations = Permutations(num_perm, seed)

    def __call__(self, texts: pa.Array, sketch: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(signatures, words per doc, bottom-`sketch` sketches)."""
        sh = self.shingler(texts)
        sig, words = self._signatures(texts, sh)
        return sig, words, bottom_k(sh, sketch)

    def _signatures(self, texts: pa.Array, sh: Shingles) -> tuple[np.ndarray, np.ndarray]:
        if self.engine == "numpy":
            return self.permutations.signatures(sh), sh.words
        if self.engine == "rensa":
            # Same shingle hashes, permuted by rensa's Rust MinHash (its own hash family).
            from rensa import RMinHash

            sig = np.full((len(sh.counts), self.num_perm), EMPTY, dtype=np.uint32)
            if len(sh.hashes):
                offsets = np.concatenate([[0], np.cumsum(sh.counts)]).astype(np.uint64)
                matrix = RMinHash.digest_matrix_from_flat_token_hashes(sh.hashes, offsets, self.num_perm, self.seed)
                rows = np.array(matrix.to_rows(), dtype=np.uint32).reshape(-1, self.num_perm)
                has = sh.counts > 0
                sig[has] = rows[has]
            return sig, sh.words
        grams = self.shingler.shingle_strings(texts)
        words = np.array([len(g) for g in grams], np.int64)  # only zero vs non-zero matters here
        sig = np.full((len(grams), self.num_perm), EMPTY, dtype=np.uint32)
        if self.engine == "datasketch":
            from datasketch import MinHash

            for d, g in enumerate(grams):
                if g:
                    m = MinHash(num_perm=self.num_perm, seed=self.seed)
                    m.update_batch([s.encode("utf-8") for s in g])
                    sig[d] = m.hashvalues.astype(np.uint32)
        else:
            raise ValueError(f"unknown MinHash engine {self.engine!r}: use numpy, datasketch or rensa")
        return sig, words


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands x docs) uint64: each band's `rows` values folded into one 64-bit key."""
    n = sig.shape[0]
    out = np.empty((bands, n), np.uint64)
    mult = _odd_constants(np.random.default_rng(0xBA5D), rows)
    with np.errstate(over="ignore"):
        for b in range(bands):
            block = sig[:, b * rows : (b + 1) * rows].astype(np.uint64)
            acc = np.full(n, U64(b) * U64(0x9E3779B97F4A7C15), np.uint64)
            for r in range(rows):
                acc = mix64(acc ^ (block[:, r] * mult[r]))
            out[b] = acc
    return out


def bottom_k(shingles: Shingles, k: int) -> np.ndarray:
    """(docs x k) uint32: each document's k smallest distinct shingle hashes (top 32 bits), sorted, padded with EMPTY.

    Two such sketches give the Jaccard of the k smallest hashes of the union,
    which is exact when the union has at most k shingles (short passages, most
    instructions) and, for long documents, a sample without replacement with
    lower variance than k independent MinHash values.
    """
    n = len(shingles.counts)
    out = np.full((n, k), EMPTY, dtype=np.uint32)
    if len(shingles.hashes) == 0 or k == 0:
        return out
    doc = np.repeat(np.arange(n, dtype=np.uint64), shingles.counts)
    # EMPTY is the padding value, so a real hash never takes it.
    h = np.minimum(shingles.hashes >> U64(32), U64(0xFFFFFFFE))
    key = np.sort((doc << U64(32)) | h)  # by (doc, hash)
    fresh = np.ones(len(key), bool)
    fresh[1:] = key[1:] != key[:-1]  # a shingle repeated in a document counts once
    key = key[fresh]
    doc = (key >> U64(32)).astype(np.int64)
    h = (key & U64(0xFFFFFFFF)).astype(np.uint32)
    first = np.searchsorted(doc, np.arange(n))
    rank = np.arange(len(h)) - first[doc]
    take = rank < k
    out[doc[take], rank[take]] = h[take]
    return out
