"""Card ids: random RFC 9562 version-4 UUIDs in canonical form."""

from __future__ import annotations

import os
import re
import threading
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


def test_threads_never_share_an_id() -> None:
    # The pool of random bytes is shared: each id must take bytes no other id took.
    found: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        out.extend(uuid4_hex() for _ in range(3000))

    threads = [threading.Thread(target=work, args=(out,)) for out in found]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in found for i in out]
    assert len(set(ids)) == len(ids) == 24000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    uuid4_hex()  # the parent now holds unused bytes in its pool
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent, then exit at once
        os.close(read_end)
        os.write(write_end, "".join(uuid4_hex() for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent = "".join(uuid4_hex() for _ in range(4))
    assert len(child) == len(parent) == 128
    assert child != parent
