"""`synth pack`: render + tokenise (parallel, resumable per input file), mix by tokens,
pack (native) or lay out per group (Megatron), write, report.

Phase 1 commits one tokenised shard per input file under OUT/.work/tokens/ (atomic
rename, like every synth shard): a killed pack re-tokenises only unfinished files.
Phase 2 is a deterministic function of those shards and the options; it writes into
OUT/.work/staging/, moves the files into OUT and writes manifest.json last, so a
manifest means a complete pack, and a rerun after a kill rebuilds the same bytes.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synth.core.rundir import atomic_write_json
from synth.pack.formats import MegatronWriter, NativeWriter, sha256_file, token_dtype
from synth.pack.inputs import resolve_inputs
from synth.pack.mix import load_mix, plan_ratios, repeats_for
from synth.pack.packer import WindowPacker
from synth.pack.render import LossPolicy, Renderer, load_tokenizer, tokenizer_fingerprint
from synth.pack.tokenize import RENDERERS, TokenizeTask, tokenize_file

FORMAT_NAME = "synth-pack"
FORMAT_VERSION = 1

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


class PackError(ValueError):
    """A one-line user error (bad option, bad mix, bad tokenizer)."""


@dataclass
class PackOptions:
    inputs: list[str]
    tokenizer: str
    seq_len: int
    output: str
    format: str = "native"
    mix: str | None = None
    seed: int = 0
    workers: int = 1
    chat_loss: str = "assistant"
    text_loss: str = "all"
    eod_token: str | None = None
    long_docs: str = "split"
    window: int = 4096


@dataclass
class PackResult:
    output: Path
    manifest: dict
    resumed: bool = False
    messages: list[str] = field(default_factory=list)


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "group"


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _binary_values(column: pa.ChunkedArray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A large_binary column as one array of its values' bytes viewed as `dtype` (zero
    copy for a single chunk) and the element offsets of each row in it."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, dtype=np.uint8)
    data = data[offsets[0] : offsets[-1]]
    return data.view(dtype), (offsets - offsets[0]) // dtype.itemsize


def pack(opts: PackOptions, progress=None, say: Callable[[str], None] = lambda m: None) -> PackResult:
    # -- validate everything before any work --------------------------------------
    if opts.format not in ("native", "megatron"):
        raise PackError(f"--format must be native or megatron, not {opts.format!r}")
    if opts.long_docs not in ("split", "drop"):
        raise PackError(f"--long-docs must be split or drop, not {opts.long_docs!r}")
    if opts.seq_len < 2:
        raise PackError("--seq-len must be at least 2")
    try:
        LossPolicy.parse(opts.chat_loss, opts.text_loss)
    except ValueError as exc:
        raise PackError(str(exc)) from None
    files = resolve_inputs(opts.inputs)
    tok = load_tokenizer(opts.tokenizer)
    renderer = Renderer(tok, LossPolicy.parse(opts.chat_loss, opts.text_loss), opts.eod_token)
    mix = load_mix(opts.mix) if opts.mix else None
    vocab_size = len(tok)
    dtype = token_dtype(vocab_size)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else renderer.eod_id

    out = Path(opts.output)
    work = out / ".work"
    tok_dir = work / "tokens"
    tok_fp = {
        "tokenizer": tokenizer_fingerprint(opts.tokenizer),
        "chat_loss": opts.chat_loss,
        "text_loss": opts.text_loss,
        "eod": renderer.eod_id,
        "version": FORMAT_VERSION,
        # a rewritten input file (same path, new size or time) is tokenised again
        "files": [
            (f.source, str(Path(f.path).resolve()), os.stat(f.path).st_size, os.stat(f.path).st_mtime_ns) for f in files
        ],
    }
    fp_file = work / "tokenize.json"
    if fp_file.exists() and json.loads(fp_file.read_text()) != json.loads(json.dumps(tok_fp)):
        say("inputs, tokenizer or loss options changed since the last pack into this folder: tokenising again")
        shutil.rmtree(tok_dir, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(fp_file, tok_fp)

    mix_raw = mix.model_dump() if mix else None
    final_fp = _fingerprint(
        {
            "tok": tok_fp,
            "seq_len": opts.seq_len,
            "format": opts.format,
            "mix": mix_raw,
            "seed": opts.seed,
            "long_docs": opts.long_docs,
            "window": opts.window,
            "pad": pad_id,
        }
    )
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") == final_fp:
            return PackResult(out, old, resumed=True, messages=["already packed with these options: nothing to do"])

    # -- phase 1: tokenise, one committed shard per input file ----------------------
    tasks = [
        TokenizeTask(
            i,
            f.source,
            f.path,
            str(opts.tokenizer),
            opts.chat_loss,
            opts.text_loss,
            opts.eod_token,
            str(tok_dir / f"part-{i:05d}.parquet"),
        )
        for i, f in enumerate(files)
    ]
    todo = [t for t in tasks if not Path(t.target).exists()]
    if len(todo) < len(tasks):
        say(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} input files already tokenised")
    # In-process tokenising reuses the tokenizer loaded above (loading one takes seconds).
    RENDERERS[(str(opts.tokenizer), opts.chat_loss, opts.text_loss, opts.eod_token)] = renderer
    tick = progress("tokenise", len(tasks), len(tasks) - len(todo)) if progress else None
    if todo:
        if opts.workers <= 1:
            for t in todo:
                stats = tokenize_file(t)
                if tick:
                    tick(stats)
        else:
            ctx = __import__("multiprocessing").get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=opts.workers, mp_context=ctx) as pool:
                for stats in pool.map(tokenize_file, todo):
                    if tick:
                        tick(stats)
    if tick:
        tick(None)

    # -- phase 2: mix plan from the shards' metadata ---------------------------------
    by = mix.by if mix else "source"
    available: Counter = Counter()
    names: dict[str, set] = {"source": set(), "domain": set(), "kind": set()}
    for t in tasks:
        meta = pq.read_table(t.target, columns=["source", "domain", "kind", "status", "n_tokens"])
        for key in names:
            names[key].update(meta.column(key).unique().to_pylist())
        for g, st, n in zip(*(meta.column(c).to_pylist() for c in (by, "status", "n_tokens"))):
            available[g] += n if st == "ok" else 0
            available.setdefault(g, 0)
    try:
        ratios, targets = plan_ratios(mix, dict(available), label=f"--mix {opts.mix}")
    except ValueError as exc:
        raise PackError(str(exc)) from None
    vocab = {k: sorted(v) for k, v in names.items()}
    code = {k: {name: i for i, name in enumerate(v)} for k, v in vocab.items()}
    passes = max([math.ceil(r) for r in ratios.values()] + [1])

    # -- phase 3: write into staging, then move into place ---------------------------
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if manifest_path.exists():
        manifest_path.unlink()  # the old pack stops being "complete" before any file of it changes
    total_tokens = sum(int(available[g] * ratios[g]) for g in available)
    wtick = progress("write", max(total_tokens, 1), 0, unit="tokens") if progress else None

    counts: Counter = Counter()
    skipped: Counter = Counter()
    written: dict[str, Counter] = {"source": Counter(), "domain": Counter(), "kind": Counter()}
    trained = Counter()
    group_written: Counter = Counter()
    rows: list[tuple] = []
    pwriter = pq.ParquetWriter(staging / "packing.parquet", PACKING_SCHEMA, compression="zstd")

    def row(rid, s, d, k, status, reason, rtok, copy=None, piece=None, output=None, seq=None, off=None, n=None):
        rows.append((rid, s, d, k, status, reason, rtok, copy, piece, output, seq, off, n))
        if len(rows) >= 65536:
            flush()

    def flush():
        if rows:
            pwriter.write_table(pa.table([list(c) for c in zip(*rows)], schema=PACKING_SCHEMA))
            rows.clear()

    w_source, w_domain, w_kind = written["source"], written["domain"], written["kind"]

    def account(s, d, k, g, n, m):
        w_source[s] += n
        w_domain[d] += n
        w_kind[k] += n
        group_written[g] += n
        trained[g] += m

    native = megatron = None
    s_code, d_code, k_code = code["source"], code["domain"], code["kind"]
    files_written: list[str] = ["packing.parquet"]
    if opts.format == "native":
        native = NativeWriter(staging, opts.seq_len, dtype, pad_id)
        packer = WindowPacker(opts.seq_len, window=opts.window)

        def emit(bins):
            for b in bins:
                placed = native.write_sequence(
                    [(p[6], p[7], s_code[p[1]], d_code[p[2]], k_code[p[3]], p[10]) for p in b.docs]
                )
                done = 0
                # row() and account() inlined: this loop runs once per document
                for (rid, s, d, k, copy, piece, t, _, rtok, status, n_trained, g), (seq, off) in zip(b.docs, placed):
                    n = len(t)
                    rows.append((rid, s, d, k, status, None, rtok, copy, piece, None, seq, off, n))
                    if len(rows) >= 65536:
                        flush()
                    w_source[s] += n
                    w_domain[d] += n
                    w_kind[k] += n
                    group_written[g] += n
                    trained[g] += n_trained
                    done += n
                if wtick:
                    wtick(done)
    else:
        megatron = {}
        mdir = staging / "megatron"
        mdir.mkdir()
        for g in sorted(g for g, r in ratios.items() if r > 0):
            megatron[g] = MegatronWriter(mdir / f"{_sanitize(g)}_text_document", dtype)

    # A whole ratio needs no per-record hash (repeats_for returns it as it is).
    whole_ratios = {g: int(r) for g, r in ratios.items() if r == math.floor(r)}
    for copy in range(passes):
        for t in tasks:
            table = pq.read_table(t.target)
            cols = [
                table.column(c).to_pylist()
                for c in ("record_id", "source", "domain", "kind", "status", "reason", "n_tokens", by)
            ]
            # Every record's tokens and mask as views into the shard's two buffers, and
            # its trained-token count from one cumulative sum (no per-record copies).
            all_toks, offsets = _binary_values(table.column("tokens"), np.dtype("<i4"))
            all_mask, _ = _binary_values(table.column("mask"), np.dtype(np.uint8))
            trained_before = np.zeros(len(all_mask) + 1, dtype=np.int64)
            np.cumsum(all_mask, dtype=np.int64, out=trained_before[1:])
            rec_trained = (trained_before[offsets[1:]] - trained_before[offsets[:-1]]).tolist()
            offs = offsets.tolist()
            for i, (rid, s, d, k, status, reason, n, g) in enumerate(zip(*cols)):
                if status != "ok":
                    if copy == 0:
                        skipped[reason] += 1
                        row(rid, s, d, k, "skipped", reason, n)
                    continue
                ratio = ratios[g]
                reps = whole_ratios.get(g)
                if reps is None:
                    reps = repeats_for(rid, s, ratio, opts.seed)
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
                if megatron is not None:
                    w = megatron[g]
                    idx = w.add(toks)
                    row(rid, s, d, k, "packed", None, n, copy, 0, w.prefix.name, idx, 0, n)
                    account(s, d, k, g, n, rec_trained[i])
                    counts["documents"] += 1
                    if wtick:
                        wtick(n)
                    continue
                if n > opts.seq_len:
                    if opts.long_docs == "drop":
                        if copy == 0:
                            counts["dropped"] += 1
                            row(rid, s, d, k, "dropped", f"longer_than_seq_len ({n} > {opts.seq_len})", n)
                        continue
                    counts["split"] += copy == 0
                    for j, start in enumerate(range(0, n, opts.seq_len)):
                        stop = min(start + opts.seq_len, n)
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
                        )
                        done_bins = packer.add(stop - start, piece)
                        if done_bins:
                            emit(done_bins)
                else:
                    done_bins = packer.add(n, (rid, s, d, k, copy, 0, toks, mask, n, "packed", rec_trained[i], g))
                    if done_bins:
                        emit(done_bins)
    if native is not None:
        emit(packer.finish())
        files_written += native.close()
    else:
        blend = []
        total = sum(w.tokens for w in megatron.values()) or 1
        for w in megatron.values():
            files_written += [f"megatron/{n}" for n in w.close()]
            blend.append((w.tokens / total, w.prefix.name))
        lines = " ".join(f"{wt:.6f} {(out / 'megatron' / name).resolve()}" for wt, name in blend if wt > 0)
        (mdir / "blend.txt").write_text(lines + "\n")
        files_written.append("megatron/blend.txt")
    flush()
    pwriter.close()
    if wtick:
        wtick(None)

    # -- manifest ---------------------------------------------------------------------
    total_written = sum(group_written.values())
    target_total = sum(targets.values()) or 1
    mix_report = {
        "by": by,
        "weights": dict(mix.weights) if mix else None,
        "budget_tokens": mix.budget_tokens if mix else None,
        "max_repeats": mix.max_repeats if mix else None,
        "ratio": {g: round(r, 6) for g, r in sorted(ratios.items())},
        "target_tokens": dict(sorted(targets.items())),
        "actual_tokens": {g: group_written.get(g, 0) for g in sorted(targets)},
        "target_share": {g: round(targets[g] / target_total, 6) for g in sorted(targets)},
        "actual_share": {g: round(group_written.get(g, 0) / max(total_written, 1), 6) for g in sorted(targets)},
        "trained_tokens": {g: trained.get(g, 0) for g in sorted(targets)},
    }
    # Total variation distance between the target and the actual shares.
    mix_report["distance"] = round(
        0.5 * sum(abs(mix_report["target_share"][g] - mix_report["actual_share"][g]) for g in targets), 6
    )
    manifest = {
        "format": FORMAT_NAME if opts.format == "native" else "megatron",
        "version": FORMAT_VERSION,
        "fingerprint": final_fp,
        "tokenizer": {
            "name": Path(opts.tokenizer).resolve().name,
            "vocab_size": vocab_size,
            "sha256": tok_fp["tokenizer"],
            "eod_id": renderer.eod_id,
            "pad_id": int(pad_id),
        },
        "dtype": np.dtype(dtype).name,
        "seq_len": opts.seq_len,
        "seed": opts.seed,
        "loss": {"chat_roles": opts.chat_loss, "text": opts.text_loss},
        "long_docs": opts.long_docs,
        "window": opts.window,
        "inputs": [{"source": f.source, "path": f.path} for f in files],
        "vocab": vocab,
        "mix": mix_report,
        "tokens_written": {k: dict(sorted(v.items())) for k, v in written.items()},
        "counts": {
            "input_records": int(counts["records"] + sum(skipped.values())),
            "skipped": dict(sorted(skipped.items())),
            "not_sampled": int(counts["not_sampled"]),
            "repeats": int(counts["repeats"]),
            "split": int(counts["split"]),
            "dropped": int(counts["dropped"]),
        },
    }
    if native is not None:
        manifest["sequences"] = native.n_seq
        manifest["documents"] = native.n_docs
        manifest["tokens"] = {
            "documents": native.tokens_written,
            "trained": native.trained_tokens,
            "padding": native.n_seq * opts.seq_len - native.tokens_written,
        }
        manifest["fill_efficiency"] = round(native.tokens_written / max(native.n_seq * opts.seq_len, 1), 6)
    else:
        manifest["documents"] = int(counts["documents"])
        manifest["tokens"] = {"documents": total_written}
        manifest["megatron"] = {
            "prefixes": {g: f"megatron/{w.prefix.name}" for g, w in megatron.items()},
            "blend": "megatron/blend.txt",
            "loss_mask": "not stored: Megatron pre-training trains on every token",
        }
    manifest["files"] = {name: sha256_file(staging / name) for name in files_written}
    # Move into place, manifest last: it is the commit point of the whole pack.
    for name in files_written:
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, dest)
    atomic_write_json(manifest_path, manifest)
    shutil.rmtree(staging, ignore_errors=True)
    return PackResult(out, manifest)
