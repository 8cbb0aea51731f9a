"""Small files that decompress into gigabytes, generated in a second or two.

A deflate stream flushed with Z_FULL_FLUSH holds no back-reference across the
flush, so the compressed form of one MiB of filler can be repeated to make a
valid stream of any length: ~1 KiB on disk per MiB of output.
"""

from __future__ import annotations

import struct
import zlib

MIB = 1 << 20


def gzip_bomb(prefix: bytes, filler: bytes, mib: int, suffix: bytes) -> bytes:
    """One gzip member that inflates to prefix + filler * (MiB / len(filler)) * mib + suffix."""
    chunk = (filler * (MIB // len(filler) + 1))[:MIB]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(suffix) + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + mib * MIB + len(suffix)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    return header + head + block * mib + tail + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def zstd_bomb(prefix: bytes, filler: bytes, mib: int, suffix: bytes) -> bytes:
    import zstandard

    chunk = (filler * (MIB // len(filler) + 1))[:MIB]
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    parts = [compressor.compress(prefix)]
    parts += [compressor.compress(chunk) for _ in range(mib)]
    parts += [compressor.compress(suffix), compressor.flush()]
    return b"".join(parts)


def warc_head(url: str, block_length: int, n: int = 0) -> bytes:
    return (
        "WARC/1.0\r\nWARC-Type: response\r\n"
        f"WARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{n:012d}>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {block_length}\r\n\r\n"
    ).encode()


def http_head(length: int, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n{extra}Content-Length: {length}\r\n\r\n".encode()
    )


def small_page(n: int) -> bytes:
    return f"<!DOCTYPE html><html><body><p>A small honest page number {n}.</p></body></html>".encode()


def warc_record(url: str, payload: bytes, n: int = 0) -> bytes:
    return warc_head(url, len(payload), n) + payload + b"\r\n\r\n"
