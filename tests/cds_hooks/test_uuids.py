"""Card ids: random RFC 9562 version-4 UUIDs in canonical form."""

from __future__ import annotations

import re
import uuid

from cds_hooks.uuids import uuid4_hex, uuid4_str

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_ids_are_version_4_with_the_rfc_variant() -> None:
    for _ in range(2000):
        text = uuid4_str()
        assert CANONICAL.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_hex_ids_are_version_4_too() -> None:
    parsed = uuid.UUID(hex=uuid4_hex())
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat() -> None:
    ids = {uuid4_str() for _ in range(20000)}
    assert len(ids) == 20000


def test_every_free_bit_varies() -> None:
    # Random, not sequential: each of the 122 bits that are not version or variant takes both
    # values over a few hundred ids (a counter or a fixed prefix would leave bits constant).
    ones, zeros = 0, 0
    for _ in range(400):
        value = uuid.UUID(uuid4_str()).int
        ones |= value
        zeros |= ~value
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant bits
    free = ((1 << 128) - 1) & ~fixed
    assert ones & free == free
    assert zeros & free == free
