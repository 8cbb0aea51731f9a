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
import gc
import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.core.rundir import atomic_write_json
from synth.pack.formats import sha256_file, token_dtype
from synth.pack.inputs import resolve_inputs
from synth.pack.mix import load_mix, plan_ratios
from synth.pack.place import PACKING_SCHEMA, Placement, group_tokens
from synth.pack.render import LossPolicy, Renderer, load_tokenizer, tokenizer_fingerprint
from synth.pack.tokenize import RENDERERS, TokenizeTask, encoder_threads, tokenize_file, tokenize_files

FORMAT_NAME = "synth-pack"
FORMAT_VERSION = 1

__all__ = ["PACKING_SCHEMA", "PackError", "PackOptions", "PackResult", "pack"]


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


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pack(opts: PackOptions, progress=None, say: Callable[[str], None] = lambda m: None) -> PackResult:
    # The collector stays out of the pack. The objects alive now (the tokenizer,
    # transformers, torch: millions) are frozen out of its sight: a full collection
    # traversing them took ~0.2 s at unpredictable moments, a tenth of a 1.4M-token pack.
    # And it is off while records are packed: its passes over the pack's own short-lived
    # lists and tuples cost ~8% of the pack's CPU, while a whole pack leaves ~60 objects
    # in reference cycles (measured); `place_table` still collects the young ones now
    # and then, so a long pack cannot pile cycles up. A caller's own frozen objects
    # stay frozen, and a collector the caller turned off stays off.
    ours = gc.get_freeze_count() == 0
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        return _pack(opts, progress, say)
    finally:
        if enabled:
            gc.enable()
        if ours:
            gc.unfreeze()


# Tables placed between two collections of young objects while the collector is off.
COLLECT_EVERY_TABLES = 64


def _pack(opts: PackOptions, progress, say: Callable[[str], None]) -> PackResult:
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
    # A shard is written as its batches are encoded, under a temporary name: one left
    # by a killed pack is never renamed, and its file is tokenised again from the start.
    for stale in tok_dir.glob(".part-*.parquet.tmp-*"):
        stale.unlink(missing_ok=True)

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
            encoder_threads(opts.workers),
        )
        for i, f in enumerate(files)
    ]
    todo = [t for t in tasks if not Path(t.target).exists()]
    if len(todo) < len(tasks):
        say(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} input files already tokenised")
    # In-process tokenising reuses the tokenizer loaded above (loading one takes seconds).
    RENDERERS[(str(opts.tokenizer), opts.chat_loss, opts.text_loss, opts.eod_token)] = renderer
    by = mix.by if mix else "source"
    staging = work / "staging"

    def placement(ratios, tick=None) -> Placement:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if manifest_path.exists():
            manifest_path.unlink()  # the old pack stops being "complete" before any file of it changes
        return Placement(
            staging,
            fmt=opts.format,
            seq_len=opts.seq_len,
            dtype=dtype,
            pad_id=pad_id,
            by=by,
            ratios=ratios,
            seed=opts.seed,
            long_docs=opts.long_docs,
            window=opts.window,
            tick=tick,
        )

    # Without a mix every record is taken once, so records are placed as they are
    # encoded (packing and writing overlap the encoder); a mix needs every file's
    # token counts first.
    streaming = mix is None
    placed = placement(None) if streaming else None
    # Every input's names (the vocabulary documents.bin's codes index) and usable tokens
    # per group: noted as records are placed, or, for a mix, in a pass before.
    available: Counter = Counter()
    names: dict[str, set] = {"source": set(), "domain": set(), "kind": set()}
    # The bar follows the input's bytes: its time left holds inside one large file too.
    sizes = {t.index: os.stat(t.path).st_size for t in tasks}
    total_bytes = sum(sizes.values())
    done_bytes = total_bytes - sum(sizes[t.index] for t in todo)
    tick = progress("tokenise", total_bytes, done_bytes, unit="bytes") if progress else None

    tables_placed = 0

    def place_table(table: pa.Table) -> None:
        nonlocal tables_placed
        group_tokens(table, by, available, names)
        placed.add(table)
        tables_placed += 1
        if tables_placed % COLLECT_EVERY_TABLES == 0:
            gc.collect(0)
        if tick:  # the rate moves batch by batch, also inside one large file
            tick({"files": 0, "tokens": pc.sum(table.column("n_tokens")).as_py() or 0})

    def read(n_bytes: int) -> None:
        if tick:
            tick({"files": 0, "tokens": 0, "bytes": n_bytes})

    for stats in _tokenise(tasks, opts.workers, place_table if streaming else None, read, sizes):
        if tick:
            tick({**stats, "files": 1, "tokens": 0} if streaming else stats)
    if tick:
        tick(None)

    # -- phase 2: mix plan from the shards' metadata ---------------------------------
    if streaming:
        ratios, targets = {g: 1.0 for g in available}, dict(available)
    else:
        for t in tasks:
            meta = pq.read_table(t.target, columns=["source", "domain", "kind", "status", "n_tokens"])
            group_tokens(meta, by, available, names)
        try:
            ratios, targets = plan_ratios(mix, dict(available), label=f"--mix {opts.mix}")
        except ValueError as exc:
            raise PackError(str(exc)) from None

    # -- phase 3: place every record (into staging), then move the files into place ---
    if not streaming:
        total_tokens = sum(int(available[g] * ratios[g]) for g in available)
        wtick = progress("write", max(total_tokens, 1), 0, unit="tokens") if progress else None
        placed = placement(ratios, wtick)
        for copy in range(max([math.ceil(r) for r in ratios.values()] + [1])):
            for t in tasks:
                placed.add(pq.read_table(t.target), copy)
                gc.collect(0)  # the collector is off (see `pack`)
        if wtick:
            wtick(None)
    vocab = {k: sorted(v) for k, v in names.items()}
    files_written, blend = placed.finish(sorted(g for g, r in ratios.items() if r > 0), vocab)
    if opts.format == "megatron":
        lines = " ".join(f"{wt:.6f} {(out / 'megatron' / name).resolve()}" for wt, name in blend if wt > 0)
        (staging / "megatron" / "blend.txt").write_text(lines + "\n")
        files_written.append("megatron/blend.txt")
    counts, skipped, written, trained, group_written = (
        placed.counts,
        placed.skipped,
        placed.written,
        placed.trained,
        placed.group_written,
    )
    native = placed.native

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
            "prefixes": {g: f"megatron/{placed.megatron[g].prefix.name}" for g in sorted(placed.megatron)},
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


def _tokenise(
    tasks: list[TokenizeTask], workers: int, on_table: Callable | None, on_read: Callable, sizes: dict[int, int]
):
    """Tokenises the files not done yet; yields each file's statistics, in input order.
    With `on_table`, every file's records are also handed over in input order: while
    a file is encoded in this process, batch by batch as they come out of the encoder;
    a file tokenised earlier or by a worker process, from its committed shard. `on_read`
    gets the input bytes read: batch by batch in this process, a file's size once a
    worker has tokenised it."""

    def replay(t: TokenizeTask) -> None:
        if on_table is not None:
            on_table(pq.read_table(t.target))

    if workers <= 1:
        yield from tokenize_files(tasks, on_table, on_read)
        return
    todo = [t for t in tasks if not Path(t.target).exists()]
    ctx = __import__("multiprocessing").get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        done = iter(pool.map(tokenize_file, todo))
        for t in tasks:
            if t in todo:
                stats = next(done)  # waits for the worker
                on_read(sizes[t.index])
                yield stats
            replay(t)
