"""The audit writer: batches card records, and never loses or strands one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from service.store import audit as audit_module
from service.store.audit import BATCH, AuditWriter
from service.store.database import CardRecord, Store


class RecordingStore:
    """Stands in for the database: keeps each batch it is asked to write."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.wrote = threading.Event()

    def add_cards(self, records: Iterable[CardRecord]) -> None:
        self.batches.append([r.uuid for r in records])
        self.wrote.set()


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


def run(scenario: object) -> RecordingStore:
    store = RecordingStore()

    async def main() -> None:
        writer = AuditWriter(store)  # type: ignore[arg-type]
        writer.start()
        try:
            await asyncio.wait_for(scenario(writer), 20)  # type: ignore[operator]
        finally:
            await asyncio.wait_for(writer.stop(), 20)

    asyncio.run(main())
    return store


def test_flush_writes_what_is_queued_without_the_gathering_wait() -> None:
    async def scenario(writer: AuditWriter) -> None:
        writer.submit([record(1), record(2)])
        await writer.flush()

    assert run(scenario).batches == [["card-1", "card-2"]]


def test_records_that_arrive_while_gathering_share_one_batch() -> None:
    async def scenario(writer: AuditWriter) -> None:
        writer.submit([record(1)])
        await asyncio.sleep(0)  # the writer takes the first record and starts gathering
        writer.submit([record(2), record(3)])
        await writer.flush()

    assert run(scenario).batches == [["card-1", "card-2", "card-3"]]


def test_a_full_batch_is_written_without_waiting_for_a_flush() -> None:
    store_seen: list[RecordingStore] = []

    async def scenario(writer: AuditWriter) -> None:
        store_seen.append(writer.store)  # type: ignore[arg-type]
        writer.submit([record(i) for i in range(BATCH)])
        assert await asyncio.to_thread(store_seen[0].wrote.wait, 15)

    store = run(scenario)
    assert len(store.batches[0]) == BATCH


def test_stop_writes_everything_still_queued() -> None:
    async def scenario(writer: AuditWriter) -> None:
        writer.submit([record(i) for i in range(BATCH + 3)])

    store = run(scenario)
    assert sorted(uuid for batch in store.batches for uuid in batch) == sorted(
        f"card-{i}" for i in range(BATCH + 3)
    )
    assert all(len(batch) <= BATCH for batch in store.batches)


def test_the_real_store_takes_a_batch(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/og.db", b"k" * 32)
    store.open()

    async def main() -> None:
        writer = AuditWriter(store)
        writer.start()
        writer.submit([record(1), record(2)])
        await asyncio.wait_for(writer.stop(), 20)

    asyncio.run(main())
    assert set(store.cards_by_uuid(["card-1", "card-2"])) == {"card-1", "card-2"}
    store.close()
