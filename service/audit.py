"""Recording every card the service returns, without making the EHR wait for the database.

Hook calls hand their card records to :class:`AuditWriter`, which writes them in batches
from a task owned by the app's lifespan. The records are queued before the response is
sent, so a client that disconnects does not lose them; at shutdown the queue is drained.
The feedback endpoint flushes the queue first, so feedback for a card issued a moment ago
never meets a false 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import anyio

from service.store import CardRecord, Store

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

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="osteoguard-audit-writer")

    def submit(self, records: Sequence[CardRecord]) -> None:
        """Queue records for writing; never blocks the caller."""
        for record in records:
            self._queue.put_nowait(record)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (without the gathering delay)."""
        self._flushing += 1
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
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + GATHER_S
            while len(batch) < BATCH:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or self._flushing:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
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
