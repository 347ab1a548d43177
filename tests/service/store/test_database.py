"""Store details not covered through the HTTP tests, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import SQLAlchemyError

from service.store.database import CARD_COLUMNS, CardRecord, Store, cards


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


def _card(uuid: str, **changes: object) -> CardRecord:
    fields: dict[str, object] = {
        "uuid": uuid,
        "rule_id": "baseline-dexa",
        "service_id": "anastrozole-bone-order-select",
        "hook": "order-select",
        "hook_instance": "hi-1",
        "ruleset_version": "2026.11",
        "patient_key": "p" * 64,
        "suggestion_uuids": ("s-1", "s-2"),
        "issued_at": datetime(2026, 11, 28, 12, 0, 0, 7, tzinfo=UTC),
        "evidence_fingerprint": "e" * 64,
        "weekly_dose": 7.0,
        "client_iss": "https://ehr",
        "encounter_key": "n" * 64,
        "draft_key": "d" * 64,
        "disposition": "silent",
    }
    fields.update(changes)
    return CardRecord(**fields)  # type: ignore[arg-type]


def test_add_cards_stores_rows_as_sqlalchemy_core_stores_them(database_url: str) -> None:
    # add_cards hands tuples to the driver itself; reads, range queries and older rows go
    # through SQLAlchemy's types, so each column must hold exactly what Core would have written.
    store = Store(database_url, b"k")
    store.open()
    try:
        fast, core = _card("fast"), _card("core")
        store.add_cards([fast, _card("no-extras", evidence_fingerprint=None, weekly_dose=None)])
        row = {c: getattr(core, c) for c in CARD_COLUMNS}
        row["suggestion_uuids"] = json.dumps(list(core.suggestion_uuids))
        with store.engine.begin() as conn:
            conn.execute(cards.insert(), [row])
            raw = conn.exec_driver_sql(
                f"SELECT uuid, {', '.join(CARD_COLUMNS[1:])} FROM cards WHERE uuid IN ('fast', 'core')"
            ).all()
        by_uuid = {r[0]: r[1:] for r in raw}
        assert by_uuid["fast"] == by_uuid["core"]
        got = store.cards_by_uuid(["fast", "no-extras"])
        assert got["fast"] == fast
        assert got["no-extras"].evidence_fingerprint is None and got["no-extras"].weekly_dose is None
    finally:
        store.close()


def test_add_cards_skips_uuids_already_stored_and_keeps_the_first(database_url: str) -> None:
    store = Store(database_url, b"k")
    store.open()
    try:
        store.add_cards([_card("one"), _card("two")])
        store.add_cards([_card("two", rule_id="other"), _card("two", rule_id="other"), _card("three")])
        got = store.cards_by_uuid(["one", "two", "three"])
        assert set(got) == {"one", "two", "three"} and got["two"].rule_id == "baseline-dexa"
    finally:
        store.close()


def test_a_card_row_the_database_refuses_is_a_wrapped_data_error(database_url: str) -> None:
    # replay.is_outage tells an outage from a data error by SQLAlchemy's wrapped exception types.
    from service.store.replay import is_outage

    store = Store(database_url, b"k")
    store.open()
    try:
        with pytest.raises(SQLAlchemyError) as caught:
            store.add_cards([_card("bad", rule_id=None)])  # NOT NULL
        assert not is_outage(caught.value)
        assert store.cards_by_uuid(["bad"]) == {}
    finally:
        store.close()


def test_the_token_ledger_checkpoints_in_its_own_thread_not_on_the_loop(tmp_path: Path) -> None:
    # A checkpoint fsyncs the WAL and the file; on the loop's connection that stalled every call.
    from service.store import tokens

    ledger = tokens.SqliteTokenLedger(tmp_path / "og.tokens.db")
    try:
        loop_connection = ledger._db.execute("PRAGMA wal_autocheckpoint").fetchall()
        assert loop_connection == [(tokens.BACKSTOP_PAGES,)]  # only if the thread falls behind
        expires = datetime(2030, 1, 1, tzinfo=UTC)

        async def remember(n: int) -> None:
            for i in range(n):
                assert await ledger.remember("iss", f"jti-{i}", expires)

        asyncio.run(remember(tokens.CHECKPOINT_EVERY))
        assert ledger.checkpointed.wait(10)
        asyncio.run(ledger.remember("iss", "one-more", expires))
        other = sqlite3.connect(tmp_path / "og.tokens.db")
        try:
            ((_busy, frames, _copied),) = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            other.close()
        assert frames <= 4  # the thread caught up, so the WAL started over
    finally:
        ledger.close()
    assert not ledger._checkpointer.is_alive()


def test_the_token_ledger_forgets_expired_ids_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.store import tokens

    monkeypatch.setattr(tokens, "PURGE_CHUNK", 7)
    ledger = tokens.SqliteTokenLedger(tmp_path / "og.tokens.db")
    try:
        old, live = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)

        async def fill() -> None:
            for i in range(30):
                await ledger.remember("iss", f"old-{i}", old)
            for i in range(3):
                await ledger.remember("iss", f"live-{i}", live)

        asyncio.run(fill())
        assert ledger.forget_expired(datetime(2030, 1, 1, 12, tzinfo=UTC)) == 30
        assert asyncio.run(ledger.remember("iss", "old-0", old)) is True  # forgotten
        assert asyncio.run(ledger.remember("iss", "live-0", live)) is False  # still a replay
    finally:
        ledger.close()
