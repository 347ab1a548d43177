"""A snooze holds while the card would rest on the same evidence (SPEC §6), through HTTP, on
SQLite and PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, update

from service.app import create_app
from service.store.database import Store, cards, snoozes
from tests.builders import obs, order_sign
from tests.conftest import Clock, make_settings
from tests.service.store.test_feedback import FEEDBACK, SIGN, rows, snooze_entry

RULE = "low-estradiol"


def low_e2(pid: str, *, doses_a_week: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """An order-sign request on which low-estradiol fires (the draft: 1 mg twice weekly)."""
    request = order_sign(pid, e2=kwargs.pop("e2", 6.0), **kwargs)
    if doses_a_week is not None:
        (draft,) = [e["resource"] for e in request["context"]["draftOrders"]["entry"]]
        draft["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = doses_a_week
    return request


def with_newer_e2(request: dict[str, Any], value: float = 7.0) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    request["prefetch"]["estradiol"]["entry"].append(
        {"resource": obs("e2-new", pid, "2243-4", value, "pg/mL", 10)}
    )
    return request


def shown(client: TestClient, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cards the hook returns, by rule id."""
    body = client.post(SIGN, json=request).json()
    return {c["source"]["topic"]["code"]: c for c in body["cards"]}


def snooze(client: TestClient, request: dict[str, Any]) -> dict[str, Any]:
    """Issue the request's low-estradiol card and snooze it; returns the card."""
    card = shown(client, request)[RULE]
    assert client.post(FEEDBACK, json={"feedback": [snooze_entry(card)]}).status_code == 200
    return card


def write_old_snooze(database_url: str, patient_key: str, clock: Clock) -> None:
    """A snooze row as the service wrote it before snoozes were bound to evidence."""
    store = Store(database_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                insert(snoozes).values(
                    patient_key=patient_key,
                    rule_id=RULE,
                    until=clock() + timedelta(days=30),
                    feedback_fingerprint="f" * 64,
                    created_at=clock(),
                )
            )
    finally:
        store.close()


def test_the_snooze_keeps_what_the_snoozed_card_rested_on(app_client: TestClient, database_url: str) -> None:
    card = snooze(app_client, low_e2("ev-1"))
    issued = {r["uuid"]: r for r in rows(database_url, cards)}[card["uuid"]]
    (row,) = rows(database_url, snoozes)
    assert (
        row["evidence_fingerprint"] == issued["evidence_fingerprint"]
        and len(row["evidence_fingerprint"]) == 64
    )
    assert row["weekly_dose"] == issued["weekly_dose"] == 2.0  # 1 mg twice weekly


def test_a_snoozed_card_stays_hidden_on_the_same_evidence(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-2"))
    assert RULE not in shown(app_client, low_e2("ev-2"))


def test_a_newer_estradiol_result_shows_the_card_again(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-3"))
    assert RULE in shown(app_client, with_newer_e2(low_e2("ev-3")))


def test_a_corrected_value_on_the_same_result_shows_the_card_again(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-4", e2=6.0))
    assert RULE in shown(app_client, low_e2("ev-4", e2=7.5))  # same Observation id and date


def test_a_corrected_date_on_the_same_result_shows_the_card_again(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-5", e2_days=30))
    assert RULE in shown(app_client, low_e2("ev-5", e2_days=31))


def test_a_higher_weekly_dose_shows_the_card_again(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-6"))  # 2 mg a week
    assert RULE in shown(app_client, low_e2("ev-6", doses_a_week=3))


@pytest.mark.parametrize("doses_a_week", [1, 2])
def test_a_lower_or_equal_weekly_dose_stays_hidden(app_client: TestClient, doses_a_week: int) -> None:
    snooze(app_client, low_e2("ev-7"))  # 2 mg a week
    assert RULE not in shown(app_client, low_e2("ev-7", doses_a_week=doses_a_week))


def test_cards_that_rest_on_other_evidence_are_not_hidden_by_the_snooze(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-8", dxa_days=900))
    again = shown(app_client, with_newer_e2(low_e2("ev-8", dxa_days=900)))
    assert RULE in again and "baseline-dexa" in again


def test_the_card_shown_again_can_be_snoozed_again(app_client: TestClient) -> None:
    snooze(app_client, low_e2("ev-9"))
    snooze(app_client, with_newer_e2(low_e2("ev-9")))
    assert RULE not in shown(app_client, with_newer_e2(low_e2("ev-9")))
    assert RULE not in shown(app_client, low_e2("ev-9"))  # the first snooze still holds too


def test_the_evidence_of_a_snooze_survives_a_restart(database_url: str, clock: Clock) -> None:
    settings = make_settings(database_url=database_url, patient_hash_key="stable")
    with TestClient(create_app(settings, now=clock)) as first:
        snooze(first, low_e2("ev-10"))
    with TestClient(create_app(settings, now=clock)) as second:
        assert RULE not in shown(second, low_e2("ev-10"))
        assert RULE in shown(second, with_newer_e2(low_e2("ev-10")))
        assert RULE in shown(second, low_e2("ev-10", doses_a_week=4))


# ---- snoozes from before evidence was recorded -------------------------------------------------
def test_an_old_snooze_hides_the_rule_whatever_the_evidence(
    app_client: TestClient, database_url: str, clock: Clock
) -> None:
    registry = app_client.app.state.registry  # type: ignore[attr-defined]
    write_old_snooze(database_url, registry.store.patient_key("old-1"), clock)
    registry.snoozes.load()  # its periodic refresh
    assert RULE not in shown(app_client, low_e2("old-1"))
    assert RULE not in shown(app_client, with_newer_e2(low_e2("old-1", doses_a_week=7)))


def test_an_old_snooze_still_expires(app_client: TestClient, database_url: str, clock: Clock) -> None:
    registry = app_client.app.state.registry  # type: ignore[attr-defined]
    write_old_snooze(database_url, registry.store.patient_key("old-2"), clock)
    registry.snoozes.load()
    clock.advance(days=30, minutes=1)
    assert RULE in shown(app_client, low_e2("old-2"))


def test_snoozing_a_card_issued_before_evidence_was_recorded_hides_the_rule_whatever_the_evidence(
    app_client: TestClient, database_url: str
) -> None:
    card = shown(app_client, low_e2("old-3"))[RULE]
    registry = app_client.app.state.registry  # type: ignore[attr-defined]
    app_client.portal.call(registry.audit.flush)
    store = Store(database_url)
    try:
        with store.engine.begin() as conn:  # as an audit row from before migration 0003
            conn.execute(
                update(cards)
                .where(cards.c.uuid == card["uuid"])
                .values(evidence_fingerprint=None, weekly_dose=None)
            )
    finally:
        store.close()
    assert app_client.post(FEEDBACK, json={"feedback": [snooze_entry(card)]}).status_code == 200
    assert rows(database_url, snoozes)[0]["evidence_fingerprint"] is None
    assert RULE not in shown(app_client, with_newer_e2(low_e2("old-3")))
