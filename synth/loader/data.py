"""Memory-mapped view of a native pack, and the batch built from a list of sequences.

Labels follow the Hugging Face convention (not shifted: the model predicts labels[t]
from tokens before t). A label is -100 where the loss mask is off, on padding, and on
the first token of every document, so no prediction crosses a document boundary.
Positions restart at 0 at every document; `cu_seqlens` (int32, over the batch
flattened to one row, as variable-length attention kernels take it) and `max_seqlen`
give the segments; padding at the end of a sequence is a segment of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PAD_NAME = "<pad>"


class PackError(ValueError):
    pass


class PackedData:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise PackError(f"{path}: no manifest.json (not a finished `synth pack --format native` output)")
        self.manifest = json.loads(mf.read_text())
        if self.manifest.get("format") != "synth-pack":
            raise PackError(f"{path}: format {self.manifest.get('format')!r} is not the native synth-pack format")
        self.seq_len = int(self.manifest["seq_len"])
        self.n_seq = int(self.manifest["sequences"])
        self.n_docs = int(self.manifest["documents"])
        self.fingerprint = self.manifest["fingerprint"]
        self.vocab = self.manifest["vocab"]
        dtype = np.dtype(self.manifest["dtype"])
        shape = (self.n_seq, self.seq_len)
        self.tokens = (
            np.memmap(self.path / "tokens.bin", dtype=dtype, mode="r", shape=shape)
            if self.n_seq
            else np.zeros(shape, dtype)
        )
        self.mask = (
            np.memmap(self.path / "loss_mask.bin", dtype=np.uint8, mode="r", shape=shape)
            if self.n_seq
            else np.zeros(shape, np.uint8)
        )
        self.documents = (
            np.memmap(self.path / "documents.bin", dtype=np.int64, mode="r", shape=(self.n_docs, 6))
            if self.n_docs
            else np.zeros((0, 6), np.int64)
        )
        self.sequence_index = np.fromfile(self.path / "sequence_index.bin", dtype=np.int64)

    def __len__(self) -> int:
        return self.n_seq

    # DataLoader workers started by spawn/forkserver get the path and map the files
    # again, instead of a pickled copy of every token.
    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def docs_of(self, seq: int) -> np.ndarray:
        """Rows (sequence, offset, length, source, domain, kind) of the documents in `seq`."""
        return np.asarray(self.documents[self.sequence_index[seq] : self.sequence_index[seq + 1]])


def build_batch(data: PackedData, seqs: np.ndarray | list[int]) -> dict:
    """Numpy batch of the given sequences (see the module docstring for the fields)."""
    seqs = np.asarray(seqs, dtype=np.int64)
    b, L = len(seqs), data.seq_len
    input_ids = np.asarray(data.tokens[seqs], dtype=np.int64)
    mask = np.asarray(data.mask[seqs], dtype=bool)
    labels = np.where(mask, input_ids, -100)
    position_ids = np.zeros((b, L), dtype=np.int64)
    segment_ids = np.zeros((b, L), dtype=np.int32)
    token_domain = np.full((b, L), -1, dtype=np.int32)
    token_kind = np.full((b, L), -1, dtype=np.int32)
    cu = [0]
    seg_domain, seg_kind, seg_source = [], [], []
    seg = 0
    for row, s in enumerate(seqs):
        docs = data.docs_of(int(s))
        end = 0
        for _, off, n, src, dom, kind in docs:
            position_ids[row, off : off + n] = np.arange(n)
            labels[row, off] = -100
            segment_ids[row, off : off + n] = seg
            token_domain[row, off : off + n] = dom
            token_kind[row, off : off + n] = kind
            seg_domain.append(data.vocab["domain"][dom])
            seg_kind.append(data.vocab["kind"][kind])
            seg_source.append(data.vocab["source"][src])
            cu.append(row * L + off + n)
            seg += 1
            end = off + n
        if end < L:  # padding: its own segment, never trained on
            position_ids[row, end:] = np.arange(L - end)
            labels[row, end:] = -100
            segment_ids[row, end:] = seg
            seg_domain.append(PAD_NAME)
            seg_kind.append(PAD_NAME)
            seg_source.append(PAD_NAME)
            cu.append((row + 1) * L)
            seg += 1
    cu_seqlens = np.asarray(cu, dtype=np.int32)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "cu_seqlens": cu_seqlens,
        "max_seqlen": int(np.diff(cu_seqlens).max()) if len(cu_seqlens) > 1 else 0,
        "segment_ids": segment_ids,
        "token_domain": token_domain,
        "token_kind": token_kind,
        "segment_domain": seg_domain,
        "segment_kind": seg_kind,
        "segment_source": seg_source,
        "sequence_ids": seqs.copy(),
    }
