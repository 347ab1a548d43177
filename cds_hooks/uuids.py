"""Random UUIDs (RFC 9562 version 4) for card and suggestion ids, made cheaply.

``str(uuid.uuid4())`` builds a ``UUID`` object, checks it and formats it through properties;
one call needs four ids (request, rule session, card, suggestion). These are the same ids: 122
bits from ``os.urandom`` (the operating system's CSPRNG, as ``uuid4`` uses), the version nibble
set to 4 and the variant bits to ``10``, written in the canonical 8-4-4-4-12 form.

The random bytes are read 4 KiB at a time, not 16 bytes per id: ``os.urandom`` releases the
GIL for its system call, so each id let the audit writer's thread take the interpreter in the
middle of a request (measured: 4 % of a loaded worker's samples in this one line). Each id
still takes 16 fresh bytes that no other id used: the pool is taken under a lock, and a forked
child empties it (``os.register_at_fork``), so a child never repeats its parent's ids.
"""

from __future__ import annotations

import os
import threading

POOL_BYTES = 4096  # 256 ids per system call


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data = b""
        self.at = 0


_pool = _Pool()


def _forget_after_fork() -> None:
    global _pool
    _pool = _Pool()  # a fresh lock too: another thread may have held the parent's at the fork


os.register_at_fork(after_in_child=_forget_after_fork)


def random_bytes() -> bytearray:
    """16 random bytes with the version-4 and RFC 9562 variant bits set."""
    pool = _pool
    with pool.lock:
        at = pool.at
        if at + 16 > len(pool.data):
            pool.data, at = os.urandom(POOL_BYTES), 0
        pool.at = at + 16
        raw = bytearray(pool.data[at : at + 16])
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # variant 10xx
    return raw


def uuid4_str() -> str:
    """A new random UUID, e.g. ``"3b2f0c1e-9a4d-4c8e-b1f2-0d9e8c7b6a5f"``."""
    x = random_bytes().hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def uuid4_hex() -> str:
    """A new random UUID as 32 hex digits (``uuid.uuid4().hex``)."""
    return random_bytes().hex()
