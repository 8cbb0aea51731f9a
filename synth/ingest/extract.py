"""Stage `extract_html`: an HTML page -> its main text.

The extractor is an option; the default is the one that measured best on the
shared pages (benchmarks/extractors.py): trafilatura without its external
fallbacks (`fast`), whose extraction F1 on the anchors' gold set is 0.920 (full
trafilatura 0.926), with its recall retry limited to pages up to 100 kB: on the
shared pages that gave the same output as trafilatura fast at 1.4x its speed
(five pages over 300 kB took 70% of its time). resiliparse is ~10x faster again
but scores F1 0.842 on the gold set and agrees with trafilatura on only ~70% of
the words here, so it is offered for throughput-first runs only.

Decoding order: valid UTF-8, then the HTTP header's charset, then a `<meta>`
charset, then resiliparse's detector; a declared charset that fails on the bytes
is not trusted (ClueWeb pages declare EUC-JP or Shift-JIS and sometimes lie).

The cascade (synth/ingest/cascade.py, on by default) runs a cheap first pass
and drops the pages that (measured: almost) certainly fail before any
trafilatura parse: with `cascade_languages` set, over every page; without, over
pages with `cascade_alpha_min_tags` tags or more only. Every page's extraction
runs under `page_timeout` (synth/ingest/deadline.py): a page that stalls is an `extract_timeout` drop.
"""

from __future__ import annotations

import codecs
import html as html_lib
import logging
import re
import time
from typing import Literal

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Shard, Stage, StageOptions
from synth.ingest.cascade import CheapPass, CheapText, markup_tags
from synth.ingest.deadline import PageDeadline

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-.:]+)""", re.I)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)
# Aliases browsers apply: pages labelled Latin-1 are decoded as Windows-1252, and
# Shift-JIS pages often use the Windows extensions (cp932).
_BROWSER_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "euc-jp": "euc_jis_2004",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
}


class ExtractOptions(StageOptions):
    extractor: Literal["trafilatura", "resiliparse"] = "trafilatura"
    # trafilatura: skip the readability/justext fallbacks (F1 0.920 vs 0.926, faster)
    fast: bool = True
    include_tables: bool = True
    include_comments: bool = False
    # trafilatura: prefer precision (drops more boilerplate and some text)
    favor_precision: bool = False
    # trafilatura: when an extraction is short and covers little of the page it
    # extracts again in recall mode. That retry costs superlinear time on big
    # pages (seconds on 0.3-1.2 MB forum listings) and changed no output above
    # 100 kB on the shared pages, so it runs only on pages up to this many bytes
    # (None: always, as trafilatura does; 0: never). benchmarks/extractors.py.
    recall_retry_max_bytes: int | None = Field(default=100_000, ge=0)
    # Pages larger than this are dropped rather than parsed (they stall extraction).
    max_html_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Extractions shorter than this (characters, after trimming) are dropped.
    min_chars: int = Field(default=1, ge=0)
    # A page whose extraction takes longer than this (seconds) is dropped as
    # `extract_timeout` instead of stalling its worker (None: no limit).
    page_timeout: float | None = Field(default=30.0, gt=0)
    # The cascade (synth/ingest/cascade.py): a cheap resiliparse + lid.176 pass
    # drops pages that certainly fail before trafilatura parses them. It runs with
    # the trafilatura extractor (resiliparse is the cheap pass itself) when
    # `cascade_languages` is set.
    cascade: bool = True
    # The languages the pipeline keeps (lid.176 codes: give langid's `languages`);
    # a page confidently in another language is dropped early. Empty: no cascade.
    cascade_languages: list[str] = Field(default_factory=list)
    # lid.176 probability (on the cheap text) needed to call a page's language
    # unwanted. On 422 real pages no page scoring even 0.5 for another language
    # had English trafilatura text that langid keeps; 0.8 leaves a wide margin.
    cascade_min_language_score: float = Field(default=0.8, ge=0.0, le=1.0)
    # Pages in a spaced language with fewer whitespace words than this in their
    # whole visible text are dropped early (Gopher's quality rule needs 50; 0: off).
    cascade_min_words: int = Field(default=25, ge=0)
    # Pages with at least `cascade_alpha_min_tags` tags whose cheap main text has
    # fewer words with a letter than this share are dropped early (Gopher needs
    # 0.8 on the extracted text; None: off). These big listings are where
    # trafilatura's time goes; this rule also runs without a language list, on
    # those pages only. Measured in synth/ingest/cascade.py.
    cascade_min_alpha_words_ratio: float | None = Field(default=0.75, ge=0.0, le=1.0)
    cascade_alpha_min_tags: int = Field(default=5_000, ge=0)


class ExtractHtml(Stage):
    type = "extract_html"
    Options = ExtractOptions
    reads = ("html",)
    writes = ("text", "title", "charset")
    removes = ("html",)
    options: ExtractOptions

    def column_types(self) -> dict[str, pa.DataType]:
        return {"text": pa.string(), "title": pa.string(), "charset": pa.string()}

    def setup(self) -> None:
        # trafilatura logs a warning per odd page; the ledger already says what happened
        logging.getLogger("trafilatura").setLevel(logging.ERROR)
        self._deadline = PageDeadline(self.options.page_timeout)
        self._cheap: CheapPass | None = None
        # The cheap pass costs ~9 ms a page (resiliparse twice, lid.176), a fifth of
        # trafilatura: it pays where pages in unwanted languages are common. Without
        # a language list only its word rule could act on small pages, which spared
        # 3% of the shared crawl pages for a 20% cost, so then only large pages
        # (the alpha rule) take it.
        opts = self.options
        if (
            opts.cascade
            and opts.extractor == "trafilatura"
            and (opts.cascade_languages or opts.cascade_min_alpha_words_ratio is not None)
        ):
            self._cheap = CheapPass(
                opts.cascade_languages,
                opts.cascade_min_language_score,
                opts.cascade_min_words,
                min_alpha_words_ratio=opts.cascade_min_alpha_words_ratio,
                alpha_min_tags=opts.cascade_alpha_min_tags,
            )
        if self.options.extractor == "trafilatura":
            import trafilatura
            import trafilatura.core

            # Without the setting (older trafilatura) there is no retry to limit.
            self._can_limit_retry = hasattr(trafilatura.core, "ESCALATION_MAX_LENGTH")
            self._trafilatura = trafilatura
        else:
            from resiliparse.extract.html2text import extract_plain_text
            from resiliparse.parse.html import HTMLTree

            self._extract_plain_text = extract_plain_text
            self._html_tree = HTMLTree

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        n = table.num_rows
        if n == 0 or "html" not in table.column_names:
            return table
        html_col = table.column("html").to_pylist()
        text_col = table.column("text").to_pylist() if "text" in table.column_names else [None] * n
        url_col = table.column("url").to_pylist() if "url" in table.column_names else [None] * n
        charset_col = table.column("charset").to_pylist() if "charset" in table.column_names else [None] * n
        title_col = table.column("title").to_pylist() if "title" in table.column_names else [None] * n
        keep = [True] * n
        texts, charsets, titles = list(text_col), list(charset_col), list(title_col)
        # With the cascade, every page gets the cheap pass first and only survivors
        # are extracted; decoded pages are not kept in between (a shard can be large),
        # a survivor is decoded again.
        cheap_pages: list[int] = []  # pages that take the cheap pass
        cascade_rows: list[int] = []  # ... and that it could read
        cheap_texts: list[CheapText] = []
        cheap_seconds = 0.0
        for i, raw in enumerate(html_col):
            if raw is None:
                continue  # a text record (book, JSONL): nothing to extract
            raw = html_col[i] = _as_bytes(raw)
            if len(raw) > self.options.max_html_bytes:
                keep[i] = False
                shard.drop(_sample_row(table, i), "html_too_large", {"bytes": len(raw)})
                continue
            page, encoding = decode_html(raw, charset_col[i])
            charsets[i] = encoding
            if not titles[i]:
                titles[i] = _title(raw, encoding)
            tags = markup_tags(raw) if self._cheap is not None else 0
            if self._cheap is None or not self._cheap.wants(tags):
                texts[i] = self._extract_row(table, shard, i, page, url_col[i], len(raw), keep)
                continue
            cheap_pages.append(i)
            start = time.perf_counter()
            cheap = self._cheap_texts(table, shard, i, page, len(raw), tags, keep)
            cheap_seconds += time.perf_counter() - start
            if cheap is not None:
                cascade_rows.append(i)
                cheap_texts.append(cheap)
        if cheap_pages:  # (none without a language list when no page has much markup)
            start = time.perf_counter()
            verdicts = self._cheap.verdicts(cheap_texts)
            pages = len(cheap_pages)
            for i, verdict in zip(cascade_rows, verdicts):
                if verdict.reason is not None:
                    keep[i] = False
                    shard.drop(_sample_row(table, i), verdict.reason, verdict.scores())
                    shard.count(f"cascade.spared.{verdict.reason}")
            shard.count("cascade.seconds", round(cheap_seconds + time.perf_counter() - start, 4))
            shard.count("cascade.pages", pages)
            shard.count("cascade.passed", sum(1 for i in cheap_pages if keep[i]))
            for i in cheap_pages:
                if keep[i]:
                    raw = html_col[i]
                    page = decode_html(raw, charset_col[i])[0]
                    texts[i] = self._extract_row(table, shard, i, page, url_col[i], len(raw), keep)
        out = table
        for name, values in (("text", texts), ("title", titles), ("charset", charsets)):
            array = pa.array(values, type=pa.string())
            if name in out.column_names:
                out = out.set_column(out.column_names.index(name), name, array)
            else:
                out = out.append_column(name, array)
        out = out.drop_columns(["html"])
        if all(keep):
            return out
        return out.filter(pa.array(keep, type=pa.bool_()))

    def _cheap_texts(
        self, table: pa.Table, shard: Shard, i: int, page: str, size: int, tags: int, keep: list[bool]
    ) -> CheapText | None:
        """The cheap pass's reading of one page; None leaves the page to the full extractor."""
        try:
            cheap = self._deadline.call(self._cheap.texts, page, tags)
        except Exception:  # noqa: BLE001 - undecided here: the full extractor gets the page
            return None
        if self._deadline.expired:
            keep[i] = False
            shard.drop(
                _sample_row(table, i),
                "extract_timeout",
                {"seconds": self.options.page_timeout, "bytes": size, "step": "cascade"},
            )
            return None
        return cheap

    def _extract_row(
        self, table: pa.Table, shard: Shard, i: int, page: str, url: str | None, size: int, keep: list[bool]
    ) -> str | None:
        """Full extraction of one page under the time limit; a failure is a counted drop."""
        try:
            text = self._deadline.call(self._extract, page, url, size)
        except Exception as exc:  # noqa: BLE001 - one bad page is one drop
            keep[i] = False
            shard.drop(_sample_row(table, i), "extraction_error", {"error": f"{type(exc).__name__}: {exc}"[:300]})
            return None
        if self._deadline.expired:
            keep[i] = False
            shard.drop(_sample_row(table, i), "extract_timeout", {"seconds": self.options.page_timeout, "bytes": size})
            return None
        text = (text or "").strip()
        if len(text) < max(1, self.options.min_chars):
            keep[i] = False
            shard.drop(_sample_row(table, i), "empty_extraction", {"chars": len(text)})
            return None
        return text

    def _extract(self, page: str, url: str | None, size: int) -> str | None:
        if self.options.extractor == "resiliparse":
            tree = self._html_tree.parse(page)
            return self._extract_plain_text(tree, main_content=True, alt_texts=False, links=False, form_fields=False)
        limit = self.options.recall_retry_max_bytes
        if limit is None or not self._can_limit_retry or size <= limit:
            return self._trafilatura_extract(page, url)
        # trafilatura has no switch for its recall escalation; its size limit is a
        # module setting, so it is lowered for this call only and put back.
        core = self._trafilatura.core
        saved = core.ESCALATION_MAX_LENGTH
        core.ESCALATION_MAX_LENGTH = 0
        try:
            return self._trafilatura_extract(page, url)
        finally:
            core.ESCALATION_MAX_LENGTH = saved

    def _trafilatura_extract(self, page: str, url: str | None) -> str | None:
        opts = self.options
        return self._trafilatura.extract(
            page,
            url=url,
            fast=opts.fast,
            include_comments=opts.include_comments,
            include_tables=opts.include_tables,
            favor_precision=opts.favor_precision,
            deduplicate=False,
            with_metadata=False,
        )


def _as_bytes(raw: bytes | str) -> bytes:
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    name = _BROWSER_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(raw: bytes, declared: str | None) -> tuple[str, str]:
    """Bytes -> text with the charset the page most likely uses, and its name.

    Bytes that are valid UTF-8 are UTF-8 whatever the page declares: other
    encodings almost never form valid multi-byte UTF-8 by chance, while pages
    saying "iso-8859-1" over UTF-8 bytes are common.
    """
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    tried = ["utf-8"]
    for candidate in (declared, _meta_charset(raw)):
        codec = _codec(candidate)
        if codec and codec not in tried:
            tried.append(codec)
            try:
                return raw.decode(codec), codec
            except UnicodeDecodeError:
                continue
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    guess = _codec(detect_encoding(raw)) or "cp1252"
    return bytes_to_str(raw, guess, errors="replace"), guess


def _meta_charset(raw: bytes) -> str | None:
    m = _META_CHARSET.search(raw, 0, 8192)
    return m.group(1).decode("ascii", "replace") if m else None


def _title(raw: bytes, encoding: str) -> str | None:
    m = _TITLE.search(raw, 0, 65536)
    if not m:
        return None
    title = " ".join(html_lib.unescape(m.group(1).decode(encoding, "replace")).split())
    return title[:500] or None


def _sample_row(table: pa.Table, i: int) -> dict:
    row = table.slice(i, 1).to_pylist()[0]
    if isinstance(row.get("html"), (bytes, str)):
        row["html"] = row["html"][:500]
    return row
