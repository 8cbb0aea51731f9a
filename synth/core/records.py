"""Record identity and seeded randomness.

Ids are content hashes so that two runs over the same input name every record the
same way; every random choice derives from (config seed, record id, purpose) so a
resumed run draws exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import random

ID_BYTES = 16


def content_id(*parts: str | bytes | int | None) -> str:
    """A stable hex id from the parts that define a record's content and origin."""
    h = hashlib.blake2b(digest_size=ID_BYTES)
    for part in parts:
        if part is None:
            data = b"\x00"
        elif isinstance(part, bytes):
            data = part
        else:
            data = str(part).encode("utf-8", "surrogatepass")
        # Length-prefix each part so ("ab", "c") and ("a", "bc") differ.
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 64-bit seed derived from the run seed and any identifying parts."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(seed).encode())
    for part in parts:
        h.update(b"\x1f")
        h.update(str(part).encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "little")


def rng_for(seed: int, *parts: str | int) -> random.Random:
    """A private random generator for one decision about one record."""
    return random.Random(derive_seed(seed, *parts))
