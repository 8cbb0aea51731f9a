"""fastText's prediction for word-unigram classifiers, vectorised in numpy.

The first model of the packaged domain cascade reads word unigrams only (no word
n-grams, no character n-grams). For such a model fastText's per-text work is reading the
line through a C++ stream a byte at a time, one hash-table probe per word, and the
binding's Python objects per text; that was two thirds of a label's time. Here a whole
batch is one buffer: tokens are found by byte classes, looked up by their bytes in a
numpy hash table, and the hidden vectors, logits and softmax are computed in the same
float32 operations and order as fastText's C++ (sequential sums, no fused multiply-add),
so labels and confidences are fastText's own (tests compare them on every text of the
packaged data).

Tokens are those of `domain_tokens_many` (the domain model's normalisation: lowercase
ASCII, control characters blank, each ASCII punctuation mark its own token) split on
whitespace as fastText splits a line; a word outside the vocabulary counts nothing, and
each line ends with fastText's end-of-line word `</s>`.
"""

from __future__ import annotations

import string
import struct
from pathlib import Path

import numpy as np

_MAGIC, _VERSION = 793712314, 12
_LOSS_SOFTMAX, _MODEL_SUPERVISED = 3, 3
_KSUB = 256  # centroids per sub-quantizer of a quantized (.ftz) matrix
_EOS = b"</s>"
_CHUNK = 4096  # texts per vectorised pass: bounded memory, warm caches

# Byte classes of a normalised buffer: blank (ends a token), punctuation (a token of
# its own), word byte (runs of them are one token; UTF-8 continuation bytes included).
_BLANK, _PUNCT, _WORD = 0, 1, 2
_CLASS = np.full(256, _WORD, dtype=np.uint8)
_CLASS[:33] = _BLANK
_CLASS[127] = _BLANK
_CLASS[list(string.punctuation.encode())] = _PUNCT
_SEP = 0x1F  # joins the texts of a batch (see domain_model._SEP)

# Key of a token of at most 8 bytes: its bytes as a little-endian integer (no token
# holds a zero byte, so the zero padding is unambiguous). Longer tokens: 8-byte parts.
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_SHORT, _PARTS = 8, 3  # tokens of up to 24 bytes are looked up in numpy, longer in a dict
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def word(self) -> bytes:
        end = self.data.index(b"\0", self.pos)
        word, self.pos = self.data[self.pos : end], end + 1
        return word


def _dense(reader: _Reader) -> np.ndarray:
    rows, cols = reader.unpack("qq")
    return reader.array("<f4", rows * cols).reshape(rows, cols)


def _product_quantizer(reader: _Reader) -> tuple[int, int, int, np.ndarray]:
    dim, nsubq, dsub, lastdsub = reader.unpack("4i")
    return nsubq, dsub, lastdsub, reader.array("<f4", dim * _KSUB)


def _decode(codes: np.ndarray, nsubq: int, dsub: int, lastdsub: int, centroids: np.ndarray) -> np.ndarray:
    """Rows of a product-quantized matrix: sub-vector q of row i is centroid codes[i, q]
    of sub-quantizer q (the last one `lastdsub` wide)."""
    rows = np.empty((codes.shape[0], dsub * (nsubq - 1) + lastdsub), dtype=np.float32)
    for q in range(nsubq):
        width = lastdsub if q == nsubq - 1 else dsub
        table = centroids[q * _KSUB * dsub : q * _KSUB * dsub + _KSUB * width].reshape(_KSUB, width)
        rows[:, q * dsub : q * dsub + width] = table[codes[:, q]]
    return rows


def _quantized(reader: _Reader) -> np.ndarray:
    (qnorm,) = reader.unpack("?")
    rows, _cols = reader.unpack("qq")
    (codesize,) = reader.unpack("i")
    codes = reader.array(np.uint8, codesize)
    nsubq, dsub, lastdsub, centroids = _product_quantizer(reader)
    matrix = _decode(codes.reshape(rows, nsubq), nsubq, dsub, lastdsub, centroids)
    if qnorm:  # each row scaled by its quantized norm, as fastText adds it (one float product)
        norm_codes = reader.array(np.uint8, rows)
        norms = _decode(norm_codes.reshape(rows, 1), *_product_quantizer(reader))[:, 0]
        matrix = (matrix * norms[:, None]).astype(np.float32)
    return matrix


class _Table:
    """An open-addressing hash table from token keys (tuples of uint64 parts) to word
    ids, probed for a whole array of keys at once."""

    def __init__(self, keys: list[tuple[int, ...]], ids: list[int], parts: int):
        bits = max(4, (4 * max(len(keys), 1) - 1).bit_length())  # load at most 1/4: short probes
        self.shift, self.mask = np.uint64(64 - bits), (1 << bits) - 1
        self.keys = [np.zeros(1 << bits, dtype=np.uint64) for _ in range(parts)]
        self.ids = np.full(1 << bits, -1, dtype=np.int32)
        homes = self._slots([np.array([key[p] for key in keys], dtype=np.uint64) for p in range(parts)])
        for key, wid, slot in zip(keys, ids, homes.tolist()):
            while self.ids[slot] >= 0:
                slot = (slot + 1) & self.mask
            for part, k in zip(self.keys, key):
                part[slot] = k
            self.ids[slot] = wid

    def _slots(self, parts: list[np.ndarray]) -> np.ndarray:
        mixed = parts[0] * _MIX[0]
        for part, mult in zip(parts[1:], _MIX[1:]):
            mixed ^= part * mult
        return (mixed >> self.shift).astype(np.int64)

    def lookup(self, parts: list[np.ndarray]) -> np.ndarray:
        out = np.full(len(parts[0]), -1, dtype=np.int32)
        active = np.arange(len(parts[0]))
        slots = self._slots(parts)
        while active.size:
            first = self.keys[0][slots]
            hit = first == parts[0][active]
            for table_part, part in zip(self.keys[1:], parts[1:]):
                hit &= table_part[slots] == part[active]
            out[active[hit]] = self.ids[slots[hit]]
            more = ~hit & (first != 0)  # an empty slot ends the probe: not in the vocabulary
            active, slots = active[more], (slots[more] + 1) & self.mask
        return out


class UnigramFastText:
    """Predicts like fastText's `predict(lines, k=1)` for a supervised softmax model of
    word unigrams (`wordNgrams` 1, no character n-grams), from the model file itself."""

    def __init__(self, labels: list[str], words: list[bytes], input_matrix: np.ndarray, output_matrix: np.ndarray):
        self.labels = labels
        self.input = np.vstack([input_matrix[: len(words)], np.zeros((1, input_matrix.shape[1]), np.float32)])
        self.output = np.ascontiguousarray(output_matrix, dtype=np.float32)
        vocab = {w: i for i, w in enumerate(words)}
        self.eos = vocab.get(_EOS, -1)
        by_parts: dict[int, tuple[list, list]] = {1: ([], []), _PARTS: ([], [])}
        self.long_words: dict[bytes, int] = {}
        for word, wid in vocab.items():
            if len(word) <= _SHORT:
                by_parts[1][0].append((int.from_bytes(word, "little"),))
                by_parts[1][1].append(wid)
            elif len(word) <= _SHORT * _PARTS:
                padded = word.ljust(_SHORT * _PARTS, b"\0")
                by_parts[_PARTS][0].append(
                    tuple(int.from_bytes(padded[i : i + _SHORT], "little") for i in range(0, len(padded), _SHORT))
                )
                by_parts[_PARTS][1].append(wid)
            else:
                self.long_words[word] = wid
        self.short_table = _Table(*by_parts[1], parts=1)
        self.long_table = _Table(*by_parts[_PARTS], parts=_PARTS)

    @classmethod
    def from_file(cls, path: Path | str) -> UnigramFastText | None:
        """The predictor of a fastText model file, or None when the model is not a
        supervised softmax model of word unigrams (fastText itself predicts those) or
        the file is not one this reader knows."""
        try:
            return cls._read(_Reader(Path(path).read_bytes()))
        except (struct.error, ValueError, IndexError):
            return None

    @classmethod
    def _read(cls, reader: _Reader) -> UnigramFastText | None:
        if reader.unpack("ii") != (_MAGIC, _VERSION):
            return None
        _dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, _bucket, _minn, maxn, _lr_rate = reader.unpack(
            "12i"
        )
        reader.unpack("d")
        if model != _MODEL_SUPERVISED or loss != _LOSS_SOFTMAX or word_ngrams != 1 or maxn > 0:
            return None
        size, _nwords, _nlabels = reader.unpack("3i")
        _ntokens, prune_size = reader.unpack("qq")
        words, labels = [], []
        for _ in range(size):
            word = reader.word()
            _count, kind = reader.unpack("qb")
            (words if kind == 0 else labels).append(word)
        reader.pos += 8 * max(prune_size, 0)  # pruned n-gram buckets: none without n-grams
        (quantized,) = reader.unpack("?")
        input_matrix = _quantized(reader) if quantized else _dense(reader)
        (quantized_output,) = reader.unpack("?")
        output_matrix = _quantized(reader) if quantized and quantized_output else _dense(reader)
        if output_matrix.shape[0] != len(labels) or input_matrix.shape[0] < len(words):
            return None
        return cls([lab.decode("utf-8", "replace") for lab in labels], words, input_matrix, output_matrix)

    def predict_normalised(self, buffer: bytes, n_texts: int) -> tuple[list[int], list[float]]:
        """Index (into `labels`) of the top label and its probability, as fastText
        reports them, of each text of a normalised buffer (lowercased, control characters
        blank, texts joined by 0x1F). A text without a known word (a model without the
        end-of-line word) has no label: index -1, probability 0."""
        label_ids, confs_out = [], []
        for best, confs in self._chunks(buffer, n_texts):
            label_ids += best.tolist()
            confs_out += np.minimum(confs.astype(np.float64), 1.0).tolist()
        return label_ids, confs_out

    def _chunks(self, buffer: bytes, n_texts: int):
        start = 0
        seps = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == _SEP)
        for first in range(0, n_texts, _CHUNK):
            last = min(first + _CHUNK, n_texts)
            end = int(seps[last - 1]) if last - 1 < len(seps) else len(buffer)
            yield self._predict_chunk(buffer[start:end], last - first)
            start = end + 1

    def _token_ids(self, buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(word id, text index) of each token of the buffer in order; -1 for words
        outside the vocabulary."""
        padded = b" " + buffer + b" " * (_SHORT * _PARTS)
        data = np.frombuffer(padded, dtype=np.uint8)
        cls = _CLASS[data]
        word = cls == _WORD
        inside = word[1:] & word[:-1]  # byte i and i+1 in one word
        starts = np.flatnonzero((cls[1:] != _BLANK) & ~inside) + 1
        ends = np.flatnonzero((cls[:-1] != _BLANK) & ~inside) + 1
        lengths = ends - starts
        text_of = np.cumsum(data == _SEP, dtype=np.int32)[starts]
        windows = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
        ids = np.full(len(starts), -1, dtype=np.int32)
        short = np.flatnonzero(lengths <= _SHORT)
        ids[short] = self.short_table.lookup([windows[starts[short]] & _LOW_BYTES[lengths[short]]])
        long = np.flatnonzero((lengths > _SHORT) & (lengths <= _SHORT * _PARTS))
        if long.size:
            s, n = starts[long], lengths[long]
            parts = [windows[s + i * _SHORT] & _LOW_BYTES[np.clip(n - i * _SHORT, 0, _SHORT)] for i in range(_PARTS)]
            ids[long] = self.long_table.lookup(parts)
        for i in np.flatnonzero(lengths > _SHORT * _PARTS).tolist():
            ids[i] = self.long_words.get(padded[starts[i] : ends[i]], -1)
        return ids, text_of

    def _predict_chunk(self, buffer: bytes, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
        ids, text_of = self._token_ids(buffer)
        known = ids >= 0
        ids, text_of = ids[known], text_of[known]
        counts = np.bincount(text_of, minlength=n_texts)
        # fastText sums a line's rows one after another in float32. Here round p adds the
        # p-th word of every text that has one, so each text keeps its order; with the
        # texts ranked longest first, the texts of round p are a prefix of the ranking
        # and each round is one gather and one slice addition.
        ranking = np.argsort(-counts, kind="stable")
        rank = np.empty(n_texts, dtype=np.int64)
        rank[ranking] = np.arange(n_texts)
        position = np.arange(len(ids)) - (np.cumsum(counts) - counts)[text_of]
        small = np.int16 if n_texts < 2**15 and (not len(counts) or counts.max() < 2**15) else np.int64
        by_rank = np.argsort(rank[text_of].astype(small), kind="stable")
        order = by_rank[np.argsort(position[by_rank].astype(small), kind="stable")]
        rows = ids[order]
        width = np.bincount(position, minlength=1)  # texts with a p-th word
        ranked = np.zeros((n_texts, self.input.shape[1]), dtype=np.float32)
        start = 0
        for k in width.tolist():
            ranked[:k] += np.take(self.input, rows[start : start + k], axis=0)
            start += k
        hidden = ranked[rank]
        if self.eos >= 0:
            hidden += self.input[self.eos]
            counts = counts + 1
        # 1/n in double, stored as float (fastText's Vector::mul); empty lines stay zero.
        hidden *= (1.0 / np.maximum(counts, 1)).astype(np.float32)[:, None]
        best, conf = self._softmax_top(np.ascontiguousarray(hidden.T))
        empty = counts == 0
        if empty.any():
            best[empty], conf[empty] = -1, 0.0
        return best, conf

    def _softmax_top(self, hidden_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_labels, dim = self.output.shape
        logits = np.empty((n_labels, hidden_t.shape[1]), dtype=np.float32)
        for i in range(n_labels):  # a dot product summed in dimension order, as fastText's dotRow
            acc = np.zeros(hidden_t.shape[1], dtype=np.float32)
            for j in range(dim):
                acc += hidden_t[j] * self.output[i, j]
            logits[i] = acc
        top = logits.max(axis=0)
        exps = np.exp((logits - top).astype(np.float64)).astype(np.float32)
        total = np.zeros(hidden_t.shape[1], dtype=np.float32)
        for i in range(n_labels):
            total += exps[i]
        probs = exps / total
        # fastText ranks log(p + 1e-5) stored as float and reports exp of it; on a tie the
        # later label wins its heap.
        logs = np.log(probs.astype(np.float64) + 1e-5).astype(np.float32)
        best = n_labels - 1 - logs[::-1].argmax(axis=0)
        conf = np.exp(logs[best, np.arange(hidden_t.shape[1])].astype(np.float64)).astype(np.float32)
        return best, conf
