"""Where seen JWT ids (``jti``) are kept until they expire: replay protection for every worker.

Every authenticated call writes one row, so this is on the hook path:

* PostgreSQL: the ``seen_tokens`` table of the main database, committed without waiting for
  the disk (``synchronous_commit=off``); still atomic and at once visible to every replica.
* SQLite: a small database file of its own beside the main one (``<name>.tokens.db``), written
  through one plain ``sqlite3`` connection. Sharing the main file's write lock with the audit
  writer made calls wait in SQLite's busy handler, which sleeps in steps of up to 100 ms.
  WAL with ``synchronous=NORMAL``: it survives a process crash; a machine crash may forget the
  last few ids, whose tokens expire within minutes anyway.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import anyio
from sqlalchemy.engine import make_url

from service.errors import StoreUnavailable
from service.store.database import Store, sqlalchemy_url


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

    async def remember(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record a token id; False when it was seen before. Fast enough to run on the loop."""
        try:
            with self._lock:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO jti_seen (iss, jti, expires_at) VALUES (?, ?, ?)",
                    (iss, jti, expires_at.timestamp()),
                )
                return cursor.rowcount == 1
        except sqlite3.Error as exc:  # a full disk, a locked or lost file: the call may retry
            raise StoreUnavailable(f"the token ledger is unavailable ({type(exc).__name__})") from exc

    def forget_expired(self, now: datetime) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM jti_seen WHERE expires_at < ?", (now.timestamp(),)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
