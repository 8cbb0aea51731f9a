"""Zstandard-compressed inputs (`.warc.zst`, `.jsonl.zst`), streamed.

The zstd WARC convention compresses each record as its own frame and may put a
dictionary in a skippable frame (magic 0x184D2A5D) at the start of the file; the
dictionary itself may be zstd-compressed. Everything here streams: no frame, and
no dictionary, is decompressed whole, so a small file that expands to gigabytes
costs the reader's buffers, not the expansion.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DICTIONARY_FRAME = 0x184D2A5D
# A dictionary is tens of kilobytes; anything larger is not one.
MAX_DICTIONARY_BYTES = 16 * 1024 * 1024
# The decoder's window is what a frame may make it allocate up front.
MAX_WINDOW_BYTES = 1 << 27


def _is_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


def is_zstd(head: bytes) -> bool:
    return head.startswith(ZSTD_MAGIC) or _is_skippable(head)


def _module():
    try:
        import zstandard
    except ImportError as exc:  # a broken install, not a fault of the file
        raise ImportError("reading .zst inputs needs the 'zstandard' package (pip install zstandard)") from exc
    return zstandard


def read_dictionary(fh) -> tuple[bytes | None, int]:
    """(dictionary or None, offset of the first data frame), from the skippable frames at the start."""
    zstandard = _module()
    dictionary = None
    pos = 0
    while True:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8 or not _is_skippable(header):
            return dictionary, pos
        magic, size = struct.unpack("<II", header)
        if magic == DICTIONARY_FRAME and dictionary is None:
            if size > MAX_DICTIONARY_BYTES:
                raise ValueError(f"zstd dictionary frame of {size} bytes (at most {MAX_DICTIONARY_BYTES})")
            data = fh.read(size)
            if data.startswith(ZSTD_MAGIC):  # the convention allows a compressed dictionary
                reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES).stream_reader(io.BytesIO(data))
                data = reader.read(MAX_DICTIONARY_BYTES + 1)
                if len(data) > MAX_DICTIONARY_BYTES:
                    raise ValueError(f"zstd dictionary decompresses to more than {MAX_DICTIONARY_BYTES} bytes")
            dictionary = data
        pos += 8 + size


def decompressor(dictionary: bytes | None):
    zstandard = _module()
    dict_data = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    return zstandard.ZstdDecompressor(dict_data=dict_data, max_window_size=MAX_WINDOW_BYTES)


def open_stream(path: Path | str, start: int | None = None):
    """A buffered binary reader of the decompressed bytes of every data frame."""
    fh = open(path, "rb")
    try:
        dictionary, data_start = read_dictionary(fh)
        fh.seek(data_start if start is None else start)
        reader = decompressor(dictionary).stream_reader(fh, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader)
    except BaseException:
        fh.close()
        raise


def decompress_head(path: Path | str, n: int) -> bytes:
    with open_stream(path) as stream:
        return stream.read(n)
