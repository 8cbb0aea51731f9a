r"""How the HTML extractor and the WARC reader were chosen: quality and speed, side by side.

    .venv/bin/python benchmarks/extractors.py              # P/R/F1 against gold, pages/s
    .venv/bin/python benchmarks/extractors.py --agreement  # agreement on the shared WARC pages
    .venv/bin/python benchmarks/extractors.py --warc       # FastWARC vs warcio, incl. the broken files

The default mode scores extraction against gold: the article-extraction-benchmark
in ../shared/data/extraction (181 real news and blog pages with gold article
bodies, MIT). Scoring follows that benchmark's evaluation: both texts become
word tokens (`\w+`), then 4-token shingles with counts; per page, true and false
positives and false negatives are counted over shingles and normalised by their
sum (so long pages weigh no more than short ones); precision is the mean over
pages that predicted anything or had a true positive, recall the mean over pages
with gold text, and F1 combines the two means. +- is 1.96 bootstrap standard
deviations (1000 resamples of pages, fixed seed). Systems, page by page in one
run: synth's extract_html stage with its cascade for an English pipeline
(`cascade_languages: [en]`), with its defaults (no language list: only the
cascade's large-page rule) and without (`cascade: false`), plain trafilatura
with its defaults, trafilatura fast, and resiliparse's main content. A page
synth drops (the cascade, an empty or timed-out extraction) counts as an empty
prediction: the cascade's drops of non-English pages lower its recall over all
pages by design, so scores are also shown on the pages whose gold is English.

`--agreement` compares extractors on the shared WARC pages, which have no gold:
bag-of-words F1 of each output against trafilatura's default extraction.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SYNTH_SHARED_DATA", REPO.parent / "shared" / "data"))
_WORD = re.compile(r"\w+")


def load_pages() -> list[tuple[str, str]]:
    """(url, decoded html) of every HTML response in the shared WARC files."""
    from synth.core.stage import Shard
    from synth.ingest.extract import decode_html
    from synth.ingest.read import ReadDocuments, ReadOptions

    stage = ReadDocuments(ReadOptions())
    pages = []
    for spec in stage.list_shards([str(SHARED / "warc" / "*.warc*")]):
        table = stage.read(spec, Shard("bench", 0, "b", 0))
        for row in table.select(["url", "html", "charset"]).to_pylist():
            if row["html"] is not None:
                pages.append((row["url"], decode_html(row["html"], row["charset"])[0]))
    return pages


def word_f1(reference: str | None, candidate: str | None) -> float:
    ref, cand = Counter(_WORD.findall(reference or "")), Counter(_WORD.findall(candidate or ""))
    overlap = sum((ref & cand).values())
    if not overlap:
        return 1.0 if not ref and not cand else 0.0
    p, r = overlap / sum(cand.values()), overlap / sum(ref.values())
    return 2 * p * r / (p + r)


def extractors() -> dict:
    import trafilatura
    import trafilatura.core
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    def no_retry(page):
        limit = trafilatura.core.ESCALATION_MAX_LENGTH
        trafilatura.core.ESCALATION_MAX_LENGTH = 0
        try:
            return trafilatura.extract(page, fast=True, include_comments=False)
        finally:
            trafilatura.core.ESCALATION_MAX_LENGTH = limit

    def retry_small_pages(page):
        # synth's default (extract_html recall_retry_max_bytes: 100000)
        if len(page.encode("utf-8", "replace")) > 100_000:
            return no_retry(page)
        return trafilatura.extract(page, fast=True, include_comments=False)

    out = {
        "trafilatura (default)": lambda p: trafilatura.extract(p),
        "trafilatura fast": lambda p: trafilatura.extract(p, fast=True, include_comments=False),
        "trafilatura fast, retry <=100kB (synth)": retry_small_pages,
        "trafilatura fast, no recall retry": no_retry,
        "trafilatura fast, favor_precision": lambda p: trafilatura.extract(
            p, fast=True, include_comments=False, favor_precision=True
        ),
        "datatrove's trafilatura options": lambda p: trafilatura.extract(
            p, favor_precision=True, include_comments=False, deduplicate=False
        ),
        "resiliparse main_content": lambda p: extract_plain_text(HTMLTree.parse(p), main_content=True, alt_texts=False),
    }
    try:
        import justext

        stop = justext.get_stoplist("English")
        out["justext (English stoplist)"] = lambda p: "\n".join(
            x.text for x in justext.justext(p.encode("utf-8"), stop) if not x.is_boilerplate
        )
    except ImportError:
        pass
    return out


# -- gold-set scoring (the article-extraction-benchmark's metric) ----------------
_SHINGLE = 4


def _shingles(text: str | None) -> Counter:
    tokens = _WORD.findall(text or "")
    # A text shorter than a shingle is one short shingle (none when empty).
    if len(tokens) < _SHINGLE:
        return Counter([tuple(tokens)] if tokens else [])
    return Counter(tuple(tokens[i : i + _SHINGLE]) for i in range(len(tokens) - _SHINGLE + 1))


def page_counts(gold: str | None, predicted: str | None) -> tuple[float, float, float]:
    """(tp, fp, fn) over shingles, normalised to sum to 1 (all zero when both are empty)."""
    g, p = _shingles(gold), _shingles(predicted)
    tp = sum((g & p).values())
    fp = sum((p - g).values())
    fn = sum((g - p).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def scores(counts: list[tuple[float, float, float]]) -> dict[str, float]:
    def precision(tp, fp, fn):
        return 1.0 if fp == fn == 0 else (0.0 if tp == fp == 0 else tp / (tp + fp))

    def recall(tp, fp, fn):
        return 1.0 if fp == fn == 0 else (0.0 if tp == fn == 0 else tp / (tp + fn))

    ps = [precision(*c) for c in counts if c[0] + c[1] > 0]
    rs = [recall(*c) for c in counts if c[0] + c[2] > 0]
    p = sum(ps) / len(ps) if ps else 0.0
    r = sum(rs) / len(rs) if rs else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def bootstrap(counts: list[tuple[float, float, float]], rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    import random
    import statistics

    rng = random.Random(seed)
    samples: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for _ in range(rounds):
        drawn = scores([counts[rng.randrange(len(counts))] for _ in counts])
        for k, v in drawn.items():
            samples[k].append(v)
    return {k: 1.96 * statistics.stdev(v) for k, v in samples.items()}


def load_gold() -> list[tuple[str, str | None, bytes, str]]:
    """(id, url, html bytes, gold article body) of every page of the gold set."""
    import gzip
    import json

    root = SHARED / "extraction"
    truth = json.loads((root / "ground-truth.json").read_text(encoding="utf-8"))
    return [
        (
            key,
            item.get("url"),
            gzip.decompress((root / "html" / f"{key}.html.gz").read_bytes()),
            item.get("articleBody", ""),
        )
        for key, item in sorted(truth.items())
    ]


def gold_systems(drops: dict[str, str]) -> dict:
    """name -> function(url, html bytes) -> text or None; pages synth drops go into `drops` (url -> reason)."""
    import pyarrow as pa
    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    from synth.core.stage import Shard
    from synth.ingest.extract import ExtractHtml, ExtractOptions
    from synth.ingest.read import SCHEMA

    def synth_stage(**options):
        stage = ExtractHtml(ExtractOptions(**options))
        stage.ensure_setup()

        def run(url, raw):
            row = dict.fromkeys(SCHEMA.names)
            row.update(id="page", html=raw, url=url, source="gold", format="html", offset=0)
            shard = Shard("extract_html", 0, "gold", 0)
            out = stage.process(pa.Table.from_pylist([row], schema=SCHEMA), shard)
            for reason in shard.dropped:
                drops.setdefault(url, reason)
            return out.column("text")[0].as_py() if out.num_rows else None

        return run

    return {
        "synth extract_html (cascade, [en])": synth_stage(cascade_languages=["en"]),
        "synth extract_html (defaults)": synth_stage(),  # no language list: the cascade's large-page rule only
        "synth extract_html (no cascade)": synth_stage(cascade=False),
        "trafilatura (defaults)": lambda url, raw: trafilatura.extract(raw.decode("utf-8", "replace"), url=url),
        "trafilatura fast": lambda url, raw: trafilatura.extract(raw.decode("utf-8", "replace"), url=url, fast=True),
        "resiliparse main_content": lambda url, raw: extract_plain_text(
            HTMLTree.parse(raw.decode("utf-8", "replace")), main_content=True, alt_texts=False
        ),
    }


def bench_gold() -> None:
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    pages = load_gold()
    drops: dict[str, str] = {}
    systems = gold_systems(drops)
    counts: dict[str, list] = {name: [] for name in systems}
    seconds = dict.fromkeys(systems, 0.0)
    empty = dict.fromkeys(systems, 0)
    for _, url, raw, gold in pages:
        for name, fn in systems.items():
            start = time.perf_counter()
            try:
                text = fn(url, raw)
            except Exception:  # noqa: BLE001 - an extractor that fails on a page predicts nothing
                text = None
            seconds[name] += time.perf_counter() - start
            empty[name] += not (text or "").strip()
            counts[name].append(page_counts(gold, text))
    print(
        f"{len(pages)} pages with gold article bodies from {SHARED / 'extraction'} (article-extraction-benchmark scoring)"
    )
    print(f"{'system':34s} {'precision':>15s} {'recall':>15s} {'F1':>15s} {'pages/s':>8s} {'empty':>6s}")
    results = {}
    for name in systems:
        s, ci = scores(counts[name]), bootstrap(counts[name])
        results[name] = s
        cells = " ".join(f"{s[k]:.3f} +- {ci[k]:.3f}".rjust(15) for k in ("precision", "recall", "f1"))
        print(f"{name:34s} {cells} {len(pages) / seconds[name]:8.1f} {empty[name]:6d}")
    cascade, plain = results["synth extract_html (cascade, [en])"], results["synth extract_html (no cascade)"]
    # The cascade is meant to drop pages outside the pipeline's languages: show that
    # it dropped those, and that on the pages it is meant to keep nothing changed.
    from synth.ingest.langid import LanguageFilter, LanguageOptions

    lid = LanguageFilter(LanguageOptions())
    gold_languages = lid.predict([gold for *_, gold in pages])[0]
    dropped = [(url, reason, lang) for (_, url, _, _), lang in zip(pages, gold_languages) if (reason := drops.get(url))]
    by_reason = Counter(f"{reason} (gold {lang})" for _, reason, lang in dropped)
    print(f"synth dropped {len(dropped)} pages: " + ", ".join(f"{k} x{v}" for k, v in sorted(by_reason.items())))
    english = [i for i, lang in enumerate(gold_languages) if lang == "en"]
    print(f"on the {len(english)} pages whose gold text is English (lid.176):")
    for name in systems:
        s = scores([counts[name][i] for i in english])
        print(f"  {name:34s} P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f}")
    print(
        f"f1_cascade={cascade['f1']:.3f} f1_defaults={results['synth extract_html (defaults)']['f1']:.3f} f1_no_cascade={plain['f1']:.3f} f1_trafilatura={results['trafilatura (defaults)']['f1']:.3f}"
    )


def bench_extractors() -> None:
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    pages = load_pages()
    print(f"{len(pages)} HTML pages from {SHARED / 'warc'}")
    # Page by page, every extractor in turn: load from other processes on a
    # shared machine then slows all of them alike, and the ratios hold.
    fns = extractors()
    outputs = {name: [] for name in fns}
    seconds = dict.fromkeys(fns, 0.0)
    for _, page in pages:
        for name, fn in fns.items():
            start = time.perf_counter()
            try:
                text = fn(page)
            except Exception:  # noqa: BLE001 - counted as an empty extraction
                text = None
            seconds[name] += time.perf_counter() - start
            outputs[name].append(text)
    rates = {name: len(pages) / seconds[name] for name in fns}
    full, fast = outputs["trafilatura (default)"], outputs["trafilatura fast"]
    print(f"{'extractor':40s} {'pages/s':>8s} {'non-empty':>9s} {'agree(full)':>11s} {'agree(fast)':>11s}")
    for name, texts in outputs.items():
        a_full = [word_f1(r, t) for r, t in zip(full, texts) if r]
        a_fast = [word_f1(r, t) for r, t in zip(fast, texts) if r]
        print(
            f"{name:40s} {rates[name]:8.1f} {sum(1 for t in texts if t):9d} {sum(a_full) / len(a_full):11.3f} {sum(a_fast) / len(a_fast):11.3f}"
        )


def bench_warc(repeat: int = 5) -> None:
    from fastwarc.warc import ArchiveIterator as FastIterator
    from fastwarc.warc import WarcRecordType
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    def fast(path):
        n = 0
        for rec in FastIterator(path, record_types=WarcRecordType.any_type, parse_http=False, quirks_mode=True):
            rec.reader.read()
            n += 1
        return n

    def warcio(path):
        n = 0
        with open(path, "rb") as fh:
            for rec in WarcioIterator(fh, arc2warc=True):
                rec.content_stream().read()
                n += 1
        return n

    print(f"{'file':36s} {'fastwarc':>22s} {'warcio':>22s}")
    for path in sorted(glob.glob(str(SHARED / "warc" / "*"))):
        cells = []
        for fn in (fast, warcio):
            try:
                start = time.perf_counter()
                for _ in range(repeat):
                    n = fn(path)
                rate = n * repeat / (time.perf_counter() - start)
                cells.append(f"{n:5d} rec {rate:9.0f}/s")
            except Exception as exc:  # noqa: BLE001 - the point is to see which reader fails
                cells.append(f"error: {type(exc).__name__}"[:22])
        print(f"{Path(path).name:36s} {cells[0]:>22s} {cells[1]:>22s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warc", action="store_true", help="compare WARC readers instead of extractors")
    parser.add_argument(
        "--agreement", action="store_true", help="agreement between extractors on the shared WARC pages (no gold)"
    )
    args = parser.parse_args(argv)
    if args.warc:
        bench_warc()
    elif args.agreement:
        bench_extractors()
    else:
        bench_gold()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
