"""The `read` source stage on the shared real crawls and books."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core.stage import Shard
from synth.ingest.read import SCHEMA, ReadDocuments, ReadOptions


def read_path(path, **options):
    stage = ReadDocuments(ReadOptions(**options))
    specs = stage.list_shards([str(path)])
    assert len(specs) == 1
    shard = Shard("00-read", 0, "part-00000", 0)
    return stage.read(specs[0], shard), shard


def test_shards_are_sorted_deduplicated_and_skip_licence_files(shared_data):
    stage = ReadDocuments(ReadOptions())
    books = str(shared_data / "books" / "*.txt")
    one = str(shared_data / "books" / "pg11_alice.txt")
    specs = stage.list_shards([books, one, str(shared_data / "warc" / "*.warc.gz")])
    paths = [s["path"] for s in specs]
    assert paths == sorted(paths) and len(paths) == len(set(paths))
    names = [p.rsplit("/", 1)[-1] for p in paths]
    assert "PG_LICENSE.txt" not in names and "PROVENANCE.txt" not in names
    assert names.count("pg11_alice.txt") == 1
    assert stage.list_shards([books, one]) == stage.list_shards([one, books])


def test_warc_html_responses_with_provenance(shared_data):
    table, shard = read_path(shared_data / "warc" / "cc-style-multilingual.warc.gz")
    assert table.schema == SCHEMA
    assert table.num_rows == 16
    row = table.slice(0, 1).to_pylist()[0]
    assert row["text"] is None and row["html"].lstrip().lower().startswith((b"<!doctype", b"<html"))
    assert row["url"].startswith("http") and row["format"] == "warc" and row["date"]
    assert "html" in row["content_type"]
    assert shard.counters["skipped.request_records"] == 17
    assert shard.counters["skipped.metadata_records"] == 16
    assert not shard.dropped


def test_ids_are_stable_and_distinct(shared_data):
    first, _ = read_path(shared_data / "warc" / "clueweb-quirk-ja.warc.gz")
    again, _ = read_path(shared_data / "warc" / "clueweb-quirk-ja.warc.gz")
    ids = first.column("id").to_pylist()
    assert ids == again.column("id").to_pylist()
    assert len(set(ids)) == len(ids) == 29
    offsets = first.column("offset").to_pylist()
    assert offsets == sorted(offsets) and offsets[0] > 0  # after the warcinfo record


def test_clueweb_lf_only_headers_and_charset(shared_data):
    table, _ = read_path(shared_data / "warc" / "clueweb-quirk-ja.warc.gz")
    charsets = set(table.column("charset").to_pylist())
    assert charsets & {"shift_jis", "euc-jp", "shift-jis", "sjis"}, charsets


def test_arc_and_warc_of_the_same_crawl_agree(shared_data):
    arc, arc_shard = read_path(shared_data / "warc" / "aut-2008-crawl.arc.gz")
    warc, _ = read_path(shared_data / "warc" / "aut-2008-crawl.warc.gz")
    assert arc.num_rows == warc.num_rows > 50
    assert set(arc.column("url").to_pylist()) == set(warc.column("url").to_pylist())
    assert set(arc.column("format").to_pylist()) == {"arc"}
    assert arc_shard.counters["skipped.non_html_responses"] > 0


def test_wet_conversion_records_are_text(shared_data):
    table, shard = read_path(shared_data / "warc" / "cc-main-2024-22-one-page.warc.wet.gz")
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["format"] == "wet" and row["html"] is None and len(row["text"]) > 100
    assert shard.counters["skipped.warcinfo_records"] == 1


def test_gutenberg_book_header_footer_and_metadata(shared_data):
    table, _ = read_path(shared_data / "books" / "pg11_alice.txt")
    row = table.to_pylist()[0]
    assert row["format"] == "gutenberg"
    assert row["title"] == "Alice’s Adventures in Wonderland" and row["author"] == "Lewis Carroll"
    assert row["declared_language"] == "English"
    text = row["text"]
    assert "PROJECT GUTENBERG" not in text.upper()[:2000] and "END OF THIS PROJECT GUTENBERG" not in text.upper()
    assert text.startswith("ALICE’S ADVENTURES IN WONDERLAND") and "Down the Rabbit-Hole" in text
    assert "\r" not in text


def test_latin1_book_decodes_to_the_same_text(shared_data):
    latin1, _ = read_path(shared_data / "books" / "pg24675_ontboezemingen_nl.latin1.txt")
    utf8, _ = read_path(shared_data / "books" / "pg24675_ontboezemingen_nl.txt")
    a, b = latin1.to_pylist()[0], utf8.to_pylist()[0]
    assert a["text"] == b["text"]
    assert a["author"] == b["author"] == "Gabriël (AKA Carel van Nievelt)"
    assert a["charset"] in ("iso8859-1", "latin-1", "cp1252") and b["charset"].startswith("utf-8")
    assert a["id"] != b["id"]  # the source differs


def test_jsonl_fields_and_parquet_column(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "\n".join(json.dumps({"body": f"doc {i}", "url": f"http://x/{i}", "title": "T"}) for i in range(3)) + "\n"
    )
    table, _ = read_path(path, text_field="body")
    assert table.column("text").to_pylist() == ["doc 0", "doc 1", "doc 2"]
    assert table.column("url").to_pylist()[1] == "http://x/1" and table.column("format")[0].as_py() == "jsonl"
    pq.write_table(pa.table({"text": ["p0", "p1"], "url": ["a", "b"]}), tmp_path / "docs.parquet")
    table, _ = read_path(tmp_path / "docs.parquet")
    assert table.column("text").to_pylist() == ["p0", "p1"] and table.column("url").to_pylist() == ["a", "b"]


@pytest.mark.parametrize("name", ["docs.txt", "docs.data"])
def test_format_comes_from_content_not_name(tmp_path, name):
    path = tmp_path / name
    path.write_text(json.dumps({"text": "hello"}) + "\n")
    table, _ = read_path(path)
    assert table.column("format").to_pylist() == ["jsonl"]


def test_ids_do_not_depend_on_where_the_corpus_lives(shared_data, tmp_path):
    import shutil

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(shared_data / "warc" / "cc-main-2024-22-one-page.warc.gz", tmp_path / d)
    a, _ = read_path(tmp_path / "a" / "cc-main-2024-22-one-page.warc.gz")
    b, _ = read_path(tmp_path / "b" / "cc-main-2024-22-one-page.warc.gz")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column("source").to_pylist() != b.column("source").to_pylist()


def test_describe_inputs_reports_sniffed_formats(shared_data):
    from synth.ingest.read import describe_inputs

    rows = {r["path"].rsplit("/", 1)[-1]: r for r in describe_inputs([str(shared_data / "warc" / "*")])}
    assert rows["aut-2008-crawl.arc.gz"]["format"] == "arc" and rows["aut-2008-crawl.arc.gz"]["gzip"]
    assert rows["bad-length.warc"]["format"] == "warc" and not rows["bad-length.warc"]["gzip"]
    assert rows["cc-main-2024-22-one-page.warc.wet.gz"]["format"] == "wet"


@pytest.mark.parametrize("name", ["aut-2008-crawl.warc.gz", "aut-2008-crawl.arc.gz"])
def test_split_real_crawl_matches_whole_file(shared_data, name):
    whole, _ = read_path(shared_data / "warc" / name)
    stage = ReadDocuments(ReadOptions(split_bytes=300_000))
    specs = stage.list_shards([str(shared_data / "warc" / name)])
    assert len(specs) >= 7
    ids = []
    for i, spec in enumerate(specs):
        shard = Shard("00-read", i, f"part-{i:05d}", 0)
        ids += stage.read(spec, shard).column("id").to_pylist()
        assert not shard.dropped
    assert ids == whole.column("id").to_pylist()
