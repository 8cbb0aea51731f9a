"""Zstandard-compressed inputs (`.warc.zst`, `.jsonl.zst`), streamed.

The zstd WARC convention compresses each record as its own frame and may put a
dictionary in a skippable frame (magic 0x184D2A5D) at the start of the file; the
dictionary itself may be zstd-compressed. Everything here streams: no frame, and
no dictionary, is decompressed whole, so a small file that expands to gigabytes
costs the reader's buffers, not the expansion.
"""

from __future__ import annotations

import io
import os
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


def frame_end(fh, start: int, file_size: int) -> int | None:
    """Where the zstd frame starting at `start` ends, from its frame and block headers
    (no decompression); None when they do not describe a frame inside the file."""
    fh.seek(start)
    head = fh.read(6)
    if len(head) < 6 or head[:4] != ZSTD_MAGIC:
        return None
    descriptor = head[4]
    single_segment = descriptor >> 5 & 1
    content_size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    pos = start + 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes
    while True:
        fh.seek(pos)
        header = fh.read(3)
        if len(header) < 3:
            return None
        value = int.from_bytes(header, "little")
        block_type, block_size = value >> 1 & 3, value >> 3
        if block_type == 3:  # reserved: not a frame
            return None
        pos += 3 + (1 if block_type == 1 else block_size)
        if pos > file_size:
            return None
        if value & 1:  # last block
            return pos + (4 if descriptor >> 2 & 1 else 0)


class _Slice(io.RawIOBase):
    """Bytes [start, end) of an open file."""

    def __init__(self, fh, start: int, end: int):
        self.fh, self.pos, self.end = fh, start, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.end - self.pos)
        if n <= 0:
            return 0
        self.fh.seek(self.pos)
        data = self.fh.read(n)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class _Frames(io.RawIOBase):
    """The decompressed bytes of every data frame, decoded frame by frame, so all
    frames before a damaged one are delivered whole. At the damage the stream
    ends (`stop_at_damage`, the error kept in `.error`) or raises OSError."""

    def __init__(self, fh, dictionary: bytes | None, start: int, stop_at_damage: bool):
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size
        self.next_frame = start
        self.dctx = decompressor(dictionary)
        self.frame = None
        self.frame_start = start
        self.stop_at_damage = stop_at_damage
        self.error: str | None = None
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward only, by reading: what a parser's tell/skip needs

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.position + offset if whence == io.SEEK_CUR else -1
        if target < self.position:
            raise io.UnsupportedOperation("a zstd stream seeks forward only")
        scratch = bytearray(min(target - self.position, 1 << 16) or 1)
        while self.position < target:
            if not self.readinto(memoryview(scratch)[: min(len(scratch), target - self.position)]):
                break
        return self.position

    def _damaged(self, message: str) -> int:
        self.error = f"damaged zstd frame at byte {self.frame_start}: {message}"
        self.frame = None
        self.next_frame = self.size
        if not self.stop_at_damage:
            raise OSError(self.error)
        return 0

    def readinto(self, buffer) -> int:
        zstandard = _module()
        while True:
            if self.error is not None:
                return 0
            if self.frame is None:
                pos = self.next_frame
                self.fh.seek(pos)
                header = self.fh.read(8)
                if len(header) < 4:
                    return 0 if not header else self._damaged("cut short")
                if _is_skippable(header):
                    self.next_frame = pos + 8 + struct.unpack("<I", header[4:8])[0]
                    continue
                self.frame_start = pos
                end = frame_end(self.fh, pos, self.size)
                if end is None:
                    return self._damaged("unreadable frame or block header")
                self.frame = self.dctx.stream_reader(_Slice(self.fh, pos, end), read_across_frames=False, closefd=False)
                self.next_frame = end
            try:
                data = self.frame.read(len(buffer))
            except zstandard.ZstdError as exc:
                return self._damaged(str(exc))
            if not data:
                self.frame = None
                continue
            buffer[: len(data)] = data
            self.position += len(data)
            return len(data)

    def close(self) -> None:
        self.fh.close()
        super().close()


def open_stream(path: Path | str, start: int | None = None, stop_at_damage: bool = False):
    """A buffered binary reader of the decompressed bytes of every data frame.
    A damaged frame raises OSError, or with `stop_at_damage` ends the stream
    (`.raw.error` says where and why)."""
    fh = open(path, "rb")
    try:
        dictionary, data_start = read_dictionary(fh)
        return io.BufferedReader(_Frames(fh, dictionary, data_start if start is None else start, stop_at_damage))
    except BaseException:
        fh.close()
        raise


def decompress_head(path: Path | str, n: int) -> bytes:
    with open_stream(path, stop_at_damage=True) as stream:  # what decodes of the head is enough
        return stream.read(n)
