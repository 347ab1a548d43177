"""Where seen JWT ids (``jti``) are kept until they expire: replay protection for every worker.

Every authenticated call writes one row, so this is on the hook path:

* PostgreSQL: the ``seen_tokens`` table of the main database, committed without waiting for
  the disk (``synchronous_commit=off``); still atomic and at once visible to every replica.
* SQLite: a small database file of its own beside the main one (``<name>.tokens.db``), written
  through one plain ``sqlite3`` connection. Sharing the main file's write lock with the audit
  writer made calls wait in SQLite's busy handler, which sleeps in steps of up to 100 ms.
  WAL with ``synchronous=NORMAL``: it survives a process crash; a machine crash may forget the
  last few ids, whose tokens expire within minutes anyway.

  The insert runs on the event loop (about 20 us), so nothing slow may ride on it. SQLite's
  automatic checkpoint does: every 1,000 WAL pages the committing connection copies the WAL
  into the file and fsyncs both, and on a busy disk that fsync took the loop ~100 ms (the RS384
  p99 of issue 17). So a thread of the ledger checkpoints, on a connection of its own, after
  every :data:`CHECKPOINT_EVERY` ids (a PASSIVE checkpoint takes no lock an insert waits for),
  and again at once while ids arrived during the last one: the WAL starts over only after a
  checkpoint that caught up. Should it not catch up (a disk too slow for the rate), the loop's
  connection still checkpoints itself past :data:`BACKSTOP_PAGES` of WAL, as before but
  rarer, so the WAL stays bounded. The purge deletes in chunks, letting go of the loop's lock
  between them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import anyio
from sqlalchemy.engine import make_url

from service.errors import StoreUnavailable
from service.store.database import Store, sqlalchemy_url

log = logging.getLogger("osteoguard.store")
CHECKPOINT_EVERY = 256  # ids; up to about 1 MB of WAL (an insert writes one to four pages)
CATCH_UP_PASSES = 8  # checkpoints in a row while ids keep arriving, before waiting again
BACKSTOP_PAGES = 8192  # 32 MB of WAL: the loop's connection checkpoints (SQLite's default: 1000)
PURGE_CHUNK = 500  # expired ids deleted per turn of the loop's lock


class SqliteTokenLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # One B-tree per insert: no rowid table beside the key, and no index on expiry (the
        # purge scans a table that holds only minutes of tokens). 42 -> 22 us per token.
        with self._db:  # one transaction, so workers starting together do this once
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jti_seen (iss TEXT NOT NULL, jti TEXT NOT NULL, "
                "expires_at REAL NOT NULL, PRIMARY KEY (iss, jti)) WITHOUT ROWID"
            )
            old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seen_tokens'"
            if self._db.execute(old).fetchone():  # the layout before 2026-11-28: keep its ids
                self._db.execute("INSERT OR IGNORE INTO jti_seen SELECT * FROM seen_tokens")
                self._db.execute("DROP TABLE seen_tokens")
        self._db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")  # see the module docstring
        self._since_checkpoint = 0
        self._checkpoint_due = threading.Event()
        self._closing = False
        self.checkpointed = threading.Event()  # set after each checkpoint pass of the thread
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="osteoguard-token-checkpoint", daemon=True
        )
        self._checkpointer.start()

    async def remember(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record a token id; False when it was seen before. Fast enough to run on the loop."""
        try:
            with self._lock:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO jti_seen (iss, jti, expires_at) VALUES (?, ?, ?)",
                    (iss, jti, expires_at.timestamp()),
                )
                new = cursor.rowcount == 1
        except sqlite3.Error as exc:  # a full disk, a locked or lost file: the call may retry
            raise StoreUnavailable(f"the token ledger is unavailable ({type(exc).__name__})") from exc
        self._wrote(1)
        return new

    def forget_expired(self, now: datetime) -> int:
        """Delete expired ids (from a worker thread, not the loop), a chunk at a time."""
        forgotten = 0
        while True:
            with self._lock:
                deleted = self._db.execute(
                    "DELETE FROM jti_seen WHERE (iss, jti) IN "
                    "(SELECT iss, jti FROM jti_seen WHERE expires_at < ? LIMIT ?)",
                    (now.timestamp(), PURGE_CHUNK),
                ).rowcount
            forgotten += deleted
            self._wrote(deleted)
            if deleted < PURGE_CHUNK:
                return forgotten

    def close(self) -> None:
        self._closing = True
        self._checkpoint_due.set()
        self._checkpointer.join()
        with self._lock:
            self._db.close()

    def _wrote(self, ids: int) -> None:
        self._since_checkpoint += ids
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._checkpoint_due.set()

    def _checkpoint_loop(self) -> None:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")  # another worker's checkpoint: wait here
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closing:
                    return
                try:
                    for _ in range(CATCH_UP_PASSES):
                        ((_busy, frames, copied),) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.checkpointed.set()
                        if copied >= frames or self._closing:
                            break  # caught up: the next insert starts the WAL over
                except sqlite3.Error as exc:  # the next one tries again (the backstop bounds the WAL)
                    log.warning("token ledger checkpoint failed", extra={"error": type(exc).__name__})
        finally:
            db.close()


class StoreTokenLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def remember(self, iss: str, jti: str, expires_at: datetime) -> bool:
        return bool(await anyio.to_thread.run_sync(self.store.remember_token, iss, jti, expires_at))

    def forget_expired(self, now: datetime) -> int:
        return self.store.forget_expired_tokens(now)

    def close(self) -> None:
        pass


def token_ledger(store: Store) -> SqliteTokenLedger | StoreTokenLedger:
    """The ledger for this store: a side file for SQLite, the main database otherwise."""
    url = make_url(sqlalchemy_url(store.url))
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        main = Path(url.database)
        return SqliteTokenLedger(main.with_name(main.stem + ".tokens.db"))
    return StoreTokenLedger(store)
