"""`synth pack` tokens/s against the floor of the job: raw `tokenizers` batch encoding.

Inputs: the shared books (as passages, see below), a demo run's output
(`--demo-run runs/demo`, chat records; without one, the 5-record demo run committed under
tests/loader/demo-run) and KG tool-use samples from the shared `nations` graph (chat
records with tools; `--kg-samples 0` leaves them out). Timed side by side, in this
process, with the embedded model's tokenizer (49K vocab):

- pack: `synth pack` end to end with --workers 1 (read, render through the chat
  template with masks, tokenise, pack best-fit-decreasing, write the native files);
- raw: `tokenizers`' `encode_batch_fast` (its fastest batch call, no offsets) of the very
  same rendered text (the chat records are rendered beforehand, untimed).

    .venv/bin/python benchmarks/pack.py [--demo-run runs/demo] [--books 9] [--books-as passages|paragraphs]
        [--kg-samples 400] [--rounds 9] [--cores N]

The books are records as synth's books pipeline writes them (`split_passages`, up to
3,000 characters: ~700 tokens); `--books-as paragraphs` makes one record per paragraph
(~80 tokens each, twelve times the records: where per-record work weighs most).

With `--cores 1` both sides run on one core: what packing costs per core on top of
tokenising. By default both may use every core (the encoder's threads in both).

The two sides alternate round by round (pack, raw, pack, raw, ...) so that load from
other processes hits both, and the best round of each is compared. The tokenizer is
loaded once beforehand, untimed, as `synth pack` loads it once per command (its load
time is printed on its own line); CPU seconds of each side are printed too, a figure
less sensitive to a busy machine than wall time.

Last line: ratio=<pack tokens/s / raw encode tokens/s> (best round of each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


# What pipelines/books.yaml's split_passages writes (synth's own book records).
BOOK_PASSAGE_CHARS = (3000, 400)


def book_records(n_books: int, books_as: str = "passages") -> list[dict]:
    """The books as records: as synth's books pipeline cuts them into passages (up to
    3,000 characters, chapter-aware), or one record per paragraph (many tiny records:
    the per-record cost at its largest)."""
    from synth.ingest.passages import split_text

    recs = []
    for path in sorted((SHARED / "books").glob("pg*.txt"))[:n_books]:
        text = path.read_text(encoding="utf-8", errors="replace")
        if books_as == "passages":
            pieces = [text[a:b].strip() for a, b, _ in split_text(text, *BOOK_PASSAGE_CHARS)]
        else:
            pieces = [p.strip() for p in text.split("\n\n")]
        recs += [{"id": f"{path.stem}-{i}", "domain": "books", "text": t} for i, t in enumerate(pieces) if t]
    return recs


def kg_records(n: int) -> list[dict]:
    from kg.config import WalkConfig
    from kg.generate import SampleFactory, sample_seeds
    from kg.graph import load_graph

    graph = load_graph(SHARED / "kg" / "nations", cache=Path(tempfile.mkdtemp()))
    factory = SampleFactory(graph, WalkConfig(error_share=0.2))
    return [o.record for o in factory.make(sample_seeds(0, 0, n)) if o.record]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-run", default=str(REPO / "runs" / "demo"))
    ap.add_argument("--books", type=int, default=9)
    ap.add_argument(
        "--books-as",
        choices=["passages", "paragraphs"],
        default="passages",
        help="book records as synth's books pipeline writes them (passages) or one per paragraph",
    )
    ap.add_argument("--kg-samples", type=int, default=400)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument(
        "--cores",
        type=int,
        default=0,
        help="run on this many cores only (both sides; 1 = the cost per core of pack over the encoder); 0 = all",
    )
    a = ap.parse_args()
    if a.cores:
        # Before the tokenizer is loaded: its thread pool sizes itself once, on first use.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: a.cores])
        os.environ["RAYON_NUM_THREADS"] = str(a.cores)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from synth.llm.default_model import prepare_default_model
    from synth.pack.inputs import iter_record_batches, resolve_inputs
    from synth.pack.render import LossPolicy, Renderer, load_tokenizer
    from synth.pack.run import PackOptions, pack

    tok_dir = prepare_default_model()
    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    books = work / "books.jsonl"
    with open(books, "w") as fh:
        for r in book_records(a.books, a.books_as):
            fh.write(json.dumps(r) + "\n")
    inputs = [str(books)]
    demo = Path(a.demo_run)
    if not (demo / "output").is_dir():
        demo = REPO / "tests" / "loader" / "demo-run"
    inputs.append(str(demo))
    chats = f"demo run {demo}"
    if a.kg_samples:
        from kg.stage import SAMPLE_SCHEMA

        pq.write_table(pa.Table.from_pylist(kg_records(a.kg_samples), schema=SAMPLE_SCHEMA), work / "kg.parquet")
        inputs.append(str(work / "kg.parquet"))
        chats += f" + {a.kg_samples} KG tool-use samples"

    # The same rendered text for the raw encoder (chat templates applied beforehand).
    t = time.perf_counter()
    tokenizer = load_tokenizer(tok_dir)
    load_secs = time.perf_counter() - t
    renderer = Renderer(tokenizer, LossPolicy())
    texts = []
    for f in resolve_inputs(inputs):
        for batch in iter_record_batches(f.path):
            for rec in batch:
                if rec.get("messages"):
                    texts.append(renderer.chat_text_and_spans(rec["messages"], rec.get("tools"))[0])
                elif rec.get("text"):
                    texts.append(rec["text"])
    backend = renderer.backend

    pack_rates, raw_rates, pack_cpu, raw_cpu = [], [], [], []
    for rnd in range(a.rounds):
        out = work / f"out-{rnd}"
        t, c = time.perf_counter(), time.process_time()
        res = pack(PackOptions(inputs, str(tok_dir), a.seq_len, str(out), workers=1))
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        n_tokens = res.manifest["tokens"]["documents"]
        pack_rates.append(n_tokens / secs)
        pack_cpu.append(cpu)
        t, c = time.perf_counter(), time.process_time()
        encoded = backend.encode_batch_fast(texts, add_special_tokens=False)  # the fastest batch API: no offsets
        raw_secs, cpu = time.perf_counter() - t, time.process_time() - c
        raw_tokens = sum(len(e.ids) for e in encoded) + len(texts)  # + one end-of-document token each, as packed
        raw_rates.append(raw_tokens / raw_secs)
        raw_cpu.append(cpu)
        print(
            f"round {rnd + 1}: pack {n_tokens:,} tokens in {secs:.2f}s = {pack_rates[-1]:,.0f} tokens/s, {pack_cpu[-1]:.2f} CPU s "
            f"(fill {res.manifest['fill_efficiency']:.1%}); raw encode {raw_tokens:,} tokens in {raw_secs:.2f}s = "
            f"{raw_rates[-1]:,.0f} tokens/s, {raw_cpu[-1]:.2f} CPU s"
        )
        shutil.rmtree(out, ignore_errors=True)
    paired = sorted(p / r for p, r in zip(pack_rates, raw_rates))
    print(
        f"per-round ratios (pack / raw of the same round): {', '.join(f'{x:.3f}' for x in paired)}; "
        f"median {paired[len(paired) // 2]:.3f}"
    )
    print(f"tokenizer load (once per pack command, untimed above): {load_secs:.2f}s")
    print(
        f"CPU seconds, least of the rounds: pack {min(pack_cpu):.2f}, raw encode {min(raw_cpu):.2f} "
        f"(ratio {min(raw_cpu) / min(pack_cpu):.3f})"
    )
    cores = a.cores or len(os.sched_getaffinity(0))
    print(f"cores: {cores} ({'pinned' if a.cores else 'all'}); --workers 1")
    print(f"inputs: {a.books} books as {a.books_as} ({len(texts):,} records with the chats); chats: {chats}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"pack_tokens_per_s={max(pack_rates):.0f} raw_encode_tokens_per_s={max(raw_rates):.0f}")
    print(f"ratio={max(pack_rates) / max(raw_rates):.3f}")


if __name__ == "__main__":
    main()
