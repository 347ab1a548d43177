"""The audit writer: batches card records, and never loses or strands one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import DataError, OperationalError

from service.errors import SpoolFull
from service.store import audit as audit_module
from service.store.audit import BATCH, AuditWriter
from service.store.database import CardRecord, Store
from service.store.spool import QUARANTINE, Spool, encode


class RecordingStore:
    """Stands in for the database: keeps each batch it is asked to write."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.wrote = threading.Event()

    def add_cards(self, records: Iterable[CardRecord]) -> None:
        self.batches.append([r.uuid for r in records])
        self.wrote.set()


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def record(n: int) -> CardRecord:
    return CardRecord(
        uuid=f"card-{n}",
        rule_id="baseline-dexa",
        service_id="anastrozole-bone-order-sign",
        hook="order-sign",
        hook_instance="hi",
        ruleset_version="1",
        patient_key="k",
        suggestion_uuids=(),
        issued_at=datetime(2026, 11, 28, tzinfo=UTC),
    )


@pytest.fixture(autouse=True)
def endless_gathering(monkeypatch: pytest.MonkeyPatch) -> None:
    # With an hour to gather, a test can only pass if flush() or a full batch wakes the writer.
    monkeypatch.setattr(audit_module, "GATHER_S", 3600.0)


def run(scenario: object, folder: Path) -> RecordingStore:
    store = RecordingStore()

    async def main() -> None:
        writer = AuditWriter(store, Spool(folder, 1 << 20), max_age_s=3600.0)  # type: ignore[arg-type]
        await writer.start()
        try:
            await asyncio.wait_for(scenario(writer), 20)  # type: ignore[operator]
        finally:
            await asyncio.wait_for(writer.stop(), 20)

    asyncio.run(main())
    return store


def test_flush_writes_what_is_queued_without_the_gathering_wait(tmp_path: Path) -> None:
    async def scenario(writer: AuditWriter) -> None:
        writer.submit([record(1), record(2)])
        await writer.flush()

    assert run(scenario, tmp_path).batches == [["card-1", "card-2"]]


def test_records_that_arrive_while_gathering_share_one_batch(tmp_path: Path) -> None:
    async def scenario(writer: AuditWriter) -> None:
        writer.submit([record(1)])
        await asyncio.sleep(0)  # the writer takes the first record and starts gathering
        writer.submit([record(2), record(3)])
        await writer.flush()

    assert run(scenario, tmp_path).batches == [["card-1", "card-2", "card-3"]]


class CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def test_calls_wake_the_gathering_writer_once_not_once_each(tmp_path: Path) -> None:
    # Each wake-up is a GIL hand-over from the event loop to the writer thread.
    store, counting = RecordingStore(), CountingCondition()

    async def main() -> int:
        writer = AuditWriter(store, Spool(tmp_path, 1 << 20), max_age_s=3600.0)  # type: ignore[arg-type]
        writer._cond = counting
        await writer.start()
        try:
            for i in range(50):
                writer.submit([record(i)])
            woken = counting.notified
            await asyncio.wait_for(writer.flush(), 20)
            return woken
        finally:
            await asyncio.wait_for(writer.stop(), 20)

    assert asyncio.run(main()) == 1
    assert store.batches == [[f"card-{i}" for i in range(50)]]


def test_a_full_batch_is_written_without_waiting_for_a_flush(tmp_path: Path) -> None:
    store_seen: list[RecordingStore] = []

    async def scenario(writer: AuditWriter) -> None:
        store_seen.append(writer.store)  # type: ignore[arg-type]
        writer.submit([record(i) for i in range(BATCH)])
        assert await asyncio.to_thread(store_seen[0].wrote.wait, 15)

    store = run(scenario, tmp_path)
    assert len(store.batches[0]) == BATCH


def test_stop_writes_everything_still_queued(tmp_path: Path) -> None:
    async def scenario(writer: AuditWriter) -> None:
        writer.submit([record(i) for i in range(BATCH + 3)])

    store = run(scenario, tmp_path)
    assert sorted(uuid for batch in store.batches for uuid in batch) == sorted(
        f"card-{i}" for i in range(BATCH + 3)
    )
    assert all(len(batch) <= BATCH for batch in store.batches)


def test_the_real_store_takes_a_batch(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/og.db", b"k" * 32)
    store.open()

    async def main() -> None:
        writer = AuditWriter(store, Spool(tmp_path / "spool", 1 << 20))
        await writer.start()
        writer.submit([record(1), record(2)])
        await asyncio.wait_for(writer.stop(), 20)

    asyncio.run(main())
    assert set(store.cards_by_uuid(["card-1", "card-2"])) == {"card-1", "card-2"}
    store.close()


# ---- the database away, slow or refusing: the spool -------------------------------------------
class FlakyStore:
    """A database that can be made to hang, to be away, or to refuse one record for its data."""

    def __init__(self) -> None:
        self.stored: dict[str, CardRecord] = {}
        self.away = False
        self.release = threading.Event()
        self.release.set()
        self.refuse: set[str] = set()

    def add_cards(self, records: Iterable[CardRecord]) -> None:
        batch = list(records)
        self.release.wait(10)
        if self.away:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        if self.refuse & {r.uuid for r in batch}:
            raise DataError("INSERT", {}, ValueError("cannot store that"))
        for r in batch:
            self.stored.setdefault(r.uuid, r)


def run_flaky(scenario: object, folder: Path, max_age_s: float = 0.2, max_bytes: int = 1 << 20) -> FlakyStore:
    store = FlakyStore()

    async def main() -> None:
        writer = AuditWriter(store, Spool(folder, max_bytes), max_age_s=max_age_s)  # type: ignore[arg-type]
        await writer.start()
        try:
            await asyncio.wait_for(scenario(writer, store), 20)  # type: ignore[operator]
        finally:
            store.release.set()
            await asyncio.wait_for(writer.stop(), 20)

    asyncio.run(main())
    return store


def test_a_batch_the_database_has_not_taken_within_the_age_bound_is_in_the_spool(tmp_path: Path) -> None:
    async def scenario(writer: AuditWriter, store: FlakyStore) -> None:
        store.release.clear()  # the database hangs
        started = time.monotonic()
        writer.submit([record(1), record(2)])
        assert await writer.flush(timeout_s=5)
        assert time.monotonic() - started < writer.max_age_s + 0.05
        assert set(writer.spool.records) == {"card-1", "card-2"}
        store.release.set()
        assert await writer.drained(5)

    store = run_flaky(scenario, tmp_path, max_age_s=0.2)
    assert set(store.stored) == {"card-1", "card-2"}


def test_records_wait_in_the_spool_while_the_database_is_away_and_are_written_once_in_order(
    tmp_path: Path,
) -> None:
    async def scenario(writer: AuditWriter, store: FlakyStore) -> None:
        store.away = True
        for i in range(5):
            waiter = writer.submit([record(i)])
            if waiter is not None:  # the database is known to be away: the call waits
                await waiter
            assert await writer.flush(timeout_s=5)
        assert len(writer.spool.records) == 5 and not store.stored
        assert writer.health() == (True, "degraded, spooling")
        store.away = False
        assert await writer.drained(5)
        assert writer.health() == (True, "ok")

    store = run_flaky(scenario, tmp_path)
    assert list(store.stored) == [f"card-{i}" for i in range(5)]


def test_a_record_refused_for_its_data_is_quarantined_alone(tmp_path: Path) -> None:
    async def scenario(writer: AuditWriter, store: FlakyStore) -> None:
        store.refuse = {"card-2"}
        writer.submit([record(i) for i in range(5)])
        assert await writer.flush(timeout_s=5)
        assert await writer.drained(5)

    before = metric("osteoguard_audit_quarantined_total")
    store = run_flaky(scenario, tmp_path)
    assert sorted(store.stored) == ["card-0", "card-1", "card-3", "card-4"]
    assert metric("osteoguard_audit_quarantined_total") == before + 1
    assert "card-2" in (tmp_path / QUARANTINE).read_text()


def test_with_the_database_away_and_the_spool_full_calls_are_refused(tmp_path: Path) -> None:
    async def scenario(writer: AuditWriter, store: FlakyStore) -> None:
        store.away = True
        writer.submit([record(0)])
        assert await writer.flush(timeout_s=5)  # spooled: the database is known to be away
        with pytest.raises(SpoolFull):
            for i in range(1, 100):
                waiter = writer.submit([record(i)])
                if waiter is not None:
                    await waiter
        assert writer.health()[0] is False
        with pytest.raises(SpoolFull):
            writer.submit([record(1000)])
        store.away = False  # the database returns: the spool drains and calls are taken again
        assert await writer.drained(5)
        await writer.durable([record(1001)])
        assert writer.refusing is None

    store = run_flaky(scenario, tmp_path, max_bytes=4 * len(encode(record(10))))
    assert "card-1001" in store.stored and "card-1000" not in store.stored


def test_a_nul_byte_in_one_record_never_costs_the_others_their_place_on_postgresql(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores a NUL byte; PostgreSQL refuses the whole executemany")
    store = Store(database_url, b"k" * 32)
    store.open()
    bad = replace(record(2), hook_instance="evil\x00instance")
    before = metric("osteoguard_audit_quarantined_total")

    async def main() -> None:
        writer = AuditWriter(store, Spool(tmp_path / "spool", 1 << 20))
        await writer.start()
        writer.submit([record(1), bad, record(3)])
        assert await writer.flush(timeout_s=10)
        assert await writer.drained(10)
        await asyncio.wait_for(writer.stop(), 20)

    asyncio.run(main())
    try:
        assert set(store.cards_by_uuid(["card-1", "card-2", "card-3"])) == {"card-1", "card-3"}
    finally:
        store.close()
    assert metric("osteoguard_audit_quarantined_total") == before + 1
    (line,) = (tmp_path / "spool" / QUARANTINE).read_text().splitlines()
    assert '"card-2"' in line and "DataError" in line
