"""Feedback, card audit and snooze, on SQLite and on PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.app import create_app
from service.store.database import Store, cards, feedback, snoozes
from tests.builders import order_sign
from tests.conftest import Clock, make_settings

SIGN = "/cds-services/anastrozole-bone-order-sign"
FEEDBACK = "/cds-services/anastrozole-bone-order-sign/feedback"


def issue(client: TestClient, pid: str = "fb-1", **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Call the hook and return the cards by rule id."""
    body = client.post(SIGN, json=order_sign(pid, **kwargs)).json()
    return {c["source"]["topic"]["code"]: c for c in body["cards"]}


def entry(card: dict[str, Any], outcome: str = "accepted", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": outcome,
        "outcomeTimestamp": "2026-11-28T12:05:00Z",
    }
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    item.update(extra)
    return item


def snooze_entry(card: dict[str, Any]) -> dict[str, Any]:
    reason = {"system": "urn:osteoguard:override-reason", "code": "snooze-90d", "display": "Not now"}
    return entry(card, "overridden", overrideReason={"reason": reason, "userComment": "after holidays"})


def rows(database_url: str, table: Any) -> list[Any]:
    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            return list(conn.execute(select(table)).mappings().all())
    finally:
        store.close()


# ---- audit ----------------------------------------------------------------------------------
def test_every_card_is_audited_without_the_raw_patient_id(app_client: TestClient, database_url: str) -> None:
    issued = issue(app_client, "fb-raw-id-1", e2=6.0, dxa_days=900)
    app_client.portal.call(app_client.app.state.registry.audit.flush)  # type: ignore[attr-defined]
    audited = {r["uuid"]: r for r in rows(database_url, cards)}
    assert set(audited) == {c["uuid"] for c in issued.values()}
    low = audited[issued["low-estradiol"]["uuid"]]
    assert low["rule_id"] == "low-estradiol" and low["service_id"] == "anastrozole-bone-order-sign"
    assert low["hook"] == "order-sign" and low["hook_instance"] == "hi-fb-raw-id-1"
    assert low["ruleset_version"] == "2026.12.0"
    stored = {k: v for k, v in low.items() if k != "hook_instance"}  # the test's hookInstance embeds the id
    assert "fb-raw-id-1" not in str(stored) and len(low["patient_key"]) == 64
    assert sorted(__import__("json").loads(low["suggestion_uuids"])) == sorted(
        s["uuid"] for s in issued["low-estradiol"]["suggestions"]
    )


def test_audit_is_kept_when_the_client_disconnects(database_url: str, clock: Clock) -> None:
    app = create_app(make_settings(database_url=database_url), now=clock)
    body = __import__("json").dumps(order_sign("fb-gone", e2=6.0)).encode()

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                return messages.pop(0) if messages else {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body":
                    raise ConnectionResetError("client went away")

            scope = {
                "type": "http",
                "method": "POST",
                "path": SIGN,
                "raw_path": SIGN.encode(),
                "query_string": b"",
                "headers": [(b"content-type", b"application/json")],
                "http_version": "1.1",
                "scheme": "http",
                "server": ("test", 80),
                "client": ("x", 1),
                "root_path": "",
            }
            with pytest.raises(ConnectionResetError):
                await app(scope, receive, send)
        # leaving the lifespan drains the audit queue

    asyncio.run(scenario())
    assert [r["rule_id"] for r in rows(database_url, cards)] == ["low-estradiol"]


# ---- feedback -------------------------------------------------------------------------------
def test_accepted_feedback_is_stored(app_client: TestClient, database_url: str) -> None:
    card = issue(app_client, e2=6.0)["low-estradiol"]
    response = app_client.post(FEEDBACK, json={"feedback": [entry(card)]})
    assert response.status_code == 200 and response.json() == {"stored": 1, "duplicates": 0}
    (stored,) = rows(database_url, feedback)
    assert stored["card_uuid"] == card["uuid"] and stored["outcome"] == "accepted"


def test_the_same_feedback_twice_is_stored_once(app_client: TestClient, database_url: str) -> None:
    card = issue(app_client, e2=6.0)["low-estradiol"]
    first = app_client.post(FEEDBACK, json={"feedback": [entry(card)]})
    second = app_client.post(FEEDBACK, json={"feedback": [entry(card)]})
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"stored": 0, "duplicates": 1}
    assert len(rows(database_url, feedback)) == 1


def test_concurrent_duplicate_feedback_is_stored_once(app_client: TestClient, database_url: str) -> None:
    card = issue(app_client, e2=6.0)["low-estradiol"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda _: app_client.post(FEEDBACK, json={"feedback": [entry(card)]}).status_code, range(16)
            )
        )
    assert statuses == [200] * 16
    assert len(rows(database_url, feedback)) == 1


def test_feedback_from_two_app_instances_on_one_database(database_url: str, clock: Clock) -> None:
    settings = make_settings(database_url=database_url, patient_hash_key="shared")
    with (
        TestClient(create_app(settings, now=clock)) as one,
        TestClient(create_app(settings, now=clock)) as two,
    ):
        card = issue(one, e2=6.0)["low-estradiol"]
        one.app.state.registry.audit  # noqa: B018 - the card is flushed by the feedback call below
        assert one.post(FEEDBACK, json={"feedback": [entry(card)]}).status_code == 200
        assert two.post(FEEDBACK, json={"feedback": [entry(card)]}).json() == {"stored": 0, "duplicates": 1}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "feedback"),
        ({"feedback": []}, "feedback"),
        ({"feedback": "yes"}, "feedback"),
        (
            {"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2026-11-28T12:00:00Z"}]},
            "feedback.0.card",
        ),
        (
            {"feedback": [{"card": "x", "outcome": "maybe", "outcomeTimestamp": "2026-11-28T12:00:00Z"}]},
            "feedback.0.outcome",
        ),
        ({"feedback": [{"card": "x", "outcome": "overridden"}]}, "feedback.0.outcomeTimestamp"),
        (
            {"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
            "feedback.0.outcomeTimestamp",
        ),
        (
            {"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-11-28T12:00:00"}]},
            "time zone",
        ),
        (
            {
                "feedback": [
                    {
                        "card": "x",
                        "outcome": "accepted",
                        "outcomeTimestamp": "2026-11-28T12:00:00Z",
                        "acceptedSuggestions": "all",
                    }
                ]
            },
            "feedback.0.acceptedSuggestions",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_feedback_is_400_naming_the_field(app_client: TestClient, body: Any, named: str) -> None:
    response = app_client.post(FEEDBACK, json=body)
    assert response.status_code == 400
    assert named in response.json()["issue"][0]["details"]["text"]


def test_feedback_for_a_card_never_issued_is_404(app_client: TestClient) -> None:
    fake = {"uuid": "00000000-0000-0000-0000-000000000000", "suggestions": [{"uuid": "x"}]}
    response = app_client.post(FEEDBACK, json={"feedback": [entry(fake)]})
    assert response.status_code == 404 and fake["uuid"] in response.text


def test_feedback_sent_to_another_service_is_404(app_client: TestClient) -> None:
    card = issue(app_client, e2=6.0)["low-estradiol"]
    other = "/cds-services/anastrozole-bone-patient-view/feedback"
    assert app_client.post(other, json={"feedback": [entry(card)]}).status_code == 404


def test_feedback_to_an_unknown_service_is_404(app_client: TestClient) -> None:
    assert app_client.post("/cds-services/nope/feedback", json={"feedback": []}).status_code == 404


def test_accepted_without_suggestions_is_400(app_client: TestClient) -> None:
    card = issue(app_client, e2=6.0)["low-estradiol"]
    item = entry(card)
    del item["acceptedSuggestions"]
    response = app_client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 400 and "acceptedSuggestions" in response.text


def test_accepting_a_suggestion_of_another_card_is_400(app_client: TestClient) -> None:
    issued = issue(app_client, e2=6.0, dxa_days=900)
    item = entry(issued["low-estradiol"])
    item["acceptedSuggestions"] = [{"id": issued["baseline-dexa"]["suggestions"][0]["uuid"]}]
    response = app_client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 400 and "not a suggestion of that card" in response.text


def test_a_batch_is_all_or_nothing(app_client: TestClient, database_url: str) -> None:
    card = issue(app_client, e2=6.0)["low-estradiol"]
    fake = {"uuid": "not-issued", "suggestions": [{"uuid": "x"}]}
    response = app_client.post(FEEDBACK, json={"feedback": [entry(card), entry(fake)]})
    assert response.status_code == 404
    assert rows(database_url, feedback) == []


# ---- snooze -----------------------------------------------------------------------------------
def test_snooze_suppresses_that_rule_for_that_patient_only(app_client: TestClient, database_url: str) -> None:
    issued = issue(app_client, "snz-1", e2=6.0, dxa_days=900)
    assert (
        app_client.post(FEEDBACK, json={"feedback": [snooze_entry(issued["low-estradiol"])]}).status_code
        == 200
    )
    again = issue(app_client, "snz-1", e2=6.0, dxa_days=900)
    assert "low-estradiol" not in again and "baseline-dexa" in again  # other rules unaffected
    assert "low-estradiol" in issue(app_client, "snz-2", e2=6.0)  # other patients unaffected
    (snooze,) = rows(database_url, snoozes)
    assert snooze["rule_id"] == "low-estradiol" and "snz-1" not in str(snooze)


def test_snooze_expires_after_90_days(app_client: TestClient, clock: Clock) -> None:
    card = issue(app_client, "snz-3", e2=6.0)["low-estradiol"]
    app_client.post(FEEDBACK, json={"feedback": [snooze_entry(card)]})
    clock.advance(days=89, hours=23)
    assert "low-estradiol" not in issue(app_client, "snz-3", e2=6.0)
    clock.advance(hours=2)
    assert "low-estradiol" in issue(app_client, "snz-3", e2=6.0)


def test_other_override_reasons_do_not_snooze(app_client: TestClient) -> None:
    card = issue(app_client, "snz-4", e2=6.0)["low-estradiol"]
    reason = {"system": "urn:osteoguard:override-reason", "code": "patient-declined", "display": "Declined"}
    app_client.post(
        FEEDBACK, json={"feedback": [entry(card, "overridden", overrideReason={"reason": reason})]}
    )
    assert "low-estradiol" in issue(app_client, "snz-4", e2=6.0)


def test_snooze_and_feedback_survive_a_restart(database_url: str, clock: Clock) -> None:
    settings = make_settings(database_url=database_url, patient_hash_key="stable")
    with TestClient(create_app(settings, now=clock)) as first:
        issued = issue(first, "snz-5", e2=6.0, dxa_days=900)
        first.post(FEEDBACK, json={"feedback": [snooze_entry(issued["low-estradiol"])]})
    with TestClient(create_app(settings, now=clock)) as second:
        assert "low-estradiol" not in issue(second, "snz-5", e2=6.0)
        # a card issued before the restart still takes feedback
        response = second.post(FEEDBACK, json={"feedback": [entry(issued["baseline-dexa"])]})
        assert response.json() == {"stored": 1, "duplicates": 0}


def test_generated_patient_key_is_shared_through_the_database(database_url: str, clock: Clock) -> None:
    settings = make_settings(database_url=database_url)  # no key configured
    with TestClient(create_app(settings, now=clock)) as first:
        card = issue(first, "snz-6", e2=6.0)["low-estradiol"]
        first.post(FEEDBACK, json={"feedback": [snooze_entry(card)]})
    with TestClient(create_app(settings, now=clock)) as second:
        assert "low-estradiol" not in issue(second, "snz-6", e2=6.0)


# ---- readiness --------------------------------------------------------------------------------
def test_readyz_reports_an_unreachable_store_as_degraded_while_cards_can_be_spooled(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app_client.get("/readyz").json()["store"] == "ok"

    def down() -> None:
        raise ConnectionError("database went away")

    monkeypatch.setattr(app_client.app.state.registry.store, "ping", down)  # type: ignore[attr-defined]
    response = app_client.get("/readyz")
    assert response.status_code == 200 and response.json()["store"] == "degraded, spooling"


def test_snooze_on_one_replica_reaches_another_on_its_next_refresh(database_url: str, clock: Clock) -> None:
    settings = make_settings(database_url=database_url, patient_hash_key="shared")
    with (
        TestClient(create_app(settings, now=clock)) as one,
        TestClient(create_app(settings, now=clock)) as two,
    ):
        card = issue(one, "snz-7", e2=6.0)["low-estradiol"]
        one.post(FEEDBACK, json={"feedback": [snooze_entry(card)]})
        assert "low-estradiol" not in issue(one, "snz-7", e2=6.0)  # at once on the replica that took it
        assert "low-estradiol" in issue(two, "snz-7", e2=6.0)  # the other has not refreshed yet
        two.app.state.registry.snoozes.load()  # type: ignore[attr-defined]  # its periodic refresh
        assert "low-estradiol" not in issue(two, "snz-7", e2=6.0)


def test_feedback_with_the_database_away_is_503(app_client: TestClient) -> None:
    card = issue(app_client, "away-1", e2=6.0)["low-estradiol"]
    app_client.portal.call(app_client.app.state.registry.audit.flush)  # type: ignore[attr-defined]

    class Away:
        def connect(self) -> Any:
            raise OperationalError("SELECT 1", {}, ConnectionError("database went away"))

        begin = connect

    store = app_client.app.state.registry.store  # type: ignore[attr-defined]
    real, store.engine = store.engine, Away()
    try:
        response = app_client.post(FEEDBACK, json={"feedback": [entry(card)]})
    finally:
        store.engine = real
    assert response.status_code == 503
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "OG-503-STORE"


# ---- feedback never meets a false 404 ---------------------------------------------------------
def test_feedback_for_a_card_still_in_the_spool_is_stored_not_404(
    app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = app_client.app.state.registry  # type: ignore[attr-defined]
    real = registry.store.add_cards

    def away(records: Any) -> None:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("the database went away"))

    monkeypatch.setattr(registry.store, "add_cards", away)  # reads work, card writes do not
    card = issue(app_client, "spooled-1", e2=6.0)["low-estradiol"]
    assert app_client.portal.call(registry.audit.flush, 5)  # type: ignore[union-attr]
    assert card["uuid"] in registry.audit.spool.records
    response = app_client.post(FEEDBACK, json={"feedback": [entry(card)]})
    assert response.status_code == 200 and response.json()["stored"] == 1
    monkeypatch.setattr(registry.store, "add_cards", real)  # the database is back: the spool drains
    assert app_client.portal.call(registry.audit.drained, 10)  # type: ignore[union-attr]
    assert card["uuid"] in {row["uuid"] for row in rows(database_url, cards)}


def test_feedback_to_another_replica_right_after_the_answer_is_not_404(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "shared.db"
    settings = make_settings(database_url=f"sqlite:///{path}", patient_hash_key="shared")
    with (
        TestClient(create_app(settings, now=clock)) as one,
        TestClient(create_app(settings, now=clock)) as two,
    ):
        # Another writer holds the database for 100 ms: the first replica's audit write waits.
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.1, holder.rollback)
        release.start()
        try:
            card = issue(one, "replica-1", e2=6.0)["low-estradiol"]
            response = two.post(FEEDBACK, json={"feedback": [entry(card)]})
        finally:
            release.join()
            holder.close()
    assert response.status_code == 200, response.text


def test_a_hook_instance_with_control_characters_is_400_and_records_nothing(
    app_client: TestClient, database_url: str
) -> None:
    body = order_sign("nul-1", e2=6.0)
    body["hookInstance"] = "d1577c69\x00-dfbe"
    response = app_client.post(SIGN, json=body)
    assert response.status_code == 400 and "hookInstance" in response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert app_client.portal.call(app_client.app.state.registry.audit.flush, 5)  # type: ignore[attr-defined]
    assert rows(database_url, cards) == []
