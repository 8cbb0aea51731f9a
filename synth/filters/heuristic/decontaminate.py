"""Decontamination: drop (or cut) text that overlaps evaluation benchmarks.

Record shape: any columns; the text checked is `columns` (default `text`). A
column holding a list of {role, content} messages (or its JSON string) is checked
message by message. Writes `decontam_hits` (int: matching n-grams) and
`decontam_match` (JSON: per benchmark hit, its item id and the first matching
n-gram, or null). `decontaminate` drops records with a hit (scoring never changes
text); the `decontaminate_cut` transform (also what `action: cut` runs) removes
the text around each hit instead.

The rule is GPT-3's: an n-gram (n = 13) of normalised tokens (lowercase, any
run of non-word characters is a separator, so case, punctuation, whitespace and
line breaks do not matter) shared with a benchmark item. Benchmark items shorter
than n tokens (many MMLU questions) are matched as a whole when they have at least
`min_tokens` tokens (GPT-3 used the shortest item length instead, which makes
every item's n-grams tiny and noisy); shorter items are skipped and counted,
because a 5-word question also occurs in ordinary text.

Index: each token hashes to 64 bits (a polynomial over its bytes, finalised;
pure-ASCII text is hashed a batch at a time with numpy prefix sums), n-grams to
a polynomial rolling hash over those (wrapping uint64 arithmetic), kept as a
sorted array per gram length. A shard's texts are looked up in one batch: a 2 MB
bit filter rejects most grams with one memory access, `searchsorted` confirms
the rest. The index is cached on
disk keyed by the benchmark files' content hash and the options that shape it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from synth.core.stage import Filter, FilterOptions, Shard, Stage, add_columns, write_removed_rows

INDEX_FORMAT = 2
_TOKEN = re.compile(r"\w+")
_FILTER_BITS = 24  # 2 MB of bits: stays in cache, ~3% false positives at 460k grams
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the rolling hash
BENCHMARK_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".csv.gz")
ID_FIELDS = ("task_id", "id", "problem_id", "question_id", "idx")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


# Token hash: a polynomial in _Q over the token's code points (lowest power
# first), then the splitmix64 finaliser. A polynomial is what lets a whole batch
# of texts be hashed at once with numpy prefix sums over their UTF-32 code
# points; benchmark items and texts with hits take the regex path and hash each
# distinct token in Python, to the same value.
_M64 = (1 << 64) - 1
_Q = 0x100000001B3
_Q_INV = pow(_Q, -1, 1 << 64)
_CHUNK = 1 << 21  # characters per vectorised batch: bounds the prefix arrays (16 MB each)
_WORD_TABLE: np.ndarray | None = None


def _word_table() -> np.ndarray:
    """Per code point: does `\\w` match it (str.isalnum() or underscore)."""
    global _WORD_TABLE
    if _WORD_TABLE is None:
        table = np.zeros(0x110000, dtype=bool)
        table[[c for c in range(0x110000) if chr(c).isalnum()]] = True
        table[ord("_")] = True
        _WORD_TABLE = table
    return _WORD_TABLE


def _finalize(h):
    """splitmix64's finaliser; works on Python ints (masked) and uint64 arrays (wrapping)."""
    if isinstance(h, int):
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
        return h ^ (h >> 31)
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_token(token: str) -> int:
    h, q = 0, 1
    for ch in token:
        h = (h + ord(ch) * q) & _M64
        q = (q * _Q) & _M64
    return _finalize(h)


_POWERS: dict[str, np.ndarray] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Q^i and Q^-i for i < n (wrapping uint64)."""
    if len(_POWERS.get("q", ())) < n:
        size = max(n, _CHUNK + 2)
        with np.errstate(over="ignore"):
            q = np.full(size, _Q, dtype=np.uint64)
            q[0] = 1
            qi = np.full(size, _Q_INV, dtype=np.uint64)
            qi[0] = 1
            _POWERS["q"], _POWERS["qi"] = np.cumprod(q, dtype=np.uint64), np.cumprod(qi, dtype=np.uint64)
    return _POWERS["q"], _POWERS["qi"]


def vector_token_hashes(texts: Sequence[str]) -> list[np.ndarray]:
    """Token hashes per text, each equal to hash_token over tokenize(text)."""
    joined = "\n".join(texts).lower()
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    edges = np.diff(np.concatenate(([0], _word_table()[cps].view(np.int8), [0])))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    q, qi = _powers(len(cps) + 1)
    prefix = np.zeros(len(cps) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum(cps.astype(np.uint64) * q[: len(cps)], out=prefix[1:])
        hashes = _finalize((prefix[ends] - prefix[starts]) * qi[starts])
    # str.lower() can change a text's length (e.g. U+0130): locate texts in the joined string.
    lengths = [len(t.lower()) if not t.isascii() else len(t) for t in texts]
    doc_offsets = np.cumsum([n + 1 for n in lengths])[:-1]
    return np.split(hashes, np.searchsorted(starts, doc_offsets))


class TokenHasher:
    """Token hashes, memoised per distinct token (a corpus has few)."""

    def __init__(self):
        self._cache: dict[str, int] = {}

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        cache = self._cache
        get = cache.get
        values = [get(t) for t in tokens]
        if None in values:
            if len(cache) > 5_000_000:
                cache.clear()  # bound memory on huge vocabularies
            for i, v in enumerate(values):
                if v is None:
                    tok = tokens[i]
                    v = get(tok)
                    if v is None:
                        v = cache[tok] = hash_token(tok)
                    values[i] = v
        return np.array(values, dtype=np.uint64)

    def many(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token hashes per text, vectorised in batches of about _CHUNK characters."""
        out: list[np.ndarray] = []
        batch: list[str] = []
        size = 0
        for text in texts:
            batch.append(text or "")
            size += len(batch[-1]) + 1
            if size >= _CHUNK:
                out += vector_token_hashes(batch)
                batch, size = [], 0
        if batch:
            out += vector_token_hashes(batch)
        return out


def gram_hashes(token_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-gram (position i covers tokens i..i+n-1)."""
    count = len(token_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            acc = acc * _MULT + token_hashes[j : j + count]
    return acc


# -- benchmarks ---------------------------------------------------------------------


@dataclass
class BenchmarkItem:
    benchmark: str
    item: str
    text: str


def benchmark_files(spec: str) -> tuple[str, list[Path]]:
    """`[NAME=]PATH`; a directory means every benchmark file under it."""
    name, sep, path_s = spec.partition("=")
    if not sep:
        name, path_s = "", spec
    path = Path(path_s)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(BENCHMARK_SUFFIXES))
        if not files:
            raise ValueError(f"{path}: no benchmark files ({', '.join(BENCHMARK_SUFFIXES)}) in this folder")
        return name or f"{path.parent.name}/{path.name}", files
    if not path.is_file():
        raise ValueError(f"{path}: benchmark file not found")
    if not path.name.endswith(BENCHMARK_SUFFIXES):
        raise ValueError(f"{path}: benchmark files must be one of {', '.join(BENCHMARK_SUFFIXES)}")
    stem = path.name
    for suffix in BENCHMARK_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return name or f"{path.parent.name}/{stem}", [path]


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def read_benchmark(spec: str, fields: Sequence[str]) -> tuple[list[BenchmarkItem], int]:
    """Items of one benchmark and the number of unreadable rows skipped."""
    name, files = benchmark_files(spec)
    wanted = [f.lower() for f in fields]
    items: list[BenchmarkItem] = []
    skipped = 0
    for path in files:
        prefix = path.name.split(".")[0] if len(files) > 1 else ""
        with _open_text(path) as fh:
            if ".csv" in path.name:
                rows: Iterable = csv.DictReader(fh)
            elif path.name.endswith(".json"):
                data = json.load(fh)
                rows = data if isinstance(data, list) else data.get("data", [])
            else:
                rows = _json_lines(fh)
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    skipped += 1
                    continue
                lower = {str(k).lower(): v for k, v in row.items()}
                parts = [str(lower[f]) for f in wanted if lower.get(f) not in (None, "")]
                if not parts:
                    skipped += 1
                    continue
                item_id = next((str(lower[k]) for k in ID_FIELDS if lower.get(k) not in (None, "")), str(i))
                items.append(BenchmarkItem(name, f"{prefix}:{item_id}" if prefix else item_id, "\n".join(parts)))
    return items, skipped


def _json_lines(fh) -> Iterable:
    for line in fh:
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            yield None


# -- the index ------------------------------------------------------------------------


@dataclass
class NgramIndex:
    """Sorted gram hashes per gram length, each with the item it came from."""

    n: int
    benchmarks: list[str]
    items: list[tuple[int, str]]  # (benchmark index, item id)
    by_length: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # length -> (hashes, item idx)
    stats: dict = field(default_factory=dict)
    _bitmap: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, specs: Sequence[str], fields: Sequence[str], n: int = 13, min_tokens: int = 8) -> NgramIndex:
        hasher = TokenHasher()
        benchmarks: list[str] = []
        items: list[tuple[int, str]] = []
        grams: dict[int, list[np.ndarray]] = {}
        owners: dict[int, list[np.ndarray]] = {}
        stats = {"items": {}, "too_short": {}, "skipped_rows": {}}
        for spec in specs:
            bench_items, skipped = read_benchmark(spec, fields)
            if not bench_items:
                raise ValueError(f"{spec}: no items with any of the fields {', '.join(fields)}")
            b = len(benchmarks)
            name = bench_items[0].benchmark
            benchmarks.append(name)
            stats["items"][name] = len(bench_items)
            stats["skipped_rows"][name] = skipped
            short = 0
            for it, token_hashes in zip(bench_items, hasher.many([it.text for it in bench_items])):
                length = min(n, len(token_hashes))
                if length < min_tokens:
                    short += 1
                    continue
                hashes = gram_hashes(token_hashes, length)
                grams.setdefault(length, []).append(hashes)
                owners.setdefault(length, []).append(np.full(len(hashes), len(items), dtype=np.int32))
                items.append((b, it.item))
            stats["too_short"][name] = short
        index = cls(n, benchmarks, items, stats=stats)
        for length in grams:
            h = np.concatenate(grams[length])
            o = np.concatenate(owners[length])
            # Keep the first item per gram: a stable sort keeps insertion order on ties.
            order = np.argsort(h, kind="stable")
            h, o = h[order], o[order]
            first = np.ones(len(h), dtype=bool)
            first[1:] = h[1:] != h[:-1]
            index.by_length[length] = (h[first], o[first])
        index.stats["grams"] = int(sum(len(h) for h, _ in index.by_length.values()))
        return index

    # -- cache --
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for length, (h, o) in self.by_length.items():
            arrays[f"h{length}"], arrays[f"o{length}"] = h, o
        meta = {
            "format": INDEX_FORMAT,
            "n": self.n,
            "benchmarks": self.benchmarks,
            "items": self.items,
            "stats": self.stats,
        }
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> NgramIndex:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            index = cls(meta["n"], meta["benchmarks"], [tuple(x) for x in meta["items"]], stats=meta["stats"])
            for key in data.files:
                if key.startswith("h"):
                    length = int(key[1:])
                    index.by_length[length] = (data[key], data[f"o{length}"])
        return index

    # -- lookups --
    def _maybe(self, grams: np.ndarray) -> np.ndarray:
        """A one-bit-per-slot filter over all indexed grams: one memory access per
        gram instead of a binary search, which is 7x faster at a few % false
        positives (checked exactly afterwards)."""
        if self._bitmap is None:
            bitmap = np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8)
            for h, _ in self.by_length.values():
                slot = (h >> np.uint64(64 - _FILTER_BITS)).astype(np.int64)
                np.bitwise_or.at(bitmap, slot >> 3, (1 << (slot & 7)).astype(np.uint8))
            self._bitmap = bitmap
        slot = (grams >> np.uint64(64 - _FILTER_BITS)).astype(np.int64)
        return (self._bitmap[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1

    def find(self, token_hashes: np.ndarray) -> list[tuple[int, int, int]]:
        """(token position, gram length, item index) of every gram found."""
        hits = []
        lengths = sorted(self.by_length)
        if not lengths or len(token_hashes) < lengths[0]:
            return hits
        # Grams of length L extend those of length L-1: one pass serves every length.
        acc = np.zeros(len(token_hashes), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for length in range(1, lengths[-1] + 1):
                count = len(token_hashes) - length + 1
                if count <= 0:
                    break
                acc = acc[:count] * _MULT + token_hashes[length - 1 : length - 1 + count]
                if length not in self.by_length:
                    continue
                h, o = self.by_length[length]
                candidates = np.nonzero(self._maybe(acc))[0]
                if not len(candidates):
                    continue
                grams = acc[candidates]
                pos = np.searchsorted(h, grams)
                pos[pos >= len(h)] = 0
                found = np.nonzero(h[pos] == grams)[0]
                hits.extend((int(candidates[i]), length, int(o[pos[i]])) for i in found)
        hits.sort()
        return hits


# Keys already computed in this process, by the benchmark files' identity (path, size,
# modification time): a stage asks twice (its fingerprint, then its setup), and hashing
# every benchmark file is the slow part of both.
_KEYS: dict[tuple, str] = {}


def index_cache_key(specs: Sequence[str], fields: Sequence[str], n: int, min_tokens: int) -> str:
    listed = [benchmark_files(spec) for spec in specs]
    identity = (
        tuple(fields),
        n,
        min_tokens,
        tuple((name, tuple(_file_identity(p) for p in files)) for name, files in listed),
    )
    key = _KEYS.get(identity)
    if key is None:
        key = _KEYS[identity] = _content_key(listed, fields, n, min_tokens)
    return key


def _file_identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _content_key(listed: list[tuple[str, list[Path]]], fields: Sequence[str], n: int, min_tokens: int) -> str:
    h = hashlib.sha256(json.dumps({"format": INDEX_FORMAT, "fields": list(fields), "n": n, "min": min_tokens}).encode())
    for name, files in listed:
        h.update(name.encode())
        for path in files:
            h.update(path.name.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synth" / "decontaminate"


def load_index(
    specs: Sequence[str], fields: Sequence[str], n: int, min_tokens: int, cache_dir: Path | None
) -> NgramIndex:
    key = index_cache_key(specs, fields, n, min_tokens)
    path = (cache_dir or default_cache_dir()) / f"index-{key}.npz"
    if path.exists():
        try:
            return NgramIndex.load(path)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    index = NgramIndex.build(specs, fields, n, min_tokens)
    try:
        index.save(path)
    except OSError:
        pass  # a read-only cache only costs the rebuild
    return index


# -- the stage ------------------------------------------------------------------------


class DecontaminateOptions(FilterOptions):
    benchmarks: list[str] = Field(
        description="Benchmark files or folders (JSONL, JSONL.gz, JSON, CSV), optionally NAME=PATH."
    )
    fields: list[str] = Field(
        default_factory=lambda: ["question", "prompt", "problem"], description="Benchmark fields holding the item text."
    )
    columns: list[str] = Field(
        default_factory=lambda: ["text"], description="Record columns to check: strings or message lists."
    )
    n: int = Field(13, ge=3, le=64, description="Gram length in normalised tokens.")
    min_tokens: int = Field(
        8, ge=1, description="Benchmark items shorter than n are matched whole if at least this long."
    )
    action: Literal["drop", "cut"] = "drop"
    cut_chars: int = Field(200, ge=0, description="cut: characters removed on each side of a hit.")
    min_chars_after_cut: int = Field(1, ge=0, description="cut: drop the record when less text than this remains.")
    cache_dir: str | None = Field(None, description="Index cache folder; default ~/.cache/synth/decontaminate.")
    removed_rows_dir: str | None = Field(
        None, description="Also write every removed row, in full, here (one parquet per shard)."
    )


class DecontaminateCutOptions(DecontaminateOptions):
    action: Literal["cut"] = "cut"


class BenchmarkMatching:
    """What both decontamination stages share: the benchmark index, matching, cutting."""

    Options = DecontaminateOptions
    writes = ("decontam_hits", "decontam_match")

    def __init__(self, options, pipeline=None):
        super().__init__(options, pipeline)
        self.index: NgramIndex | None = None
        self.hasher = TokenHasher()

    def input_columns(self):
        return tuple(self.options.columns)

    def column_types(self):
        return {"decontam_hits": pa.int32(), "decontam_match": pa.string()}

    def external_state(self) -> str:
        """The benchmark files' contents (the index cache key): a changed benchmark
        re-checks a resumed run."""
        o = self.options
        return index_cache_key([self._resolve(spec) for spec in o.benchmarks], o.fields, o.n, o.min_tokens)

    def setup(self) -> None:
        o = self.options
        specs = [self._resolve(spec) for spec in o.benchmarks]
        self.index = load_index(specs, o.fields, o.n, o.min_tokens, Path(o.cache_dir) if o.cache_dir else None)

    def _resolve(self, spec: str) -> str:
        """Relative benchmark paths are relative to the pipeline file, else to the working directory."""
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = "", spec
        base = self.pipeline.config_path.parent if self.pipeline.config_path else None
        if base is not None and not Path(path).is_absolute() and (base / path).exists():
            path = str(base / path)
        return f"{name}={path}" if name else path

    # -- matching --
    def match_text(self, text: str) -> list[dict]:
        """Every hit in one text: benchmark, item, gram, char span."""
        return self.match_many([text])[0]

    def match_many(self, texts: Sequence[str]) -> list[list[dict]]:
        """Hits per text. All texts are looked up in one pass (per-call numpy
        overhead dominates on short texts); grams spanning two texts are ignored."""
        assert self.index is not None
        per_text = self.hasher.many(texts)
        bounds = np.cumsum([0] + [len(h) for h in per_text])
        result: list[list[dict]] = [[] for _ in texts]
        if not bounds[-1]:
            return result
        suspects = set()
        for pos, length, _ in self.index.find(np.concatenate(per_text)):
            doc = int(np.searchsorted(bounds, pos, side="right")) - 1
            if pos + length <= bounds[doc + 1]:
                suspects.add(doc)
        for doc in suspects:
            result[doc] = self._locate(texts[doc])
        return result

    def _locate(self, text: str) -> list[dict]:
        """Hits of one text with character offsets (only texts known to hit)."""
        matches = list(_TOKEN.finditer(text))
        tokens = [m.group().lower() for m in matches]
        hits = []
        for pos, length, item in self.index.find(self.hasher(tokens)):
            b, item_id = self.index.items[item]
            hits.append(
                {
                    "benchmark": self.index.benchmarks[b],
                    "item": item_id,
                    "ngram": " ".join(tokens[pos : pos + length]),
                    "start": matches[pos].start(),
                    "end": matches[pos + length - 1].end(),
                }
            )
        return hits

    def cut(self, text: str, hits: list[dict]) -> str:
        """Remove each hit and `cut_chars` on either side (overlapping cuts merge)."""
        w = self.options.cut_chars
        ranges = sorted((max(0, h["start"] - w), min(len(text), h["end"] + w)) for h in hits)
        out, last = [], 0
        for a, b in ranges:
            if a > last:
                out.append(text[last:a])
            last = max(last, b)
        out.append(text[last:])
        return "".join(out)

    def _texts(self, value) -> list[tuple[str, object]]:
        """(text, location) pairs of one cell: a string, or messages (list or JSON)."""
        if value is None:
            return []
        if isinstance(value, str):
            stripped = value.lstrip()
            if stripped.startswith("[{"):
                try:
                    msgs = json.loads(value)
                    return [
                        (str(m.get("content") or ""), ("json", i)) for i, m in enumerate(msgs) if isinstance(m, dict)
                    ]
                except ValueError:
                    pass
            return [(value, None)]
        if isinstance(value, list):
            return [(str(m.get("content") or ""), ("list", i)) for i, m in enumerate(value) if isinstance(m, dict)]
        return [(str(value), None)]

    def find_hits(self, table: pa.Table, shard: Shard) -> tuple[dict, dict, list[int], list[str | None]]:
        """The shard's checked cells, the hits per (row, column) cell, and per row the
        number of hits and the first hit per benchmark (JSON); counts `matched.<benchmark>`."""
        cols = self.options.columns
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{self.type}: column(s) {', '.join(missing)} not in the records (have {', '.join(table.column_names)})"
            )
        values = {c: table.column(c).to_pylist() for c in cols}
        # One flat batch of every text in the shard: (row, column, location, text).
        parts = [(r, c, loc, text) for c in cols for r, cell in enumerate(values[c]) for text, loc in self._texts(cell)]
        found = self.match_many([p[3] for p in parts])
        per_row: list[list[dict]] = [[] for _ in range(table.num_rows)]
        per_cell: dict[tuple[int, str], list] = {}
        for (r, c, loc, text), hits in zip(parts, found):
            per_row[r].extend(hits)
            per_cell.setdefault((r, c), []).append((loc, text, hits))
        hits_n, matches = [], []
        for all_hits in per_row:
            hits_n.append(len(all_hits))
            if not all_hits:
                matches.append(None)
                continue
            first: dict[str, dict] = {}
            for h in all_hits:
                first.setdefault(h["benchmark"], {k: h[k] for k in ("benchmark", "item", "ngram")})
            for bench in first:
                shard.count(f"matched.{bench}")
            matches.append(json.dumps(list(first.values()), ensure_ascii=False))
        return values, per_cell, hits_n, matches

    def _cut_cell(self, cell, cell_hits):
        if isinstance(cell, str) and cell_hits and cell_hits[0][0] is None:
            return self.cut(cell, cell_hits[0][2])
        msgs = json.loads(cell) if isinstance(cell, str) else [dict(m) for m in cell]
        for loc, text, hs in cell_hits:
            if hs:
                msgs[loc[1]]["content"] = self.cut(text, hs)
        return json.dumps(msgs, ensure_ascii=False) if isinstance(cell, str) else msgs


class Decontaminate(BenchmarkMatching, Filter):
    """Drops records that share an n-gram with a benchmark item; scoring only looks.
    `action: cut` in a pipeline runs the `decontaminate_cut` transform instead."""

    type = "decontaminate"

    @classmethod
    def configured(cls, options):
        return DecontaminateCut if options.action == "cut" else cls

    def score(self, table: pa.Table, shard: Shard):
        _, _, hits_n, matches = self.find_hits(table, shard)
        return {"decontam_hits": hits_n, "decontam_match": matches}

    def decide(self, row: dict) -> str | None:
        if not row.get("decontam_hits"):
            return None
        first = json.loads(row["decontam_match"])[0]
        return f"contaminated:{first['benchmark']}"


class DecontaminateCut(BenchmarkMatching, Stage):
    """A transform: removes each benchmark hit and `cut_chars` around it from the
    checked columns; drops (`contaminated:emptied_by_cut`) a record left with less
    than `min_chars_after_cut` characters. `annotate_only` looks without cutting."""

    type = "decontaminate_cut"
    Options = DecontaminateCutOptions

    def output_columns(self):
        return (*self.writes, *self.options.columns)

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        values, per_cell, hits_n, matches = self.find_hits(table, shard)
        columns: dict = {"decontam_hits": hits_n, "decontam_match": matches}
        if not self.options.annotate_only:
            for c in self.options.columns:
                new = list(values[c])
                for r in range(table.num_rows):
                    cell_hits = per_cell.get((r, c), [])
                    if any(hs for _, _, hs in cell_hits):
                        new[r] = self._cut_cell(values[c][r], cell_hits)
                columns[c] = pa.array(new, type=table.schema.field(c).type)
        table = add_columns(table, columns, self.column_types())
        if table.num_rows == 0:
            return table
        rows = table.select(list(dict.fromkeys([*self.options.columns, *self.writes]))).to_pylist()
        keep = [True] * table.num_rows
        for i, row in enumerate(rows):
            if not row["decontam_hits"]:
                continue
            remaining = sum(len(t) for c in self.options.columns for t, _ in self._texts(row.get(c)))
            if remaining >= self.options.min_chars_after_cut:
                continue
            reason = "contaminated:emptied_by_cut"
            if self.options.annotate_only:
                shard.count(f"would_drop.{reason}")
                continue
            keep[i] = False
            shard.drop(table.slice(i, 1).to_pylist()[0], reason, {k: row[k] for k in self.writes}, row=i)
        if all(keep):
            return table
        mask = pa.array(keep, type=pa.bool_())
        write_removed_rows(self.options, table.filter(pc.invert(mask)), shard)
        return table.filter(mask)
