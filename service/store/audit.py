"""Recording every card the service returns: never dropped, and only briefly held in memory.

Hook calls hand their card records to :class:`AuditWriter` before the response is sent; a
background task writes them to the database in batches. A batch the database has not taken
within the age bound (``OSTEOGUARD_AUDIT_MAX_AGE_MS``, counted from its oldest record's
submission, less the time kept back for an fsync) goes to the local spool instead
(:mod:`service.store.spool`, fsynced), so a crash of the process loses at most that window.

While the spool holds records (or the database is known to be away), new batches join its
tail, and a drain task writes the spool to the database in order, retrying while it is away.
Every insert skips a card uuid already stored, so a spool replayed after a crash (or a write
that finished after its batch was spooled) can neither double-insert nor fail.

A batch the database refuses for its data (not an outage: a NUL byte PostgreSQL cannot store)
is written again one record at a time; a record refused alone is quarantined (logged by rule
id, card uuid and error class, counted, kept in the spool folder) and never blocks the others.

While records go to the spool, a call waits until its own are fsynced; when neither the
database nor the spool can take them, :meth:`submit` (or that wait) raises
:class:`SpoolFull`, a 503: a call whose cards cannot be recorded gives none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence

import anyio
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service import metrics
from service.errors import SpoolFull
from service.store.database import CardRecord, Store
from service.store.spool import Spool

log = logging.getLogger("osteoguard.audit")
BATCH = 500
GATHER_S = 0.05  # wait this long for more records, so one transaction carries many
RETRY_MIN_S, RETRY_MAX_S = 0.05, 1.0  # the drain's back-off while the database is away
WAIT_DURABLE_S = 2.0  # a call that waits for its records to reach the spool waits at most this
MIN_FREE_BYTES = 256 * 1024  # less free space than this on the spool's disk: not ready
SPOOL_HEADROOM_BYTES = 4096  # with the database away, a spool this close to its bound: not ready
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def is_outage(exc: BaseException) -> bool:
    """The database is away, full or too slow (retry later), not refusing this data."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _OUTAGES)


def reason_class(exc: BaseException) -> str:
    """The error's class (and the driver's), never its message: it may quote the data."""
    orig = getattr(exc, "orig", None)
    return type(exc).__name__ + (f"/{type(orig).__name__}" if orig is not None else "")


_Entry = tuple[float, CardRecord, "asyncio.Future[None] | None"]


class AuditWriter:
    def __init__(self, store: Store, spool: Spool, max_age_s: float = 0.2) -> None:
        self.store = store
        self.spool = spool
        self.max_age_s = max_age_s
        self._gather_s = min(GATHER_S, max_age_s / 4)
        self._fsync_budget_s = min(0.05, max_age_s / 4)  # kept back from the bound for the spool
        self._pending: deque[_Entry] = deque()
        self._memory: dict[str, CardRecord] = {}  # queued or being written: not yet safe
        self._submitted = self._settled = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flushing = 0
        self._work, self._wake, self._backlog, self._progress = (asyncio.Event() for _ in range(4))
        self._drained = asyncio.Event()  # the spool holds nothing (the opposite of _backlog)
        self._drained.set()
        self._lock = asyncio.Lock()  # one spool operation at a time
        self._slow: asyncio.Future[None] | None = None  # a database write that overran its bound
        self._tasks: list[asyncio.Task[None]] = []
        self.db_ok = True
        self.refusing: str | None = None  # why records cannot be made durable now

    async def start(self) -> None:
        """Adopt the spools of processes that died (replayed by the drain), then start."""
        adopted = await anyio.to_thread.run_sync(self.spool.adopt_orphans)
        if adopted:
            log.warning("audit spool of a previous process adopted", extra={"cards": adopted})
            self._mark_backlog()
        self._publish()
        self._tasks = [
            asyncio.create_task(self._run(), name="osteoguard-audit-writer"),
            asyncio.create_task(self._drain(), name="osteoguard-audit-drain"),
        ]

    def submit(self, records: Sequence[CardRecord]) -> asyncio.Future[None] | None:
        """Queue records; never blocks. While records go to the spool, returns a future that
        is done when these are fsynced there (await it before answering: :meth:`durable`)."""
        if self.refusing is not None:
            raise SpoolFull(self.refusing)
        if not records:
            return None
        spooling = self._spooling() or not self.db_ok
        waiter = asyncio.get_running_loop().create_future() if spooling else None
        now = time.monotonic()
        for record in records:
            self._pending.append((now, record, waiter))
            self._memory[record.uuid] = record
        self._submitted += len(records)
        self._work.set()
        if len(self._pending) >= BATCH:
            self._wake.set()  # a full batch need not wait for the gathering time
        return waiter

    async def durable(self, records: Sequence[CardRecord]) -> None:
        """Submit, and wait for the records to be safe when the database is not taking them."""
        waiter = self.submit(records)
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), WAIT_DURABLE_S)
            except TimeoutError:
                raise SpoolFull("the audit spool did not take the records in time") from None

    def known(self, uuids: Iterable[str]) -> dict[str, CardRecord]:
        """Records issued by this process that are not in the database yet (memory or spool)."""
        found = {}
        for uuid in uuids:
            record = self._memory.get(uuid) or self.spool.records.get(uuid)
            if record is not None:
                found[uuid] = record
        return found

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is safe (in the database or the spool), without
        the gathering delay; False when that took longer than ``timeout_s``."""
        target = self._submitted
        if self._settled >= target:
            return True
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((target, done))
        self._flushing += 1
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1

    async def drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (everything spooled is in the database)."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def health(self) -> tuple[bool, str]:
        """(records can be made durable now, ``ok`` | ``degraded, spooling`` | why not)."""
        if self.refusing is not None:
            return False, self.refusing
        if not self.db_ok and self.spool.size + SPOOL_HEADROOM_BYTES > self.spool.max_bytes:
            return False, "the audit spool is full"
        try:
            if self.spool.free_bytes() < MIN_FREE_BYTES:
                return False, "no space left on the audit spool's disk"
        except OSError:
            return False, "the audit spool folder cannot be read"
        return True, ("ok" if self.db_ok and not self._spooling() else "degraded, spooling")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Make what is queued safe, then stop; the spool is left for the next start."""
        if not self._tasks:
            return
        if not await self.flush(timeout_s):
            log.error(
                "card records could not be made durable before exit", extra={"cards": len(self._memory)}
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        async with self._lock:
            await anyio.to_thread.run_sync(self.spool.close)

    # ---- the writer: database within the bound, else the spool ---------------------------
    def _spooling(self) -> bool:
        # With the database known to be away but nothing spooled, each batch still tries it
        # first (within the bound): the way back needs no probe of its own.
        slow = self._slow is not None and not self._slow.done()
        return slow or self._backlog.is_set()

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            if not self._pending:
                self._work.clear()
                continue
            if not self._flushing and len(self._pending) < BATCH:
                # One timed wait per batch, bounded so the oldest record keeps its age bound.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._gather_s)
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            try:
                await self._place(batch)
            except SpoolFull as exc:
                await self._refuse(batch, exc)
                continue
            if self.refusing is not None:
                log.warning("audit records are durable again; calls are taken")
            self.refusing = None
            self._settle(batch)

    async def _place(self, batch: list[_Entry]) -> None:
        records = [record for _, record, _ in batch]
        if not self._spooling():
            deadline = batch[0][0] + self.max_age_s - self._fsync_budget_s
            write = asyncio.ensure_future(anyio.to_thread.run_sync(self.store.add_cards, records))
            done, _ = await asyncio.wait({write}, timeout=max(0.0, deadline - time.monotonic()))
            if write in done and write.exception() is None:
                self.db_ok = True
                return
            if write not in done:
                self._slow = write  # it may still succeed: the spooled copy is then skipped
                write.add_done_callback(lambda f: f.cancelled() or f.exception())
            elif is_outage(write.exception()):  # type: ignore[arg-type]
                self._down(write.exception())  # type: ignore[arg-type]
            # else a data error: the drain writes the batch again one record at a time
        async with self._lock:
            await anyio.to_thread.run_sync(self.spool.append, records)
        metrics.AUDIT_SPOOLED.inc(len(records))
        self._mark_backlog()
        self._publish()

    async def _refuse(self, batch: list[_Entry], exc: SpoolFull) -> None:
        if self.refusing is None:
            log.error(
                "card records can be neither stored nor spooled; calls are refused",
                extra={"reason": exc.message},
            )
        self.refusing = exc.message
        # Records whose call still waits are refused with it (no card given); the others were
        # answered already, so they stay queued until the database or the spool takes them.
        kept = []
        for entry in batch:
            waiter = entry[2]
            if waiter is not None and not waiter.done():
                waiter.set_exception(SpoolFull(exc.message))
            if waiter is None:
                kept.append(entry)
            else:
                self._memory.pop(entry[1].uuid, None)
                self._settled += 1
        self._pending.extendleft(reversed(kept))
        self._work.set()
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), RETRY_MAX_S)
        if not kept:
            # Nothing left to retry with: let the next calls try (each waits for its own
            # records, so a refusal is still a 503, only no longer an instant one).
            self.refusing = None

    def _settle(self, batch: list[_Entry]) -> None:
        for _, record, waiter in batch:
            self._memory.pop(record.uuid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._settled += len(batch)
        ready = [f for target, f in self._waiters if target <= self._settled]
        self._waiters = [(t, f) for t, f in self._waiters if t > self._settled]
        for done in ready:
            if not done.done():
                done.set_result(None)

    def _down(self, exc: BaseException) -> None:
        if self.db_ok:
            log.error(
                "the audit database is away; card records are spooled", extra={"error": reason_class(exc)}
            )
        self.db_ok = False

    def _mark_backlog(self) -> None:
        self._drained.clear()
        self._backlog.set()

    def _publish(self) -> None:
        metrics.AUDIT_SPOOL_RECORDS.set(len(self.spool.records))
        metrics.AUDIT_SPOOL_BYTES.set(self.spool.size)

    # ---- the drain: spool -> database, in order ------------------------------------------
    async def _drain(self) -> None:
        delay = RETRY_MIN_S
        while True:
            await self._backlog.wait()
            if self._slow is not None and not self._slow.done():
                await asyncio.wait({self._slow})  # one database write at a time
            async with self._lock:
                records, end = await anyio.to_thread.run_sync(self.spool.backlog, BATCH)
            try:
                refused = await anyio.to_thread.run_sync(self._write_each, records) if records else 0
            except Exception as exc:
                self._down(exc)
                await asyncio.sleep(delay)  # back off while the database is away
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            async with self._lock:
                await anyio.to_thread.run_sync(
                    self.spool.written, records, end if records else self.spool.size
                )
            if records and not self.db_ok:
                log.warning("the audit database is back; the spool is being written")
            self.db_ok = True
            metrics.AUDIT_REPLAYED.inc(len(records) - refused)
            if self.spool.size == 0:
                self._backlog.clear()
                self._drained.set()
            self.refusing = None  # the spool has room again
            self._progress.set()
            self._publish()

    def _write_each(self, records: list[CardRecord]) -> int:
        """Write a batch; on a data error, one record at a time. Returns how many were
        quarantined; an outage is raised (the batch is tried again later)."""
        try:
            self.store.add_cards(records)
            return 0
        except Exception as exc:
            if is_outage(exc):
                raise
        refused = 0
        for record in records:
            try:
                self.store.add_cards([record])
            except Exception as exc:
                if is_outage(exc):
                    raise
                reason = reason_class(exc)
                self.spool.quarantine(record, reason)
                log.error(
                    "card audit record refused by the database; quarantined",
                    extra={"rule_id": record.rule_id, "card": record.uuid, "reason": reason},
                )
                metrics.AUDIT_QUARANTINED.inc()
                refused += 1
        return refused
