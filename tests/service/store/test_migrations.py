"""Migrations keep what is stored: a database from an older revision upgraded to head, on
SQLite and PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, inspect

from service.app import create_app
from service.store.database import Store, snoozes, upgrade
from tests.conftest import Clock, make_settings
from tests.service.store.test_feedback import SIGN, rows
from tests.service.store.test_snoozes import low_e2, with_newer_e2

# The snoozes table as revision 0002 left it.
SNOOZES_0002 = Table(
    "snoozes",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_key", String(64), nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("until", DateTime(timezone=True), nullable=False),
    Column("feedback_fingerprint", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def columns(database_url: str, table: str) -> set[str]:
    store = Store(database_url)
    try:
        return {c["name"] for c in inspect(store.engine).get_columns(table)}
    finally:
        store.close()


def test_0003_adds_what_cards_and_snoozes_rest_on(database_url: str) -> None:
    upgrade(database_url, "0002")
    assert "evidence_fingerprint" not in columns(database_url, "snoozes")
    upgrade(database_url)
    for table in ("cards", "snoozes"):
        assert {"evidence_fingerprint", "weekly_dose"} <= columns(database_url, table)


def test_a_snooze_from_revision_0002_still_suppresses_after_the_upgrade(
    database_url: str, clock: Clock
) -> None:
    upgrade(database_url, "0002")
    store = Store(database_url, b"mig-key")
    try:
        with store.engine.begin() as conn:
            conn.execute(
                insert(SNOOZES_0002).values(
                    patient_key=store.patient_key("mig-1"),
                    rule_id="low-estradiol",
                    until=clock() + timedelta(days=60),
                    feedback_fingerprint="a" * 64,
                    created_at=clock() - timedelta(days=30),
                )
            )
    finally:
        store.close()
    settings = make_settings(database_url=database_url, patient_hash_key="mig-key")
    with TestClient(create_app(settings, now=clock)) as client:  # start-up migrates to head
        for request in (low_e2("mig-1"), with_newer_e2(low_e2("mig-1", doses_a_week=7))):
            body = client.post(SIGN, json=request).json()
            assert "low-estradiol" not in {c["source"]["topic"]["code"] for c in body["cards"]}
    (row,) = rows(database_url, snoozes)
    assert row["feedback_fingerprint"] == "a" * 64 and row["evidence_fingerprint"] is None
