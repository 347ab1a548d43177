"""The audit spool file: bounded, fsynced, one per process, adopted when its process is gone."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.errors import SpoolFull
from service.store.database import CardRecord
from service.store.spool import QUARANTINE, Spool, decode, encode


def record(n: int, hook_instance: str = "hi") -> CardRecord:
    return CardRecord(
        uuid=f"card-{n}",
        rule_id="low-estradiol",
        service_id="anastrozole-bone-order-sign",
        hook="order-sign",
        hook_instance=hook_instance,
        ruleset_version="1",
        patient_key="k",
        suggestion_uuids=("s-1", "s-2"),
        issued_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        weekly_dose=3.5,
    )


def crash(spool: Spool) -> None:
    """What kill -9 leaves: the file as written, its lock released, nothing cleaned up."""
    os.close(spool._fd)


def test_a_record_survives_encoding_whatever_its_hook_instance_holds() -> None:
    tricky = record(1, "a\x00b\nc\u2028")
    assert decode(encode(tricky).rstrip(b"\n")) == tricky
    assert encode(tricky).count(b"\n") == 1


def test_records_of_a_dead_process_are_adopted_in_order(tmp_path: Path) -> None:
    dead = Spool(tmp_path, 1 << 20)
    dead.append([record(1), record(2)])
    dead.append([record(3)])
    crash(dead)
    heir = Spool(tmp_path, 1 << 20)
    assert heir.adopt_orphans() == 3
    assert not dead.path.exists()
    records, _end = heir.backlog(10)
    assert [r.uuid for r in records] == ["card-1", "card-2", "card-3"]
    assert set(heir.records) == {"card-1", "card-2", "card-3"}


def test_a_live_processes_spool_is_not_adopted(tmp_path: Path) -> None:
    live = Spool(tmp_path, 1 << 20)
    live.append([record(1)])
    other = Spool(tmp_path, 1 << 20)
    assert other.adopt_orphans() == 0
    assert live.path.exists()


def test_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    dead = Spool(tmp_path, 1 << 20)
    dead.append([record(1)])
    os.write(dead._fd, encode(record(2))[:40])  # a crash in the middle of an append
    crash(dead)
    heir = Spool(tmp_path, 1 << 20)
    assert heir.adopt_orphans() == 1


def test_an_append_over_the_bound_is_refused_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    size = len(encode(record(1)))
    spool = Spool(tmp_path, 2 * size + 10)
    spool.append([record(1), record(2)])
    with pytest.raises(SpoolFull, match="full"):
        spool.append([record(3)])
    assert spool.size == os.path.getsize(spool.path) == 2 * size
    assert set(spool.records) == {"card-1", "card-2"}


def test_the_file_starts_again_when_everything_is_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append([record(1), record(2), record(3)])
    first, end = spool.backlog(2)
    assert [r.uuid for r in first] == ["card-1", "card-2"]
    spool.written(first, end)
    assert set(spool.records) == {"card-3"} and spool.size > 0
    rest, end = spool.backlog(10)
    spool.written(rest, end)
    assert spool.size == os.path.getsize(spool.path) == 0 and not spool.records


def test_an_empty_spool_is_deleted_at_close_and_a_full_one_kept(tmp_path: Path) -> None:
    empty, kept = Spool(tmp_path, 1 << 20), Spool(tmp_path, 1 << 20)
    kept.append([record(1)])
    empty.close()
    kept.close()
    assert not empty.path.exists() and kept.path.exists()


def test_a_quarantined_record_is_kept_once_with_its_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    bad = replace(record(1), hook_instance="x\x00")
    spool.quarantine(bad, "DataError/DataError")
    spool.quarantine(bad, "DataError/DataError")
    (line,) = (tmp_path / QUARANTINE).read_text().splitlines()
    assert json.loads(line)["reason"] == "DataError/DataError"
    assert json.loads(line)["record"]["uuid"] == "card-1"
