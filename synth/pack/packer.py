"""Best-fit-decreasing packing in a bounded window.

Documents arrive in a stream. Every `window` documents, they are sorted by length
(longest first; ties by arrival, so the result is deterministic) and each goes into the
open sequence with the least room that still fits it, or a new one. After a window, the
sequences with the most room (at most `carry` of them) stay open for the next window and
the rest are emitted. Memory is bounded by window + carry documents, whatever the size
of the corpus.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Bin:
    id: int
    room: int
    docs: list[Any] = field(default_factory=list)


class WindowPacker:
    def __init__(self, seq_len: int, window: int = 4096, carry: int = 256):
        if seq_len < 2:
            raise ValueError("seq_len must be at least 2")
        self.seq_len = seq_len
        self.window = max(1, window)
        self.carry = max(0, carry)
        self._pending: list[tuple[int, int, Any]] = []  # (length, arrival, payload)
        self._arrival = 0
        self._open: list[Bin] = []
        self._next_id = 0

    def add(self, length: int, payload: Any) -> list[Bin]:
        """The sequences completed by this document: none until a window is full."""
        if not 0 < length <= self.seq_len:
            raise ValueError(f"document of {length} tokens does not fit a sequence of {self.seq_len}")
        self._pending.append((length, self._arrival, payload))
        self._arrival += 1
        if len(self._pending) >= self.window:
            return self._pack(final=False)
        return []

    def finish(self) -> list[Bin]:
        return self._pack(final=True)

    def _pack(self, final: bool) -> list[Bin]:
        docs = sorted(self._pending, key=lambda d: (-d[0], d[1]))
        self._pending = []
        bins = self._open
        # Sorted (room, id) of open bins: best fit = the first with room >= length.
        rooms = sorted((b.room, b.id) for b in bins)
        by_id = {b.id: b for b in bins}
        for length, _, payload in docs:
            i = bisect.bisect_left(rooms, (length, -1))
            if i < len(rooms):
                room, bid = rooms.pop(i)
                b = by_id[bid]
            else:
                b = Bin(self._next_id, self.seq_len)
                self._next_id += 1
                by_id[b.id] = b
                room = b.room
            b.docs.append(payload)
            b.room = room - length
            bisect.insort(rooms, (b.room, b.id))
        all_bins = sorted(by_id.values(), key=lambda b: b.id)
        if final:
            self._open = []
            emit = all_bins
        else:
            keep = {b.id for b in sorted(all_bins, key=lambda b: (-b.room, b.id))[: self.carry] if b.room > 0}
            self._open = [b for b in all_bins if b.id in keep]
            emit = [b for b in all_bins if b.id not in keep]
        return emit
