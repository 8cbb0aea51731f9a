"""zstd-compressed inputs: `.warc.zst` with and without a dictionary (in a skippable
frame at the start, as the zstd WARC convention puts it), and `.jsonl.zst`."""

from __future__ import annotations

import struct

import pytest

from synth.core.stage import Shard
from synth.ingest.read import ReadDocuments, ReadOptions, describe_inputs
from synth.ingest.readers.sniff import sniff_format

zstandard = pytest.importorskip("zstandard")


def http_response(html: bytes) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(html)}\r\n\r\n".encode()
        + html
    )


def warc_record(n: int) -> bytes:
    html = f"<!DOCTYPE html><html><body><p>Page {n} tells of rivers, hills and the weather in spring.</p></body></html>".encode()
    payload = http_response(html)
    head = (
        "WARC/1.1\r\nWARC-Type: response\r\n"
        f"WARC-Target-URI: http://example.com/{n}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{n:012d}>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload + b"\r\n\r\n"


def read(path, **options):
    stage = ReadDocuments(ReadOptions(**options))
    shard = Shard("00-read", 0, "part-00000", 0)
    specs = stage.list_shards([str(path)])
    rows = []
    for spec in specs:
        rows += stage.read(spec, shard).to_pylist()
    return rows, shard, specs


def dictionary_frame(dictionary: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A5D, len(dictionary)) + dictionary


def test_warc_zst_one_frame_per_record(tmp_path):
    compressor = zstandard.ZstdCompressor(level=3)
    path = tmp_path / "crawl.warc.zst"
    path.write_bytes(b"".join(compressor.compress(warc_record(n)) for n in range(5)))
    assert sniff_format(path) == ("warc", "zstd")
    rows, shard, specs = read(path)
    assert [r["url"] for r in rows] == [f"http://example.com/{n}" for n in range(5)]
    assert all(r["html"].startswith(b"<!DOCTYPE html>") for r in rows)
    assert not shard.dropped and shard.counters["files.zstd"] == 1
    assert len(specs) == 1 and describe_inputs([str(path)])[0]["format"] == "warc"


@pytest.mark.parametrize("compress_dictionary", [False, True])
def test_warc_zst_with_embedded_dictionary(tmp_path, compress_dictionary):
    samples = [warc_record(n) for n in range(300)]
    trained = zstandard.train_dictionary(2048, samples)
    compressor = zstandard.ZstdCompressor(level=3, dict_data=trained)
    raw_dict = trained.as_bytes()
    stored = zstandard.ZstdCompressor().compress(raw_dict) if compress_dictionary else raw_dict
    path = tmp_path / "crawl.warc.zst"
    path.write_bytes(dictionary_frame(stored) + b"".join(compressor.compress(warc_record(n)) for n in range(7)))
    # without the dictionary the frames cannot be decoded: it really is used
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(compressor.compress(warc_record(0)))
    rows, shard, _ = read(path)
    assert [r["url"] for r in rows] == [f"http://example.com/{n}" for n in range(7)]
    assert not shard.dropped


def test_same_records_same_ids_as_gzip(tmp_path):
    import gzip

    records = [warc_record(n) for n in range(3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    zst = tmp_path / "a" / "crawl.warc"
    zst.write_bytes(b"".join(zstandard.ZstdCompressor().compress(r) for r in records))
    gz = tmp_path / "b" / "crawl.warc"
    gz.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records))
    zrows, _, _ = read(zst)
    grows, _, _ = read(gz)
    assert [r["html"] for r in zrows] == [r["html"] for r in grows]


def test_jsonl_zst(tmp_path):
    path = tmp_path / "docs.jsonl.zst"
    lines = b"".join(f'{{"text": "document {n}", "url": "http://x/{n}"}}\n'.encode() for n in range(4))
    path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    rows, shard, _ = read(path)
    assert [r["text"] for r in rows] == [f"document {n}" for n in range(4)]
    assert sniff_format(path) == ("jsonl", "zstd")


def test_damaged_zstd_frame_keeps_records_before_it(tmp_path):
    compressor = zstandard.ZstdCompressor()
    good = b"".join(compressor.compress(warc_record(n)) for n in range(3))
    bad = bytearray(compressor.compress(warc_record(3)))
    bad[len(bad) // 2 :] = b"\xff" * (len(bad) - len(bad) // 2)
    path = tmp_path / "crawl.warc.zst"
    path.write_bytes(good + bytes(bad))
    rows, shard, _ = read(path)
    assert [r["url"] for r in rows] == [f"http://example.com/{n}" for n in range(3)]
    assert shard.dropped["corrupt_record"] == 1  # the damage, counted; a cut record may join it
    assert set(shard.dropped) <= {"corrupt_record", "truncated_record"}
