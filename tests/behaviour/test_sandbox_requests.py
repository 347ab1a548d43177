"""Through HTTP with the exact requests the public CDS Hooks sandbox sends (tests/sandbox.py):
200 with the cards the usable data supports, and the dose update offered from its draft."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from service.cards.drafts import is_valid_fhir
from tests.sandbox import anastrozole, draft_of, shape

SIGN = "/cds-services/anastrozole-bone-order-sign"
SELECT = "/cds-services/anastrozole-bone-order-select"


def cards(client: TestClient, path: str, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    response = client.post(path, json=request)
    assert response.status_code == 200
    return {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}


def updates(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for s in card.get("suggestions", []) for a in s["actions"] if a["type"] == "update"]


def lowered(card: dict[str, Any]) -> list[dict[str, Any]]:
    """The dose-lowering updates (not the hold)."""
    return [a for a in updates(card) if a["resource"]["status"] != "on-hold"]


def not_offered(client: TestClient, reason: str) -> float:
    text = client.get("/metrics").text
    pattern = (
        rf'osteoguard_suggestions_not_offered_total\{{reason="{reason}",rule_id="low-estradiol"\}} (\S+)'
    )
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_order_select_before_a_drug_is_chosen_gets_no_cards(client: TestClient) -> None:
    assert cards(client, SELECT, shape("orderSelectBefore")) == {}


def test_order_select_of_another_drug_gets_no_cards(client: TestClient) -> None:
    assert cards(client, SELECT, shape("orderSelectAfter")) == {}


def test_the_dstu2_default_server_draft_gets_no_cards(client: TestClient) -> None:
    request = shape("dstu2DefaultServerAfterChoose")
    response = client.post(f"/cds-services/anastrozole-bone-{request['hook']}", json=request)
    assert response.status_code == 200 and response.json() == {"cards": []}


def test_the_dose_update_is_offered_from_the_sandbox_draft_at_order_sign(client: TestClient) -> None:
    (update,) = lowered(cards(client, SIGN, anastrozole())["low-estradiol"])
    resource = update["resource"]
    assert resource["id"] == "request-123"
    assert isinstance(resource["category"], list)
    assert resource["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 1  # twice daily -> once
    assert is_valid_fhir(resource)


def test_the_dose_update_is_offered_from_the_sandbox_draft_at_order_select(client: TestClient) -> None:
    (update,) = lowered(cards(client, SELECT, anastrozole("orderSelectAfter"))["low-estradiol"])
    assert update["resource"]["id"] == "request-123" and isinstance(update["resource"]["category"], list)


def test_the_hold_update_is_offered_from_the_sandbox_draft(client: TestClient) -> None:
    card = cards(client, SIGN, anastrozole())["low-estradiol"]
    held = [
        a["resource"]
        for s in card["suggestions"]
        for a in s["actions"]
        if a.get("resource", {}).get("status") == "on-hold"
    ]
    assert held and is_valid_fhir(held[0])


def test_a_draft_that_cannot_be_repaired_says_why_the_action_is_not_offered(client: TestClient) -> None:
    request = anastrozole(pid="sbx-2")
    draft_of(request)["authoredOn"] = "today"  # not a FHIR dateTime: nothing to repair
    before = not_offered(client, "invalid-fhir")
    card = cards(client, SIGN, request)["low-estradiol"]
    assert updates(card) == []
    assert "could not be offered" in card["detail"] and "`authoredOn` is not valid FHIR R4" in card["detail"]
    assert not_offered(client, "invalid-fhir") == before + 2  # lower the dose, and hold


def test_a_dose_that_cannot_be_lowered_says_so_and_is_counted(client: TestClient) -> None:
    request = anastrozole(pid="sbx-3")
    draft_of(request)["dosageInstruction"][0]["asNeededBoolean"] = True
    before = not_offered(client, "dose-unreadable")
    card = cards(client, SIGN, request)["low-estradiol"]
    assert "Lower the weekly anastrozole dose" not in [s["label"] for s in card.get("suggestions", [])]
    assert "dosage timing cannot be rewritten" in card["detail"]
    assert not_offered(client, "dose-unreadable") == before + 1
