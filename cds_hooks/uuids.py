"""Random UUIDs (RFC 9562 version 4) for card and suggestion ids, made cheaply.

``str(uuid.uuid4())`` builds a ``UUID`` object, checks it and formats it through properties;
a response with two cards needs four ids. These are the same ids: 122 bits from
``os.urandom`` (the operating system's CSPRNG, as ``uuid4`` uses), the version nibble set to 4
and the variant bits to ``10``, written in the canonical 8-4-4-4-12 form. No pool of bytes is
kept, so a forked worker can never repeat its parent's ids.
"""

from __future__ import annotations

import os


def random_bytes() -> bytearray:
    """16 random bytes with the version-4 and RFC 9562 variant bits set."""
    raw = bytearray(os.urandom(16))
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
