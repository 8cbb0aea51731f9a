"""Broken inputs: each gives counted skips (keeping the good records around the
fault) or a clear one-line error, never a lost shard."""

from __future__ import annotations

import gzip
import json

import pytest

from synth.core.executor import InputError
from synth.core.stage import Shard
from synth.ingest.read import ReadDocuments, ReadOptions


def http_response(html: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(html)}\r\n\r\n").encode() + html


def warc_record(url: str, payload: bytes, n: int = 0) -> bytes:
    head = (
        "WARC/1.0\r\nWARC-Type: response\r\n"
        f"WARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{n:012d}>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload + b"\r\n\r\n"


def page(n: int) -> bytes:
    body = " ".join(f"Sentence {k} of page {n} is about rivers and hills." for k in range(12))
    return f"<!DOCTYPE html><html><head><title>Page {n}</title></head><body><article><p>{body}</p></article></body></html>".encode()


def records(count: int) -> list[bytes]:
    return [warc_record(f"http://example.com/{n}", http_response(page(n)), n) for n in range(count)]


def gz_members(chunks: list[bytes]) -> list[bytes]:
    return [gzip.compress(c, mtime=0) for c in chunks]


def read(path, **options):
    stage = ReadDocuments(ReadOptions(**options))
    spec = stage.list_shards([str(path)])[0]
    shard = Shard("00-read", 0, "part-00000", 0)
    table = stage.read(spec, shard)
    return table, shard


def urls(table):
    return table.column("url").to_pylist()


# -- the shared real broken files ---------------------------------------------------


def test_shared_truncated_warc_counts_the_cut_record(shared_data):
    table, shard = read(shared_data / "warc" / "bad-truncated.warc.gz")
    assert table.num_rows == 0
    assert dict(shard.dropped) == {"truncated_record": 1}
    kept, shard = read(shared_data / "warc" / "bad-truncated.warc.gz", keep_truncated=True)
    assert kept.num_rows == 1 and shard.counters["kept_truncated_records"] == 1
    assert kept.column("html")[0].as_py().startswith(b"<!DOCTYPE html>")


def test_shared_odd_block_sized_records_are_counted_skips(shared_data):
    table, shard = read(shared_data / "warc" / "odd-block-sized-records.warc.gz")
    assert table.num_rows == 0
    assert not shard.dropped
    assert shard.counters["skipped.unknown_records"] == 3


def test_shared_bad_length_warc_is_read_to_its_end(shared_data):
    # warcio stops after 3 responses here; we keep all 7
    table, shard = read(shared_data / "warc" / "bad-length.warc")
    assert table.num_rows == 7
    assert "http://www.example.com/fb-social-plugins.html" in urls(table)
    assert not shard.dropped


# -- synthetic faults -----------------------------------------------------------------


def test_corrupt_gzip_member_keeps_records_before_and_after(tmp_path):
    members = gz_members(records(6))
    bad = bytearray(members[2])
    for k in range(20, 60):
        bad[k] ^= 0x55
    members[2] = bytes(bad)
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(b"".join(members))
    table, shard = read(path)
    assert urls(table) == [f"http://example.com/{n}" for n in (0, 1, 3, 4, 5)]
    assert dict(shard.dropped) == {"corrupt_record": 1}


def test_garbled_header_in_plain_warc_resynchronises(tmp_path):
    recs = records(6)
    recs[3] = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: zz\r\n\r\nnot a record" + recs[3][60:]
    path = tmp_path / "garbled.warc"
    path.write_bytes(b"".join(recs))
    table, shard = read(path)
    assert urls(table) == [f"http://example.com/{n}" for n in (0, 1, 2, 4, 5)]
    assert shard.dropped["corrupt_record"] == 1


@pytest.mark.parametrize("gz", [True, False])
def test_file_cut_inside_last_record(tmp_path, gz):
    data = b"".join(gz_members(records(4)) if gz else records(4))
    path = tmp_path / ("cut.warc.gz" if gz else "cut.warc")
    path.write_bytes(data[: len(data) - 200])
    table, shard = read(path)
    assert urls(table) == [f"http://example.com/{n}" for n in range(3)]
    assert dict(shard.dropped) == {"truncated_record": 1}


def test_empty_file(tmp_path):
    path = tmp_path / "empty.warc.gz"
    path.write_bytes(b"")
    table, shard = read(path)
    assert table.num_rows == 0 and dict(shard.dropped) == {"empty_file": 1}


def test_plain_warc_named_gz_is_read_as_what_it_is(tmp_path):
    path = tmp_path / "not-really.warc.gz"
    path.write_bytes(b"".join(records(3)))
    table, shard = read(path)
    assert table.num_rows == 3
    assert shard.counters["files.gz_name_not_gzip"] == 1


def test_binary_junk_named_gz_is_one_counted_drop(tmp_path):
    path = tmp_path / "junk.warc.gz"
    path.write_bytes(bytes(range(256)) * 40)
    table, shard = read(path)
    assert table.num_rows == 0 and dict(shard.dropped) == {"unknown_format": 1}


def test_gzip_magic_with_broken_stream(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    table, shard = read(path)
    assert table.num_rows == 0 and sum(shard.dropped.values()) == 1


def test_invalid_utf8_text_is_repaired_and_counted(tmp_path):
    text = ("Ceci est un texte français déjà très correct. " * 40).encode("utf-8")
    path = tmp_path / "doc.txt"
    path.write_bytes(text[:500] + b"\xff\xfe\xc3" + text[500:])
    table, shard = read(path)
    out = table.column("text")[0].as_py()
    assert "français" in out and "\ufffd" in out
    assert shard.counters["repaired.invalid_bytes"] >= 1
    assert table.column("charset")[0].as_py() == "utf-8"


def test_fifty_megabyte_document_is_a_counted_drop(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as fh:
        line = b"word " * 200 + b"\n"
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            fh.write(line)
    table, shard = read(path)
    assert table.num_rows == 0 and dict(shard.dropped) == {"too_large": 1}
    sample = shard.rejects[0]
    assert sample.scores["bytes"] >= 50 * 1024 * 1024


def test_huge_jsonl_line_drops_only_that_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    with open(path, "w") as fh:
        fh.write(json.dumps({"text": "small one"}) + "\n")
        fh.write(json.dumps({"text": "x" * (2 * 1024 * 1024)}) + "\n")
        fh.write(json.dumps({"text": "small two"}) + "\n")
    table, shard = read(path, max_document_bytes=1024 * 1024)
    assert table.column("text").to_pylist() == ["small one", "small two"]
    assert dict(shard.dropped) == {"too_large": 1}


def test_malformed_jsonl_lines_are_counted_with_line_numbers(tmp_path):
    lines = [
        json.dumps({"text": "first good", "url": "u1"}).encode(),
        b'{"text": "unterminated',
        b"[1, 2, 3]",
        json.dumps({"body": "no text field"}).encode(),
        b"",
        json.dumps({"text": "caf\u00e9 ok"}).encode()[:-4] + b'\xe9 ok"}',  # Latin-1 byte inside
        json.dumps({"text": "last good"}).encode(),
    ]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    table, shard = read(path)
    assert table.column("text").to_pylist()[0] == "first good"
    assert table.column("text").to_pylist()[-1] == "last good"
    assert table.column("offset").to_pylist() == [1, 6, 7]
    assert dict(shard.dropped) == {"malformed_json": 2, "missing_text": 1}
    assert shard.counters["repaired.invalid_utf8_lines"] == 1
    assert shard.counters["skipped.blank_lines"] == 1
    lines_seen = sorted(r.scores["line"] for r in shard.rejects)
    assert lines_seen == [2, 3, 4]


def test_truncated_gzip_jsonl_keeps_what_came_before(tmp_path):
    data = gzip.compress(
        b"".join(json.dumps({"text": f"document number {i} " * 20}).encode() + b"\n" for i in range(2000)), mtime=0
    )
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    table, shard = read(path)
    assert 0 < table.num_rows < 2000
    assert table.column("text")[0].as_py().startswith("document number 0 ")
    assert dict(shard.dropped) == {"truncated_file": 1}


def test_missing_path_and_empty_glob_are_input_errors(tmp_path):
    stage = ReadDocuments(ReadOptions())
    with pytest.raises(InputError, match="does not exist"):
        stage.list_shards([str(tmp_path / "nope.warc.gz")])
    with pytest.raises(InputError, match="matched no files"):
        stage.list_shards([str(tmp_path / "*.warc.gz")])


def test_parquet_without_text_column_is_a_counted_unreadable_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), path)
    table, shard = read(path)
    assert table.num_rows == 0 and dict(shard.dropped) == {"unreadable_file": 1}
    assert (
        "no column 'text'" in shard.rejects[0].scores["error"] and "columns: body" in shard.rejects[0].scores["error"]
    )
    table, shard = read(path, text_field="body")
    assert table.column("text").to_pylist() == ["a", "b"]
    assert table.column("offset").to_pylist() == [1, 2]


@pytest.mark.parametrize("gz", [True, False])
def test_byte_range_shards_yield_each_record_once(tmp_path, gz):
    members = gz_members(records(20)) if gz else records(20)
    bad = bytearray(members[7])
    bad[30:50] = b"\x00" * 20  # a fault inside one range
    members[7] = bytes(bad)
    path = tmp_path / ("big.warc.gz" if gz else "big.warc")
    path.write_bytes(b"".join(members))
    whole, whole_shard = read(path)
    stage = ReadDocuments(ReadOptions(split_bytes=900))
    specs = stage.list_shards([str(path)])
    assert len(specs) > 3 and specs[0]["begin"] == 0 and specs[-1]["end"] == path.stat().st_size
    got, files = [], 0
    for i, spec in enumerate(specs):
        shard = Shard("00-read", i, f"part-{i:05d}", 0)
        got += stage.read(spec, shard).column("url").to_pylist()
        files += shard.counters["files.warc"]
    assert got == urls(whole)
    assert len(got) >= 19 and files == 1
