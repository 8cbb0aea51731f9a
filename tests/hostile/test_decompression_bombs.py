"""Small files that decompress into gigabytes stay a counted `too_large`
at bounded memory (measured in a child process, whose peak RSS is its own)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .bombs import gzip_bomb, http_head, small_page, warc_head, warc_record, zstd_bomb

# the checkout under test, for the child processes
REPO = str(Path(__file__).resolve().parents[2])

GIB_IN_MIB = 1024
# The reader's own footprint (Python, pyarrow, FastWARC) is ~100-150 MiB here; a
# reader that held one of these records whole would pass 1 GiB.
PEAK_LIMIT_MIB = 350

_CHILD = textwrap.dedent(
    """
    import json, sys
    from synth.core.stage import Shard
    from synth.ingest.read import ReadDocuments, ReadOptions

    stage = ReadDocuments(ReadOptions())
    shard = Shard("00-read", 0, "part-00000", 0)
    rows = []
    for spec in stage.list_shards([sys.argv[1]]):
        rows += stage.read(spec, shard).to_pylist()
    with open("/proc/self/status") as fh:
        hwm_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print(json.dumps({"urls": [r["url"] for r in rows], "texts": [r["text"] for r in rows],
                      "dropped": dict(shard.dropped), "peak_mib": hwm_kib / 1024}))
    """
)


def read_in_child(path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [REPO, os.environ.get("PYTHONPATH", "")] if p))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def good_record(n: int) -> bytes:
    page = small_page(n)
    return warc_record(f"http://good.example/{n}", http_head(len(page)) + page, n)


def assert_bounded(result: dict, path) -> None:
    assert os.path.getsize(path) < 8 * 1024 * 1024  # small on disk
    assert result["dropped"] == {"too_large": 1}
    assert result["peak_mib"] < PEAK_LIMIT_MIB, result["peak_mib"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_warc_record_block_that_inflates_to_a_gibibyte(tmp_path):
    page_start = b"<!DOCTYPE html><html><body><p>"
    http = http_head(GIB_IN_MIB << 20)
    block_len = len(http) + len(page_start) + (GIB_IN_MIB << 20)
    bomb = gzip_bomb(warc_head("http://bomb.example/", block_len) + http + page_start, b"a", GIB_IN_MIB, b"\r\n\r\n")
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(bomb + gzip.compress(good_record(1), mtime=0))
    result = read_in_child(path)
    assert_bounded(result, path)
    assert result["urls"] == ["http://good.example/1"]  # the record after the bomb is read


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_content_encoding_gzip_body_that_inflates_to_a_gibibyte(tmp_path):
    body = gzip_bomb(b"<!DOCTYPE html><html><body><p>", b"b", GIB_IN_MIB, b"</p></body></html>")
    payload = http_head(len(body), "Content-Encoding: gzip\r\n") + body
    path = tmp_path / "encoded.warc"
    path.write_bytes(warc_record("http://bomb.example/", payload, 0) + good_record(1))
    result = read_in_child(path)
    assert_bounded(result, path)
    assert result["urls"] == ["http://good.example/1"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_jsonl_gz_with_a_one_gibibyte_line(tmp_path):
    bomb = gzip_bomb(b'{"text": "', b"c", GIB_IN_MIB, b'"}\n')
    path = tmp_path / "docs.jsonl.gz"
    path.write_bytes(bomb + gzip.compress(b'{"text": "the line after the bomb"}\n', mtime=0))
    result = read_in_child(path)
    assert_bounded(result, path)
    assert result["texts"] == ["the line after the bomb"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_zstd_warc_record_that_inflates_to_a_gibibyte(tmp_path):
    pytest.importorskip("zstandard")
    import zstandard

    page_start = b"<!DOCTYPE html><html><body><p>"
    http = http_head(GIB_IN_MIB << 20)
    block_len = len(http) + len(page_start) + (GIB_IN_MIB << 20)
    bomb = zstd_bomb(warc_head("http://bomb.example/", block_len) + http + page_start, b"d", GIB_IN_MIB, b"\r\n\r\n")
    path = tmp_path / "bomb.warc.zst"
    path.write_bytes(bomb + zstandard.ZstdCompressor().compress(good_record(1)))
    result = read_in_child(path)
    assert_bounded(result, path)
    assert result["urls"] == ["http://good.example/1"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_warc_header_line_that_inflates_to_a_gibibyte(tmp_path):
    # held before the fix too (FastWARC bounds header lines); kept so it stays that way
    bomb = gzip_bomb(
        b"WARC/1.0\r\nWARC-Type: response\r\nX-Junk: ", b"e", GIB_IN_MIB, b"\r\nContent-Length: 0\r\n\r\n\r\n\r\n"
    )
    path = tmp_path / "header.warc.gz"
    path.write_bytes(bomb + gzip.compress(good_record(1), mtime=0))
    result = read_in_child(path)
    assert result["peak_mib"] < PEAK_LIMIT_MIB, result["peak_mib"]
    assert result["dropped"] == {"corrupt_record": 1}
    assert result["urls"] == ["http://good.example/1"]
