"""The two on-disk formats `synth pack` writes.

Native (what `synth.loader` reads; every file memory-mappable, little-endian):

    tokens.bin          [sequences, seq_len] uint16 (vocab < 65,500) or int32
    loss_mask.bin       [sequences, seq_len] uint8, 1 = trained on (padding is 0)
    documents.bin       [documents, 6] int64: sequence, offset, length, source, domain, kind
                        (the last three index manifest["vocab"]["source" | "domain" | "kind"])
    sequence_index.bin  [sequences + 1] int64: documents of sequence i are rows
                        sequence_index[i] .. sequence_index[i+1] of documents.bin
    packing.parquet     one row per input record and placement: where it went or why not
    manifest.json       shapes, dtypes, tokenizer, mix target and actual, counts, sha256s

Megatron: PREFIX_text_document.bin / .idx exactly as Megatron-Core's IndexedDataset
reads them, one document per record (end-of-document token included), plus
`blend.txt` for `--data-path`.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
# Megatron-Core's DType codes (indexed_dataset.py).
MEGATRON_DTYPE_CODES = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}
UINT16_VOCAB_LIMIT = 65500  # Megatron's DType.optimal_dtype cut-off
# Sequences are written in blocks of at most this many tokens (memory stays bounded).
BLOCK_TOKENS = 1 << 22


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size < UINT16_VOCAB_LIMIT else np.int32


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class NativeWriter:
    DOC_FIELDS = ("sequence", "offset", "length", "source", "domain", "kind")

    def __init__(self, folder: Path, seq_len: int, dtype: type, pad_id: int):
        self.folder = folder
        self.seq_len = seq_len
        self.dtype = dtype
        self.pad_id = pad_id
        self.tokens = open(folder / "tokens.bin", "wb")
        self.mask = open(folder / "loss_mask.bin", "wb")
        self.docs = open(folder / "documents.bin", "wb")
        self.seq_index = open(folder / "sequence_index.bin", "wb")
        self.seq_index.write(np.int64(0).tobytes())
        self.n_seq = 0
        self.n_docs = 0
        self.tokens_written = 0  # document tokens, padding excluded
        self.trained_tokens = 0

    def write_sequences(self, sequences: list[list[tuple]]) -> list[tuple[int, int]]:
        """Appends sequences, each a list of docs: (tokens, mask, source_code,
        domain_code, kind_code, trained tokens). Returns (sequence, offset) of every
        doc, in order.

        Whole blocks of sequences at a time, in numpy: one write per file and block
        instead of four per sequence (a window emits hundreds of sequences at once)."""
        placed: list[tuple[int, int]] = []
        per_block = max(1, BLOCK_TOKENS // self.seq_len)
        for start in range(0, len(sequences), per_block):
            placed += self._write_block(sequences[start : start + per_block])
        return placed

    def _write_block(self, sequences: list[list[tuple]]) -> list[tuple[int, int]]:
        docs = [doc for seq in sequences for doc in seq]
        docs_per_seq = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        lengths = np.fromiter((len(doc[0]) for doc in docs), dtype=np.int64, count=len(docs))
        first = np.cumsum(docs_per_seq) - docs_per_seq  # each sequence's first doc
        before = np.cumsum(lengths) - lengths  # tokens before each doc, over the block
        offsets = before - np.repeat(before[first], docs_per_seq)
        used = np.add.reduceat(lengths, first)
        filled = np.arange(self.seq_len) < used[:, None]  # row-major: docs in order
        tok = np.full((len(sequences), self.seq_len), self.pad_id, dtype=self.dtype)
        tok[filled] = np.concatenate([doc[0] for doc in docs])
        mask = np.zeros((len(sequences), self.seq_len), dtype=np.uint8)
        mask[filled] = np.concatenate([doc[1] for doc in docs])
        seq_ids = np.repeat(np.arange(self.n_seq, self.n_seq + len(sequences), dtype=np.int64), docs_per_seq)
        codes = np.array([doc[2:5] for doc in docs], dtype=np.int64).reshape(-1, 3)
        rows = np.column_stack([seq_ids, offsets, lengths, codes])
        self.trained_tokens += sum(doc[5] for doc in docs)
        self.tokens_written += int(lengths.sum())
        self.tokens.write(tok.tobytes())
        self.mask.write(mask.tobytes())
        self.docs.write(rows.tobytes())
        self.seq_index.write((self.n_docs + np.cumsum(docs_per_seq)).tobytes())
        self.n_seq += len(sequences)
        self.n_docs += len(docs)
        return list(zip(seq_ids.tolist(), offsets.tolist()))

    def close(self) -> list[str]:
        for fh in (self.tokens, self.mask, self.docs, self.seq_index):
            fh.close()
        return ["tokens.bin", "loss_mask.bin", "documents.bin", "sequence_index.bin"]


class MegatronWriter:
    """One PREFIX_text_document.bin/.idx pair, documents appended in order."""

    def __init__(self, prefix: Path, dtype: type):
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.bin = open(f"{prefix}.bin", "wb")
        self.lengths: list[int] = []
        self.tokens = 0

    def add(self, tokens: np.ndarray) -> int:
        self.bin.write(tokens.astype(self.dtype).tobytes())
        self.lengths.append(len(tokens))
        self.tokens += len(tokens)
        return len(self.lengths) - 1

    def close(self) -> list[str]:
        self.bin.close()
        write_megatron_index(Path(f"{self.prefix}.idx"), self.lengths, self.dtype.type)
        return [Path(f"{self.prefix}.bin").name, Path(f"{self.prefix}.idx").name]


def write_megatron_index(path: Path, lengths: list[int], dtype: type) -> None:
    """34-byte header, then int32 sequence lengths, int64 byte pointers and int64
    document indices (one sequence per document: 0, 1, ..., n)."""
    n = len(lengths)
    lens = np.asarray(lengths, dtype=np.int32)
    pointers = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(lens[:-1].astype(np.int64) * np.dtype(dtype).itemsize, out=pointers[1:])
    doc_idx = np.arange(n + 1, dtype=np.int64)
    with open(path, "wb") as fh:
        fh.write(MEGATRON_MAGIC)
        fh.write(struct.pack("<Q", MEGATRON_VERSION))
        fh.write(struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]))
        fh.write(struct.pack("<Q", n))
        fh.write(struct.pack("<Q", n + 1))
        fh.write(lens.tobytes())
        fh.write(pointers.tobytes())
        fh.write(doc_idx.tobytes())


def read_megatron_index(path: Path) -> dict:
    """Our own reader of .idx, for inspection without megatron-core."""
    raw = Path(path).read_bytes()
    if raw[:9] != MEGATRON_MAGIC:
        raise ValueError(f"{path}: not a Megatron index (bad magic)")
    (version,) = struct.unpack_from("<Q", raw, 9)
    (code,) = struct.unpack_from("<B", raw, 17)
    n_seq, n_doc = struct.unpack_from("<QQ", raw, 18)
    off = 34
    lens = np.frombuffer(raw, np.int32, n_seq, off)
    off += 4 * n_seq
    ptrs = np.frombuffer(raw, np.int64, n_seq, off)
    off += 8 * n_seq
    docs = np.frombuffer(raw, np.int64, n_doc, off)
    dtype = {v: k for k, v in MEGATRON_DTYPE_CODES.items()}[code]
    return {"version": version, "dtype": dtype, "lengths": lens, "pointers": ptrs, "document_indices": docs}
