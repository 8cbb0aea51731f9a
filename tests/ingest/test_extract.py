"""The `extract_html` stage: decoding, extraction, drops."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.ingest.extract import ExtractHtml, ExtractOptions, decode_html
from synth.ingest.read import SCHEMA, ReadDocuments, ReadOptions

JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def read_file(path):
    stage = ReadDocuments(ReadOptions())
    spec = stage.list_shards([str(path)])[0]
    return stage.read(spec, Shard("00-read", 0, "part-00000", 0))


def extract(table, **options):
    stage = ExtractHtml(ExtractOptions(**options))
    stage.ensure_setup()
    shard = Shard("01-extract_html", 0, "part-00000", 0)
    return stage.process(table, shard), shard


def html_rows(pages: list[bytes], charset=None) -> pa.Table:
    rows = []
    for i, page in enumerate(pages):
        row = dict.fromkeys(SCHEMA.names)
        row.update(
            id=f"id{i}", html=page, url=f"http://example.com/{i}", source="t", format="warc", offset=i, charset=charset
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


ARTICLE = (
    "<html><head><title>River &amp; hills</title></head><body><nav><a href='/'>Home</a> <a href='/a'>About</a></nav>"
    "<article><h1>Rivers</h1><p>" + "The river winds between the green hills and feeds the valley farms. " * 8 + "</p>"
    "<p>" + "Every spring the snow melts and the water rises over the old stone bridge. " * 6 + "</p></article>"
    "<footer>Copyright 2024 Example Inc. All rights reserved.</footer></body></html>"
)


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_main_text_replaces_html(extractor):
    out, shard = extract(html_rows([ARTICLE.encode()]), extractor=extractor)
    assert "html" not in out.column_names
    text = out.column("text")[0].as_py()
    assert "old stone bridge" in text and "river winds" in text
    assert "All rights reserved" not in text
    assert out.column("title")[0].as_py() == "River & hills"
    assert not shard.dropped


def test_shift_jis_and_euc_jp_pages_decode(shared_data):
    table = read_file(shared_data / "warc" / "clueweb-quirk-ja.warc.gz").slice(0, 5)
    out, shard = extract(table)
    assert out.num_rows == 5
    for text in out.column("text").to_pylist():
        assert len(JAPANESE.findall(text)) > 20
        assert "\ufffd" not in text
    page = (
        "<html><head><meta charset='Shift_JIS'><title>日本語</title></head><body><p>"
        + "吾輩は猫である。名前はまだ無い。" * 20
        + "</p></body></html>"
    )
    decoded, encoding = decode_html(page.encode("shift_jis"), None)
    assert "吾輩は猫である" in decoded and encoding == "cp932"


def test_wrong_declared_charset_falls_back():
    page = ("<html><body><p>" + "Ceci est déjà très français. " * 30 + "</p></body></html>").encode("utf-8")
    decoded, encoding = decode_html(page, "us-ascii")
    assert "déjà" in decoded


def test_empty_extraction_and_oversized_pages_are_drops():
    pages = [
        b"<html><head><script>var x = 1;</script></head><body></body></html>",
        ARTICLE.encode(),
        b"<html>" + b"<p>x</p>" * 200_000 + b"</html>",
    ]
    out, shard = extract(html_rows(pages), max_html_bytes=1_000_000)
    assert out.column("id").to_pylist() == ["id1"]
    assert dict(shard.dropped) == {"empty_extraction": 1, "html_too_large": 1}
    assert all(r.record.get("html") is None or len(r.record["html"]) <= 500 for r in shard.rejects)


def test_text_records_pass_through(shared_data):
    book = read_file(shared_data / "books" / "pg11_alice.txt")
    out, shard = extract(book)
    assert out.column("text").to_pylist() == book.column("text").to_pylist()
    assert out.column("title").to_pylist() == book.column("title").to_pylist()
    assert "html" not in out.column_names and not shard.dropped


def test_unknown_extractor_is_a_config_error():
    with pytest.raises(ValueError):
        ExtractOptions(extractor="boilerpipe")


def test_recall_retry_limit_keeps_output_and_restores_setting(shared_data):
    import trafilatura.core

    before = trafilatura.core.ESCALATION_MAX_LENGTH
    import pyarrow.compute as pc

    pages = read_file(shared_data / "warc" / "cc-style-multilingual.warc.gz").slice(0, 8)
    pages = pages.filter(pc.less(pc.binary_length(pages.column("html")), 100_000))
    assert pages.num_rows >= 5
    always, _ = extract(pages, recall_retry_max_bytes=None)
    limited, _ = extract(pages)  # under the 100 kB default: trafilatura's own behaviour
    never, _ = extract(pages, recall_retry_max_bytes=0)
    assert limited.column("text").to_pylist() == always.column("text").to_pylist()
    assert all(t for t in never.column("text").to_pylist())
    assert before == trafilatura.core.ESCALATION_MAX_LENGTH
