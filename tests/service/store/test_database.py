"""Store details not covered through the HTTP tests, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.store.database import Store


def test_seen_tokens_are_kept_until_they_expire(database_url: str) -> None:
    store = Store(database_url, b"k")
    store.open()
    try:
        now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
        assert store.remember_token("https://ehr", "jti-1", now + timedelta(minutes=5)) is True
        assert store.remember_token("https://ehr", "jti-1", now + timedelta(minutes=5)) is False  # replay
        assert store.remember_token("https://other-ehr", "jti-1", now + timedelta(minutes=5)) is True
        assert store.forget_expired_tokens(now) == 0
        assert store.forget_expired_tokens(now + timedelta(minutes=6)) == 2
    finally:
        store.close()


def test_postgres_style_urls_use_psycopg_3() -> None:
    from service.store.database import sqlalchemy_url

    assert sqlalchemy_url("postgresql://u:p@db/og") == "postgresql+psycopg://u:p@db/og"
    assert sqlalchemy_url("postgres://u@db/og") == "postgresql+psycopg://u@db/og"
    assert sqlalchemy_url("sqlite:///./osteoguard.db") == "sqlite:///./osteoguard.db"


def test_sqlite_token_ledger_detects_replays_across_connections(tmp_path: object) -> None:
    import asyncio
    from pathlib import Path

    from service.store.tokens import SqliteTokenLedger

    path = Path(str(tmp_path)) / "og.tokens.db"
    one, two = SqliteTokenLedger(path), SqliteTokenLedger(path)  # as two workers would
    try:
        expires = datetime(2030, 1, 1, tzinfo=UTC)
        assert asyncio.run(one.remember("iss", "jti-1", expires)) is True
        assert asyncio.run(two.remember("iss", "jti-1", expires)) is False
        assert two.forget_expired(datetime(2031, 1, 1, tzinfo=UTC)) == 1
    finally:
        one.close()
        two.close()


def test_sqlite_token_ledger_keeps_ids_from_the_old_layout(tmp_path: object) -> None:
    import asyncio
    import sqlite3
    from pathlib import Path

    from service.store.tokens import SqliteTokenLedger

    path = Path(str(tmp_path)) / "og.tokens.db"
    with sqlite3.connect(path) as old:  # the side file as the previous release left it
        old.execute(
            "CREATE TABLE seen_tokens (iss TEXT NOT NULL, jti TEXT NOT NULL, "
            "expires_at REAL NOT NULL, PRIMARY KEY (iss, jti))"
        )
        old.execute("INSERT INTO seen_tokens VALUES ('iss', 'jti-old', 1893456000.0)")
    ledger = SqliteTokenLedger(path)
    try:
        expires = datetime(2030, 1, 1, tzinfo=UTC)
        assert asyncio.run(ledger.remember("iss", "jti-old", expires)) is False
        assert asyncio.run(ledger.remember("iss", "jti-new", expires)) is True
    finally:
        ledger.close()
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"jti_seen"}
