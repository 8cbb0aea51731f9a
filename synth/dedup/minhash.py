"""`dedup_minhash`: near-duplicate removal with MinHash LSH across all shards.

Defaults follow FineWeb: word 5-grams, 14 bands x 8 rows (112 permutations),
which makes two documents candidates with probability 1 - (1 - J^8)^14 (0.92
at Jaccard 0.8, 0.99 at 0.85). Candidates are then verified (Jaccard >=
`threshold`) on a bottom-k sketch per document (the k smallest distinct
shingle hashes): exact for pairs whose union has at most k shingles, and a
lower-variance estimate than the 112 MinHash values otherwise. Verification
removes most of the false positives plain LSH lets through.

- summarize (per shard, parallel): one signature (112 x uint32) and one
  sketch (128 x uint32) per row.
- reduce (once): signatures are streamed shard by shard into flat files in the
  state folder (docs x perms uint32, and one uint64 key file per band); each
  band is then loaded alone, sorted, and turned into candidate pairs; the
  signatures of documents in some pair are read back in one sequential pass
  and the pairs verified; verified
  pairs are clustered (connected components) and every document except the
  lowest (shard, row) of its cluster is planned for removal.
- process (per shard): drop the planned rows with reason `near_duplicate`,
  reporting the kept record's id and the estimated similarity to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from synth.core.stage import Shard
from synth.dedup.clusters import (
    Offsets,
    bucket_pairs,
    components,
    estimated_jaccard,
    gather_rows,
    sketch_jaccard,
    unique_pairs,
)
from synth.dedup.common import DedupOptions, DedupStage
from synth.dedup.signatures import MinHasher, band_hashes


class MinHashOptions(DedupOptions):
    ngram: int = Field(5, ge=1, le=32, description="Words per shingle.")
    bands: int = Field(14, ge=1, le=512)
    rows: int = Field(8, ge=1, le=64, description="Signature values per band; num_perm = bands * rows.")
    threshold: float | None = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Keep an LSH candidate pair only if its estimated Jaccard reaches this; null keeps every candidate.",
    )
    verify_sketch: int = Field(
        128,
        ge=0,
        le=4096,
        description="Verify candidates on bottom-k sketches of this size (exact Jaccard for unions up to k shingles); 0 verifies on the MinHash signatures.",
    )
    seed: int = Field(1, description="Seed of the hash functions (fixed so signatures are comparable across runs).")
    engine: Literal["numpy", "datasketch", "rensa"] = Field(
        "numpy", description="Signature engine; numpy is the fast default."
    )
    lowercase: bool = True
    batch_size: int = Field(4096, ge=1, description="Documents per signature batch (bounds memory in summarize).")
    max_bucket_all_pairs: int = Field(
        16, ge=2, description="Buckets up to this size compare all pairs; larger ones only to their first member."
    )


class MinHashDedup(DedupStage):
    type = "dedup_minhash"
    Options = MinHashOptions
    reason: ClassVar[str] = "near_duplicate"
    score_name: ClassVar[str] = "kept_id"

    @property
    def num_perm(self) -> int:
        return self.options.bands * self.options.rows

    def setup(self) -> None:
        o = self.options
        self.hasher = MinHasher(self.num_perm, o.ngram, o.seed, o.engine, o.lowercase)

    def summary_schema(self) -> pa.Schema:
        # uint32 rows as fixed-size binary: written and read back as one flat
        # buffer (a list<uint32> column costs repetition levels per value).
        return pa.schema(
            [
                ("id", pa.string()),
                ("words", pa.int32()),
                ("sig", pa.binary(4 * self.num_perm)),
                ("sketch", pa.binary(4 * max(self.options.verify_sketch, 1))),
            ]
        )

    def signatures(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.options.verify_sketch
        sigs, words, sketches = [], [], []
        for start in range(0, len(texts), self.options.batch_size):
            s, w, b = self.hasher(texts.slice(start, self.options.batch_size), k)
            sigs.append(s)
            words.append(w)
            sketches.append(b)
        if not sigs:
            return np.zeros((0, self.num_perm), np.uint32), np.zeros(0, np.int64), np.zeros((0, k), np.uint32)
        return np.concatenate(sigs), np.concatenate(words), np.concatenate(sketches)

    def summarize(self, table: pa.Table, shard: Shard) -> pa.Table:
        texts = self.texts(table, shard)
        sig, words, sketch = self.signatures(texts)
        if self.options.verify_sketch == 0:
            sketch = np.zeros((len(sig), 1), np.uint32)
        ids = table.column(self.options.id_column).cast(pa.string()) if table.num_rows else pa.array([], pa.string())
        schema = self.summary_schema()
        return pa.table(
            {
                "id": ids,
                "words": pa.array(np.minimum(words, np.iinfo(np.int32).max).astype(np.int32)),
                "sig": rows_as_binary(sig, schema.field("sig").type),
                "sketch": rows_as_binary(sketch, schema.field("sketch").type),
            },
            schema=schema,
        )

    def reduce(self, summaries: list[Path], state_dir: Path) -> None:
        o = self.options
        started = time.perf_counter()
        P = self.num_perm
        counts = np.array([pq.ParquetFile(p).metadata.num_rows for p in summaries], np.int64)
        offsets = Offsets(counts)
        n = offsets.total
        work = state_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        sig_path = work / "signatures.u32"
        band_paths = [work / f"band-{b:03d}.u64" for b in range(o.bands)]

        # 1. stream: one shard's summary in memory at a time
        has_words = np.zeros(n, bool)
        K = o.verify_sketch
        sketch_path = work / "sketches.u32"
        with open(sig_path, "wb") as sig_out, open(sketch_path, "wb") as sketch_out:
            band_out = [open(p, "wb") for p in band_paths]
            try:
                for s, path in enumerate(summaries):
                    start = int(offsets.starts[s])
                    # Batches, not whole files: decoding a list column at once
                    # costs several times its size in transient buffers.
                    for batch in pq.ParquetFile(path).iter_batches(
                        batch_size=o.batch_size, columns=["words", "sig", "sketch"]
                    ):
                        sig = binary_as_rows(batch.column(1), P)
                        has_words[start : start + len(sig)] = batch.column(0).to_numpy() > 0
                        start += len(sig)
                        sig.tofile(sig_out)
                        if K:
                            binary_as_rows(batch.column(2), K).tofile(sketch_out)
                        keys = band_hashes(sig, o.bands, o.rows)
                        for b in range(o.bands):
                            keys[b].tofile(band_out[b])
                        del batch, sig, keys
            finally:
                for f in band_out:
                    f.close()

        # 2. band by band: sort the keys, pair documents sharing one
        pairs = np.zeros((0, 2), np.int64)
        lsh_pairs = 0
        for b in range(o.bands):
            keys = np.fromfile(band_paths[b], dtype=np.uint64)
            found = bucket_pairs(keys, has_words, o.max_bucket_all_pairs)
            lsh_pairs += len(found)
            pairs = unique_pairs(np.concatenate([pairs, found]), max(n, 1))
            del keys, found
            os.remove(band_paths[b])

        # 3. verify candidates on sketches (or signatures), 4. cluster
        involved = np.unique(pairs) if len(pairs) else np.zeros(0, np.int64)
        compact = gather_rows(sketch_path, n, K, involved) if K else gather_rows(sig_path, n, P, involved)
        similarity_of = sketch_jaccard if K else estimated_jaccard
        local = np.searchsorted(involved, pairs) if len(pairs) else pairs
        similarity = similarity_of(compact, local) if len(pairs) else np.zeros(0, np.float32)
        verified = pairs if o.threshold is None else pairs[similarity >= o.threshold]
        labels = components(n, verified)
        dropped = np.flatnonzero(labels != np.arange(n))
        kept = labels[dropped]
        to_kept = (
            np.searchsorted(involved, np.stack([dropped, kept], axis=1)) if len(dropped) else np.zeros((0, 2), np.int64)
        )
        sim_to_kept = similarity_of(compact, to_kept) if len(dropped) else np.zeros(0, np.float32)
        del compact
        os.remove(sig_path)
        os.remove(sketch_path)
        work.rmdir()
        report = {
            "documents": n,
            "without_words": int(n - has_words.sum()),
            "candidate_pairs": len(pairs),
            "lsh_pairs_before_merge": int(lsh_pairs),
            "verified_pairs": len(verified),
            "clusters": len(np.unique(kept)),
            "dropped": len(dropped),
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.write_drops(state_dir, summaries, offsets, dropped, kept, sim_to_kept, report, has_words)


def rows_as_binary(rows: np.ndarray, typ: pa.DataType) -> pa.Array:
    data = np.ascontiguousarray(rows, dtype=np.uint32)
    return pa.Array.from_buffers(typ, len(data), [None, pa.py_buffer(data.tobytes())])


def binary_as_rows(column: pa.Array, width: int) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.zeros((0, width), np.uint32)
    if column.null_count:
        raise ValueError("dedup_minhash summary has null signatures")
    buf = column.buffers()[1]
    start = column.offset * width * 4
    return np.frombuffer(buf, dtype=np.uint32, count=len(column) * width, offset=start).reshape(-1, width)
