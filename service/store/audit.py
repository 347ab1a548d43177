"""Recording every card the service returns, without making the EHR wait for the database.

Hook calls hand their card records to :class:`AuditWriter`, which writes them in batches
from a task owned by the app's lifespan. The records are queued before the response is
sent, so a client that disconnects does not lose them; at shutdown the queue is drained.
The feedback endpoint flushes the queue first, so feedback for a card issued a moment ago
never meets a false 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import anyio

from service.store.database import CardRecord, Store

log = logging.getLogger("osteoguard.audit")
BATCH = 500
GATHER_S = 0.05  # wait this long for more records, so one transaction carries many
RETRIES = 5


class AuditWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: asyncio.Queue[CardRecord] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._flushing = 0
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="osteoguard-audit-writer")

    def submit(self, records: Sequence[CardRecord]) -> None:
        """Queue records for writing; never blocks the caller."""
        for record in records:
            self._queue.put_nowait(record)
        if self._queue.qsize() >= BATCH - 1:  # with the one the writer holds: a full batch
            self._wake.set()  # need not wait for the gathering time

    async def flush(self) -> None:
        """Wait until everything queued so far is written (without the gathering delay)."""
        self._flushing += 1
        self._wake.set()  # cut the gathering wait short
        try:
            await self._queue.join()
        finally:
            self._flushing -= 1

    async def stop(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if not self._flushing and 1 + self._queue.qsize() < BATCH:
                # Gather more records for one transaction: one timed wait per batch, not one
                # per record (each timed queue read made a task on the hook path's loop).
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), GATHER_S)
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[CardRecord]) -> None:
        delay = 0.05
        for attempt in range(1, RETRIES + 1):
            try:
                await anyio.to_thread.run_sync(self.store.add_cards, batch)
                return
            except Exception as exc:  # the database is away: retry, then report and go on
                if attempt == RETRIES:
                    log.error(
                        "card audit write failed", extra={"cards": len(batch), "error": type(exc).__name__}
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 4
