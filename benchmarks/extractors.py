"""How the WARC reader and the HTML extractor were chosen: speed and agreement, side by side.

    .venv/bin/python benchmarks/extractors.py            # extractors on the shared HTML pages
    .venv/bin/python benchmarks/extractors.py --warc     # FastWARC vs warcio, incl. the broken files

There is no gold main text for these pages here, so quality is shown as agreement:
bag-of-words F1 of each extractor's output against trafilatura's full (default)
extraction, and against trafilatura fast. Gold-set F1 figures for trafilatura and
resiliparse come from /work/shared/ANCHORS.md (trafilatura 0.926, fast 0.920,
resiliparse 0.842); agreement is not F1 against gold and is reported as such.
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
        "trafilatura fast, favor_precision": lambda p: trafilatura.extract(p, fast=True, include_comments=False, favor_precision=True),
        "datatrove's trafilatura options": lambda p: trafilatura.extract(p, favor_precision=True, include_comments=False, deduplicate=False),
        "resiliparse main_content": lambda p: extract_plain_text(HTMLTree.parse(p), main_content=True, alt_texts=False),
    }
    try:
        import justext

        stop = justext.get_stoplist("English")
        out["justext (English stoplist)"] = lambda p: "\n".join(x.text for x in justext.justext(p.encode("utf-8"), stop) if not x.is_boilerplate)
    except ImportError:
        pass
    return out


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
        print(f"{name:40s} {rates[name]:8.1f} {sum(1 for t in texts if t):9d} {sum(a_full) / len(a_full):11.3f} {sum(a_fast) / len(a_fast):11.3f}")


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
    args = parser.parse_args(argv)
    if args.warc:
        bench_warc()
    else:
        bench_extractors()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
