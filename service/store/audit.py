"""Recording every card the service returns: never dropped, and only briefly held in memory.

Hook calls hand their card records to :class:`AuditWriter` before the response is sent. A
writer thread writes them to the database in batches; a batch the database has not taken
within half the age bound (``OSTEOGUARD_AUDIT_MAX_AGE_MS``, counted from its oldest record's
submission) is appended to the local spool instead (:mod:`service.store.spool`, fsynced), so
a crash of the process loses at most that window. The writer is a thread, not a task on the
event loop, so the bound does not wait on the loop: a timer there fires only when the request
being evaluated lets go, and a loop stalled on its log pipe stalled a task-based writer for
seconds.

While the database is away, new batches join the spool's tail, and a drain thread writes the
spool to the database in order, retrying while it is away. Once the database answers again, new
batches go straight to it while the drain empties the spool (every database write goes through
one thread, so they never contend for SQLite's lock): under steady load a spool that every new
batch had to join would never empty, and each record would pay an fsync and a second write.
Rows keep their own ``issued_at``; only their insertion order can differ from it. Every
insert skips a card uuid already stored, so a spool replayed after a crash (or a write that
finished after its batch was spooled) can neither double-insert nor fail.

A batch the database refuses for its data (not an outage: a NUL byte PostgreSQL cannot store)
is written again one record at a time; a record refused alone is quarantined (logged by rule
id, card uuid and error class, counted, kept in the spool folder) and never blocks the others.

While the database is known to be away, a call waits until its own records are fsynced in
the spool; when neither can take them, :meth:`submit` (or that wait) raises
:class:`SpoolFull`, a 503: a call whose cards cannot be recorded gives none.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import anyio

from service import metrics
from service.errors import SpoolFull
from service.store.database import CardRecord, Store
from service.store.replay import is_outage, reason_class, write_each
from service.store.spool import Spool

log = logging.getLogger("osteoguard.audit")
BATCH = 500
GATHER_S = 0.05  # wait this long for more records, so one transaction carries many
RETRY_MIN_S, RETRY_MAX_S = 0.05, 1.0  # the drain's back-off while the database is away
WAIT_DURABLE_S = 2.0  # a call that waits for its records to reach the spool waits at most this
DRAIN_AT_EXIT_S = 2.0  # a clean stop tries this long to empty the spool (else: next start)
MIN_FREE_BYTES = 256 * 1024  # less free space than this on the spool's disk: not ready
SPOOL_HEADROOM_BYTES = 4096  # with the database away, a spool this close to its bound: not ready
_Entry = tuple[float, CardRecord, "asyncio.Future[None] | None"]


class AuditWriter:
    def __init__(self, store: Store, spool: Spool, max_age_s: float = 0.2) -> None:
        self.store = store
        self.spool = spool
        self.max_age_s = max_age_s
        self._gather_s = min(GATHER_S, max_age_s / 8)
        self._db_budget_s = max_age_s / 2  # the other half: the spool's fsync, and scheduling
        self._cond = threading.Condition()  # guards the queue and the counters below
        self._pending: deque[_Entry] = deque()
        self._memory: dict[str, CardRecord] = {}  # queued or being written: not yet safe
        self._submitted = self._settled = self._flushing = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._spool_lock = threading.Lock()  # one spool operation at a time
        self._backlog, self._drained, self._progress = threading.Event(), threading.Event(), threading.Event()
        self._drained.set()
        self._stopping = threading.Event()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="osteoguard-audit-db")
        self._slow: Future[None] | None = None  # a database write that overran its budget
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.db_ok = True
        self.refusing: str | None = None  # why records cannot be made durable now

    async def start(self) -> None:
        """Adopt the spools of processes that died (replayed by the drain), then start."""
        self._loop = asyncio.get_running_loop()
        adopted = await anyio.to_thread.run_sync(self.spool.adopt_orphans)
        if adopted:
            log.warning("audit spool of a previous process adopted", extra={"cards": adopted})
            self._mark_backlog()
        self._publish()
        for target, name in ((self._run, "writer"), (self._drain, "drain")):
            thread = threading.Thread(target=target, name=f"osteoguard-audit-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, records: Sequence[CardRecord]) -> asyncio.Future[None] | None:
        """Queue records; never blocks. While the database is known to be away, returns a
        future that is done when these are fsynced in the spool (see :meth:`durable`)."""
        if self.refusing is not None:
            raise SpoolFull(self.refusing)
        if not records:
            return None
        spooling = self._must_spool()
        waiter = asyncio.get_running_loop().create_future() if spooling else None
        now = time.monotonic()
        with self._cond:
            idle = not self._pending
            for record in records:
                self._pending.append((now, record, waiter))
                self._memory[record.uuid] = record
            self._submitted += len(records)
            # Wake the writer only when it waits for a first record or a batch is full: while
            # it gathers, it wakes at the oldest record's deadline anyway, and a wake-up per
            # call cost the event loop a GIL hand-over each time.
            if idle or len(self._pending) >= BATCH:
                self._cond.notify()
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
        done = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._settled >= self._submitted:
                return True
            self._waiters.append((self._submitted, done))
            self._flushing += 1
            self._cond.notify()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            with self._cond:
                self._flushing -= 1

    async def drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (everything spooled is in the database)."""
        return bool(await anyio.to_thread.run_sync(self._drained.wait, timeout_s))

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
        """Make what is queued safe, then stop; a spool left over is adopted at the next start."""
        if not self._threads:
            return
        if not await self.flush(timeout_s):
            left = len(self._memory)
            log.error("card records could not be made durable before exit", extra={"cards": left})
        elif self.db_ok:
            await self.drained(min(timeout_s, DRAIN_AT_EXIT_S))
        self._stopping.set()
        self._progress.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            await anyio.to_thread.run_sync(thread.join, timeout_s)
        self._threads = []
        self._db.shutdown(wait=False)
        with self._spool_lock:
            self.spool.close()

    # ---- the writer thread: the database within its budget, else the spool ---------------
    def _spooling(self) -> bool:
        """Records wait in the spool, or a database write overran its budget."""
        return self._overrunning() or self._backlog.is_set()

    def _overrunning(self) -> bool:
        return self._slow is not None and not self._slow.done()

    def _must_spool(self) -> bool:
        # With the database known to be away but nothing spooled, each batch still tries it
        # first (within its budget): the way back needs no probe of its own. A backlog alone
        # with the database answering does not hold new batches back (see the module's text).
        return self._overrunning() or (not self.db_ok and self._backlog.is_set())

    def _next_batch(self) -> list[_Entry] | None:
        with self._cond:
            while not self._pending or self._stopping.is_set():
                if self._stopping.is_set():  # stop() has flushed what could be made durable
                    return None
                self._cond.wait()
            # Gather more records for one transaction, as long as the oldest can afford it.
            while not self._flushing and len(self._pending) < BATCH and not self._stopping.is_set():
                left = self._pending[0][0] + self._gather_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._place([record for _, record, _ in batch], batch[0][0])
            except SpoolFull as exc:
                self._refuse(batch, exc)
                continue
            except Exception as exc:  # a bug must not stop the writer: keep the batch, go on
                log.exception("audit writer failed", extra={"error": type(exc).__name__})
                self._requeue(batch)
                self._stopping.wait(RETRY_MAX_S)
                continue
            if self.refusing is not None:
                log.warning("audit records are durable again; calls are taken")
                self.refusing = None
            self._settle(batch)

    def _place(self, records: list[CardRecord], oldest: float) -> None:
        if not self._must_spool():
            write = self._db.submit(self.store.add_cards, records)
            try:
                write.result(timeout=max(0.0, oldest + self._db_budget_s - time.monotonic()))
                self.db_ok = True
                return
            except FutureTimeout:
                self._slow = write  # it may still succeed: the spooled copy is then skipped
            except Exception as exc:
                if is_outage(exc):
                    self._down(exc)
                # else a data error: the drain writes the batch again one record at a time
        with self._spool_lock:
            self.spool.append(records)
        metrics.AUDIT_SPOOLED.inc(len(records))
        self._mark_backlog()
        self._publish()

    def _refuse(self, batch: list[_Entry], exc: SpoolFull) -> None:
        if self.refusing is None:
            log.error(
                "card records can be neither stored nor spooled; calls are refused",
                extra={"reason": exc.message},
            )
        self.refusing = exc.message
        # Records whose call still waits are refused with it (no card given); the others were
        # answered already, so they stay queued until the database or the spool takes them.
        kept = [entry for entry in batch if entry[2] is None]
        refused = [entry for entry in batch if entry[2] is not None]
        self._resolve([waiter for _, _, waiter in refused], SpoolFull(exc.message))
        with self._cond:
            for _, record, _ in refused:
                self._memory.pop(record.uuid, None)
            self._settled += len(refused)
            ready = self._ready_waiters()
        self._resolve(ready, None)
        self._requeue(kept)
        self._progress.clear()
        if self._progress.wait(RETRY_MAX_S) or not kept or self._stopping.is_set():
            # Let the next calls try (each waits for its own records, so a refusal is still
            # a 503, only no longer an instant one).
            self.refusing = None

    def _requeue(self, batch: list[_Entry]) -> None:
        with self._cond:
            self._pending.extendleft(reversed(batch))

    def _settle(self, batch: list[_Entry]) -> None:
        with self._cond:
            for _, record, _ in batch:
                self._memory.pop(record.uuid, None)
            self._settled += len(batch)
            ready = self._ready_waiters()
        futures: list[asyncio.Future[None] | None] = [waiter for _, _, waiter in batch]
        self._resolve([*futures, *ready], None)

    def _ready_waiters(self) -> list[asyncio.Future[None] | None]:
        ready: list[asyncio.Future[None] | None] = [f for t, f in self._waiters if t <= self._settled]
        self._waiters = [(t, f) for t, f in self._waiters if t > self._settled]
        return ready

    def _resolve(self, futures: Sequence[asyncio.Future[None] | None], error: Exception | None) -> None:
        unique = {id(f): f for f in futures if f is not None}
        if unique and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_finish, list(unique.values()), error)

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

    # ---- the drain thread: spool -> database, in order -------------------------------------
    def _drain(self) -> None:
        delay = RETRY_MIN_S
        while not self._stopping.is_set():
            if not self._backlog.wait(0.5):
                continue
            if self._slow is not None:
                _wait_quietly(self._slow)  # one database write at a time
            with self._spool_lock:
                records, end = self.spool.backlog(BATCH)
            try:
                # On the one database thread: the writer's batches and the drain's never
                # wait on each other's SQLite lock (its busy handler sleeps up to 100 ms).
                refused = (
                    self._db.submit(write_each, self.store, self.spool, records).result() if records else 0
                )
            except Exception as exc:
                self._down(exc)
                self._stopping.wait(delay)  # back off while the database is away
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            if records and not self.db_ok:
                log.warning("the audit database is back; the spool is being written")
            self.db_ok = True
            with self._spool_lock:
                # No readable record left: what remains of the file is nothing to replay.
                self.spool.written(records, end if records else self.spool.size)
                if self.spool.size == 0:
                    self._backlog.clear()
                    self._drained.set()
            metrics.AUDIT_REPLAYED.inc(len(records) - refused)
            self.refusing = None  # the spool has room again
            self._progress.set()
            self._publish()


def _finish(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _wait_quietly(future: Future[None]) -> None:
    try:
        future.result()
    except Exception:  # its batch is in the spool; the drain writes it
        pass
