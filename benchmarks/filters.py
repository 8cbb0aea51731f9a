"""Quality filters: synth vs datatrove on the same passages, side by side in one run.

    .venv/bin/python benchmarks/filters.py [--shared ../shared/data] [--repeat 3] [--limit N]

Passages: every shared book cut at paragraph boundaries (~1,500 chars) plus the
main text of the shared WARC pages. For each filter pair it prints ms/doc
(median of --repeat runs, one process), the speed ratio, the keep rate of
each, and how often the two agree on keep/drop. datatrove's language filter is
left out: it fetches its model from a hub at run time.

Then, per language (English book passages, Chinese passages of the multilingual
crawl, Japanese passages of the Shift-JIS crawl), synth's docs/s for every
quality filter: Chinese and Japanese are segmented into words (jieba, fugashi)
and judged with their FineWeb-2 thresholds, so they cost more per document.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute

from synth.core.stage import Shard
from synth.ingest.heuristics import C4BadWordsFilter, C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from synth.ingest.langid import LanguageFilter
from synth.ingest.passages import book_passages

REPO = Path(__file__).resolve().parents[1]


def warc_texts(path: Path) -> list[str]:
    """Main text of a WARC's HTML pages, through synth's own reader and extractor."""
    from synth.ingest.extract import ExtractHtml
    from synth.ingest.read import ReadDocuments

    shard = Shard("00-read", 0, "bench", 0)
    pages = ReadDocuments(ReadDocuments.Options()).read({"path": str(path)}, shard)
    extract = ExtractHtml(ExtractHtml.Options(extractor="resiliparse"))
    extract.ensure_setup()
    texts = extract.process(pages.filter(pa.compute.is_valid(pages.column("html"))), shard).column("text").to_pylist()
    return [t for t in texts if t and t.strip()]


def corpus(shared: Path, limit: int | None) -> list[str]:
    texts = [
        p
        for book in sorted((shared / "books").glob("pg*.txt"))
        if "latin1" not in book.name
        for p in book_passages(book)
    ]
    for name in ("aut-2008-crawl.warc.gz", "cc-style-multilingual.warc.gz"):
        texts += warc_texts(shared / "warc" / name)
    return texts[:limit] if limit else texts


def time_ours(stage, table: pa.Table, repeat: int) -> tuple[float, list[bool]]:
    stage.ensure_setup()
    runs, kept = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        scored = stage.process(
            table.append_column("_row", pa.array(range(table.num_rows))), Shard("01-bench", 0, "bench", 0)
        )
        runs.append(time.perf_counter() - start)
        kept_rows = set(scored.column("_row").to_pylist())
        kept = [i in kept_rows for i in range(table.num_rows)]
    return statistics.median(runs), kept


def our_reasons(stage, table: pa.Table) -> list[str | None]:
    scores = stage.score(table, Shard("01-bench", 0, "bench", 0))
    return [stage.decide({k: v[i] for k, v in scores.items()}) for i in range(table.num_rows)]


def time_theirs(flt, texts: list[str], repeat: int) -> tuple[float, list[str | None]]:
    """Median seconds and, per text, None (kept) or datatrove's drop reason."""
    from datatrove.data import Document

    runs, reasons = [], []
    for _ in range(repeat):
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        start = time.perf_counter()
        results = [flt.filter(d) for d in docs]
        runs.append(time.perf_counter() - start)
        reasons = [
            None if (r is True or (isinstance(r, tuple) and r[0])) else (r[1] if isinstance(r, tuple) else "dropped")
            for r in results
        ]
    return statistics.median(runs), reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    texts = corpus(args.shared, args.limit)
    table = pa.table({"text": texts})
    n = len(texts)
    print(f"{n} passages ({sum(map(len, texts)) / n:.0f} chars mean), median of {args.repeat} runs, one process")

    # language first, as in a pipeline: the heuristics read its `language` column
    langid = LanguageFilter(LanguageFilter.Options())
    seconds, _ = time_ours(langid, table, args.repeat)
    print(f"{'langid (lid.176)':24s} synth {seconds / n * 1e3:7.3f} ms/doc ({n / seconds:,.0f} docs/s)")
    table = langid.process(table, Shard("01-langid", 0, "bench", 0))

    try:
        from datatrove.pipeline import filters as dt
    except ImportError:
        dt = None
        print("datatrove not installed: synth timings only")

    pairs = [
        ("gopher_repetition", GopherRepetitionFilter, "GopherRepetitionFilter"),
        ("gopher_quality", GopherQualityFilter, "GopherQualityFilter"),
        ("c4_quality", C4QualityFilter, "C4QualityFilter"),
    ]
    print(
        f"{'filter':24s} {'synth ms/doc':>12s} {'datatrove':>10s} {'speedup':>8s} {'keep synth':>10s} {'keep dt':>8s} {'agree':>6s}"
    )
    disagreements = {}
    for name, ours_cls, theirs_name in pairs:
        stage = ours_cls(ours_cls.Options())
        ours_s, ours_kept = time_ours(stage, table, args.repeat)
        line = f"{name:24s} {ours_s / n * 1e3:12.3f}"
        if dt is not None:
            theirs_s, theirs_reasons = time_theirs(getattr(dt, theirs_name)(), texts, args.repeat)
            theirs_kept = [r is None for r in theirs_reasons]
            agree = sum(a == b for a, b in zip(ours_kept, theirs_kept)) / n
            line += (
                f" {theirs_s / n * 1e3:10.3f} {theirs_s / ours_s:7.1f}x"
                f" {sum(ours_kept) / n:10.3f} {sum(theirs_kept) / n:8.3f} {agree:6.3f}"
            )
            ours_reasons = our_reasons(stage, table)
            disagreements[name] = Counter(
                (o or "kept", t or "kept") for o, t in zip(ours_reasons, theirs_reasons) if (o is None) != (t is None)
            )
        else:
            line += f" {'-':>10s} {'-':>8s} {sum(ours_kept) / n:10.3f}"
        print(line, flush=True)
    for name, pairs_seen in disagreements.items():
        top = ", ".join(f"synth {o} / datatrove {t}: {k}" for (o, t), k in pairs_seen.most_common(3))
        print(f"  {name} disagreements: {top or 'none'}")
    per_language(args.shared, args.repeat)
    return 0


def language_passages(shared: Path) -> dict[str, list[str]]:
    """~600-character passages per language, cut as split_passages cuts them."""
    from synth.ingest.passages import split_text

    def cut(texts):
        return [t[s:e] for t in texts for s, e, _ in split_text(t, 600, 150) if e - s >= 150]

    out = {
        "en": [
            p
            for book in sorted((shared / "books").glob("pg*.txt"))[:2]
            if "latin1" not in book.name
            for p in book_passages(book, 600, 150)
        ]
    }
    crawl = cut(warc_texts(shared / "warc" / "cc-style-multilingual.warc.gz")) + cut(
        warc_texts(shared / "warc" / "clueweb-quirk-ja.warc.gz")
    )
    table = LanguageFilter(LanguageFilter.Options(min_score=0.0)).process(
        pa.table({"text": crawl}), Shard("01-langid", 0, "bench", 0)
    )
    for text, lang in zip(table.column("text").to_pylist(), table.column("language").to_pylist()):
        if lang in ("zh", "ja"):
            out.setdefault(lang, []).append(text)
    return out


def per_language(shared: Path, repeat: int) -> None:
    groups = language_passages(shared)
    filters = [
        ("gopher_repetition", GopherRepetitionFilter),
        ("gopher_quality", GopherQualityFilter),
        ("c4_quality", C4QualityFilter),
        ("c4_badwords", C4BadWordsFilter),
    ]
    print(f"\nper language (synth docs/s, median of {repeat}; passages ~600 chars)")
    print(f"{'language':10s} {'passages':>8s} " + " ".join(f"{name:>17s}" for name, _ in filters))
    for lang in ("en", "zh", "ja"):
        texts = groups.get(lang, [])
        if not texts:
            print(f"{lang:10s} {'0':>8s}")
            continue
        table = pa.table({"text": texts, "language": [lang] * len(texts)})
        cells = []
        for _, cls in filters:
            stage = cls(cls.Options(annotate_only=True))
            stage.process(
                table.slice(0, 1), Shard("01-warm", 0, "bench", 0)
            )  # segmenter and lists loaded once per process
            seconds, _ = time_ours(stage, table, repeat)
            cells.append(f"{len(texts) / seconds:>17,.0f}")
        print(f"{lang:10s} {len(texts):>8d} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    sys.exit(main())
