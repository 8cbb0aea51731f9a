"""The ingest cascade (a cheap first pass before trafilatura) and the per-page time limit."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from synth.core.config import ConfigError, build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import audit
from synth.core.stage import Shard
from synth.ingest.cascade import markup_tags
from synth.ingest.deadline import PageDeadline
from synth.ingest.extract import ExtractHtml, ExtractOptions
from synth.ingest.read import SCHEMA, ReadDocuments, ReadOptions

REPO = Path(__file__).resolve().parents[2]


def read_file(path):
    stage = ReadDocuments(ReadOptions())
    spec = stage.list_shards([str(path)])[0]
    return stage.read(spec, Shard("00-read", 0, "part-00000", 0))


def html_rows(pages: list[str]) -> pa.Table:
    rows = []
    for i, page in enumerate(pages):
        row = dict.fromkeys(SCHEMA.names)
        row.update(id=f"id{i}", html=page.encode(), url=f"http://example.com/{i}", source="t", format="warc", offset=i)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


class CountingExtract(ExtractHtml):
    """extract_html that counts the pages reaching trafilatura."""

    def setup(self):
        super().setup()
        self.full_extractions = 0
        inner = self._trafilatura_extract

        def counted(page, url):
            self.full_extractions += 1
            return inner(page, url)

        self._trafilatura_extract = counted


def extract(table, **options):
    stage = CountingExtract(ExtractOptions(**options))
    stage.ensure_setup()
    shard = Shard("01-extract_html", 0, "part-00000", 0)
    return stage.process(table, shard), shard, stage


ENGLISH = (
    "<html><body><article>"
    + "<p>"
    + "The river winds between the green hills and feeds the valley farms below. " * 12
    + "</p></article></body></html>"
)


def test_pages_in_unwanted_languages_never_reach_trafilatura(shared_data):
    ja = read_file(shared_data / "warc" / "clueweb-quirk-ja.warc.gz")
    table = pa.concat_tables([ja, html_rows([ENGLISH])])
    out, shard, stage = extract(table, cascade_languages=["en"])
    assert shard.dropped == {"cascade_language_not_wanted": ja.num_rows}
    assert stage.full_extractions == 1
    assert out.column("id").to_pylist() == ["id0"]
    assert shard.counters["cascade.spared.cascade_language_not_wanted"] == ja.num_rows
    assert shard.counters["cascade.pages"] == ja.num_rows + 1 and shard.counters["cascade.passed"] == 1
    sample = next(r for r in shard.rejects if r.reason == "cascade_language_not_wanted")
    assert sample.scores["cheap_language"] == "ja" and sample.scores["cheap_language_score"] >= 0.8
    # the survivor's text is exactly what extraction without the cascade gives
    plain, plain_shard, plain_stage = extract(table, cascade=False, cascade_languages=["en"])
    assert plain_stage.full_extractions == table.num_rows and not plain_shard.dropped
    assert (
        out.column("text")[0].as_py()
        == plain.filter(pa.compute.equal(plain.column("id"), "id0")).column("text")[0].as_py()
    )


def test_pages_with_next_to_no_text_are_dropped_early_but_not_unspaced_languages():
    tiny = "<html><body><p>Only a handful of words here, nothing more.</p></body></html>"
    japanese = (
        "<html><body><p>"
        + "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 6
        + "</p></body></html>"
    )
    out, shard, stage = extract(html_rows([tiny, japanese, ENGLISH]), cascade_languages=["en", "ja"])
    assert shard.dropped == {"cascade_too_little_text": 1}
    assert out.column("id").to_pylist() == ["id1", "id2"]
    assert stage.full_extractions == 2
    # the word rule can be switched off on its own
    out, shard, _ = extract(html_rows([tiny]), cascade_languages=["en"], cascade_min_words=0)
    assert not shard.dropped and out.num_rows == 1


def listing_page(rows: int) -> str:
    """A forum-style listing: ids, dates and counts in table cells, few words."""
    cells = "".join(
        f"<tr><td><a href='/p/{i}'>#{i}</a></td><td>2008-03-{i % 28 + 1:02d}</td><td>{i * 7}</td><td>{i * 13 % 997}</td><td>Re: set {i}</td></tr>"
        for i in range(rows)
    )
    return f"<html><body><table>{cells}</table></body></html>"


# prose with as much markup as a listing (every sentence in its own span)
LONG_ENGLISH = (
    "<html><body><article>"
    + ("<p>" + "<span>The river winds between the green hills and feeds the valley farms below.</span> " * 12 + "</p>")
    * 220
    + "</article></body></html>"
)


def test_pages_of_much_markup_mostly_not_words_are_dropped_early_with_or_without_a_language_list():
    listing = listing_page(2500)
    assert markup_tags(listing.encode()) > 5000 and markup_tags(LONG_ENGLISH.encode()) > 5000
    for options, cheap_pages in (({"cascade_languages": ["en"]}, 3), ({}, 2)):
        out, shard, stage = extract(html_rows([listing, LONG_ENGLISH, ENGLISH]), **options)
        assert shard.dropped == {"cascade_low_alpha_words": 1}, options
        assert out.column("id").to_pylist() == ["id1", "id2"]
        assert stage.full_extractions == 2
        # without a language list only the pages with much markup take the cheap pass
        assert (
            shard.counters["cascade.pages"] == cheap_pages
            and shard.counters["cascade.spared.cascade_low_alpha_words"] == 1
        )
        sample = next(r for r in shard.rejects if r.reason == "cascade_low_alpha_words")
        assert sample.scores["cheap_alpha_words_ratio"] < 0.75
    # a small listing is not looked at (it costs trafilatura little); the rule can be switched off
    out, shard, stage = extract(html_rows([listing_page(40)]))
    assert out.num_rows == 1 and stage.full_extractions == 1 and not shard.counters
    out, shard, stage = extract(html_rows([listing]), cascade_min_alpha_words_ratio=None)
    assert out.num_rows == 1 and not shard.dropped and not shard.counters


@pytest.mark.slow
def test_the_large_page_rule_drops_only_pages_gopher_drops_on_a_real_crawl(shared_data):
    """On the archive.org crawl the rule spares trafilatura its largest listings, and every
    page it drops is one the full extraction + langid + Gopher would drop too."""
    from synth.ingest.heuristics import (
        GopherQualityFilter,
        GopherQualityOptions,
        GopherRepetitionFilter,
        GopherRepetitionOptions,
    )
    from synth.ingest.langid import LanguageFilter, LanguageOptions

    pages = read_file(shared_data / "warc" / "aut-2008-crawl.warc.gz")
    out, shard, _ = extract(pages)
    plain, plain_shard, _ = extract(pages, cascade=False)
    spared = set(plain.column("id").to_pylist()) - set(out.column("id").to_pylist())
    assert len(spared) == shard.dropped["cascade_low_alpha_words"] >= 5
    assert shard.dropped - plain_shard.dropped == {"cascade_low_alpha_words": len(spared)}
    judged = plain.filter(pa.compute.is_in(plain.column("id"), pa.array(sorted(spared))))
    for stage in (
        LanguageFilter(LanguageOptions()),
        GopherRepetitionFilter(GopherRepetitionOptions()),
        GopherQualityFilter(GopherQualityOptions()),
    ):
        stage.ensure_setup()
        judged = stage.process(judged, Shard("02-judge", 0, "part-00000", 0))
    assert judged.num_rows == 0


def test_the_large_page_rule_spares_real_news_pages(shared_data):
    """The gold set's news and blog pages have less markup than the rule looks at, and
    its large pages all read as mostly words to the cheap pass anyway: the rule's 0.75
    bound sits below every one."""
    import gzip
    import json

    from synth.ingest.cascade import CheapPass
    from synth.ingest.extract import decode_html

    root = shared_data / "extraction"
    # the ratio of every large page, whatever its markup
    cheap = CheapPass([], 0.8, 25, min_alpha_words_ratio=0.75, alpha_min_tags=0)
    ratios, tags = [], []
    for key in sorted(json.loads((root / "ground-truth.json").read_text(encoding="utf-8"))):
        raw = gzip.decompress((root / "html" / f"{key}.html.gz").read_bytes())
        tags.append(markup_tags(raw))
        if len(raw) >= 100_000:
            ratios.append(cheap.texts(decode_html(raw, None)[0], 0).alpha_words_ratio)
    assert len(ratios) >= 100 and None not in ratios
    assert min(ratios) > 0.8
    # and by default no news page has the markup to be looked at
    assert max(tags) < ExtractOptions().cascade_alpha_min_tags
    # while a page of numbers is dropped
    numbers = "<p>" + "12 34 56 " * 40_000 + "</p>"
    assert [v.reason for v in cheap.verdicts([cheap.texts(numbers, 0)])] == ["cascade_low_alpha_words"]


def test_cascade_false_or_no_language_list_runs_no_cheap_pass(shared_data):
    ja = read_file(shared_data / "warc" / "clueweb-quirk-ja.warc.gz").slice(0, 3)
    for options in ({"cascade": False, "cascade_languages": ["en"]}, {}):
        out, shard, stage = extract(ja, **options)
        assert out.num_rows == 3 and not shard.dropped
        assert stage.full_extractions == 3
        assert not any(k.startswith("cascade.") for k in shard.counters)


def test_cascade_options_are_validated():
    with pytest.raises(ConfigError, match="cascade_min_language_score"):
        build_pipeline(
            {"name": "x", "stages": [{"type": "read"}, {"type": "extract_html", "cascade_min_language_score": 2}]}
        )
    with pytest.raises(ConfigError, match="page_timeout"):
        build_pipeline({"name": "x", "stages": [{"type": "read"}, {"type": "extract_html", "page_timeout": 0}]})


def _spin(seconds: float):
    """Pure-Python busy work that swallows ordinary exceptions, as extraction libraries do."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        try:
            n += 1
        except Exception:  # noqa: BLE001 - the deadline must get through this
            pass
    return n


@pytest.fixture
def no_outer_timer():
    """pytest-timeout arms its own SIGALRM timer, which makes PageDeadline (rightly)
    fall back to its watchdog; pause that timer to exercise the signal path."""
    remaining = signal.setitimer(signal.ITIMER_REAL, 0)
    yield
    if remaining[0]:
        signal.setitimer(signal.ITIMER_REAL, *remaining)


def test_a_stalled_page_becomes_an_extract_timeout_drop(no_outer_timer):
    stage = ExtractHtml(ExtractOptions(page_timeout=0.3))
    stage.ensure_setup()
    original = stage._extract

    def stalls_on_brooks(page, url, size):
        if "brook" in page:
            _spin(30)
        return original(page, url, size)

    stage._extract = stalls_on_brooks
    handler_before = signal.getsignal(signal.SIGALRM)
    shard = Shard("01-extract_html", 0, "part-00000", 0)
    start = time.monotonic()
    out = stage.process(html_rows([ENGLISH, ENGLISH.replace("river", "brook"), ENGLISH]), shard)
    assert time.monotonic() - start < 10
    assert shard.dropped == {"extract_timeout": 1}
    assert out.column("id").to_pylist() == ["id0", "id2"]
    assert stage._deadline.mode == "signal"
    # the timer is cleared and the previous SIGALRM handler is back
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    assert signal.getsignal(signal.SIGALRM) == handler_before


def test_deadline_restores_an_existing_handler_and_leaves_fast_calls_alone(no_outer_timer):
    seen = []
    previous = signal.signal(signal.SIGALRM, lambda *_: seen.append(1))
    try:
        deadline = PageDeadline(0.2)
        assert deadline.call(lambda: 42) == 42 and not deadline.expired
        assert deadline.call(_spin, 5) is None and deadline.expired and deadline.mode == "signal"
        assert deadline.call(sum, [1, 2]) == 3 and not deadline.expired
        signal.raise_signal(signal.SIGALRM)
        assert seen == [1]  # our handler is gone, the earlier one is back
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_deadline_under_someone_elses_timer_uses_the_watchdog_and_leaves_that_timer(no_outer_timer):
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 100)
        deadline = PageDeadline(0.2)
        assert deadline.call(_spin, 5) is None and deadline.expired and deadline.mode == "watchdog"
        assert 90 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
        deadline.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_deadline_off_the_main_thread_uses_one_watchdog_thread():
    results = {}

    def worker():
        deadline = PageDeadline(0.2)
        threads_before = threading.active_count()
        outcomes = []
        watchdogs = set()  # the watchdog thread behind each call: one, reused
        for _ in range(3):
            start = time.monotonic()
            value = deadline.call(_spin, 20)
            outcomes.append((value, deadline.expired, time.monotonic() - start))
            outcomes.append((deadline.call(lambda: "fast"), deadline.expired, 0.0))
            watchdogs.add(id(deadline._watchdog._thread))
        results["mode"] = deadline.mode
        results["outcomes"] = outcomes
        # one watchdog for all calls, not one thread per page
        results["threads_added"] = threading.active_count() - threads_before
        results["watchdogs"] = len(watchdogs)
        time.sleep(0.4)  # no late exception lands after the calls returned
        results["survived"] = True
        deadline.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join(60)
    assert results.get("survived"), results
    assert results["mode"] == "watchdog"
    # at most one new thread (threads of earlier tests may end meanwhile), and the same
    # watchdog thread behind every page: never a thread per page
    assert results["threads_added"] <= 1 and results["watchdogs"] == 1
    for i, (value, expired, seconds) in enumerate(results["outcomes"]):
        if i % 2 == 0:
            assert value is None and expired and seconds < 5
        else:
            assert value == "fast" and not expired


RAW = {
    "name": "cascade-test",
    "seed": 0,
    "stages": [
        {"type": "read"},
        {"type": "extract_html"},
        {"type": "split_passages", "max_chars": 2000, "min_chars": 200},
        {"type": "langid", "languages": ["en"], "min_score": 0.65},
        {"type": "gopher_quality"},
    ],
}


def _run(run_dir: Path, inputs: list[str], cascade: bool) -> set[str]:
    raw = {**RAW, "stages": [dict(s) for s in RAW["stages"]]}
    raw["stages"][1].update(cascade=cascade, cascade_languages=["en"])
    pipe = build_pipeline(raw)
    result = run_pipeline(
        pipe, PipelineSource(raw=raw, path=None, seed=pipe.seed), run_dir, inputs=inputs, executor=LocalExecutor(1)
    )
    return {r["id"] for p in result.output for r in pq.read_table(p, columns=["id"]).to_pylist()}


def test_cascade_keeps_everything_the_pipeline_keeps_and_the_ledger_says_what_it_spared(shared_data, tmp_path):
    inputs = [
        str(shared_data / "warc" / n)
        for n in ("cc-style-multilingual.warc.gz", "clueweb-quirk-ja.warc.gz", "bad-length.warc")
    ]
    with_cascade = _run(tmp_path / "cascade", inputs, True)
    without = _run(tmp_path / "plain", inputs, False)
    assert without and with_cascade == without
    stage = {s["stage"]: s for s in audit(tmp_path / "cascade")["stages"]}["01-extract_html"]
    spared = stage["counters"]["cascade.spared.cascade_language_not_wanted"]
    assert spared >= 29  # at least every Japanese page
    assert stage["dropped"]["cascade_language_not_wanted"] == spared
    assert stage["counters"]["cascade.pages"] - stage["counters"]["cascade.passed"] == sum(
        v for k, v in stage["dropped"].items() if k.startswith("cascade_")
    )


def test_shipped_pipelines_give_the_cascade_their_language_list():
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        stages = yaml.safe_load(path.read_text())["stages"]
        extract = next((s for s in stages if s["type"] == "extract_html"), None)
        langid = next((s for s in stages if s["type"] == "langid"), None)
        if extract is None or langid is None:
            continue
        assert extract.get("cascade_languages", []) == langid.get("languages", []), path.name
        assert extract.get("cascade", True), f"{path.name}: the cascade keeps 100% of the output, so it is on"


def test_a_page_the_cheap_pass_cannot_read_goes_to_full_extraction():
    stage = CountingExtract(ExtractOptions(cascade_languages=["en"]))
    stage.ensure_setup()

    def broken(page, size):
        raise ValueError("unparseable")

    stage._cheap.texts = broken
    shard = Shard("01-extract_html", 0, "part-00000", 0)
    out = stage.process(html_rows([ENGLISH]), shard)
    assert out.num_rows == 1 and not shard.dropped and stage.full_extractions == 1
    assert shard.counters["cascade.passed"] == 1
