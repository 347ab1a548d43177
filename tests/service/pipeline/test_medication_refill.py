"""The medication-refill service (SPEC §2): context.medications is a Bundle of the orders being
refilled; the call is about anastrozole when one of them is; update actions act on it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.builders import med, medication_refill

REFILL = "/cds-services/anastrozole-bone-medication-refill"


def rules(client: TestClient, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    response = client.post(REFILL, json=request)
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}


def test_discovery_declares_the_same_prefetch_for_refill(client: TestClient) -> None:
    services = {s["id"]: s for s in client.get("/cds-services").json()["services"]}
    refill = services["anastrozole-bone-medication-refill"]
    assert refill["hook"] == "medication-refill"
    assert refill["prefetch"] == services["anastrozole-bone-order-sign"]["prefetch"]


def test_a_refill_of_anastrozole_gets_the_cards_order_sign_would(client: TestClient) -> None:
    assert "low-estradiol" in rules(client, medication_refill("rf-1", e2=6.0))


def test_the_dose_update_acts_on_the_refilled_order(client: TestClient) -> None:
    card = rules(client, medication_refill("rf-2", e2=6.0))["low-estradiol"]
    ids = {a["resource"]["id"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "update"}
    assert ids == {"rx-ana"}


def test_a_refill_of_another_drug_gets_no_cards(client: TestClient) -> None:
    other = med("rx-trt", "rf-3", "835840", "testosterone cypionate")
    assert rules(client, medication_refill("rf-3", refills=[other])) == {}


def test_anastrozole_among_several_refills_is_enough(client: TestClient) -> None:
    refills = [med("rx-trt", "rf-4", "835840", "testosterone cypionate"), med("rx-ana", "rf-4")]
    assert "low-estradiol" in rules(client, medication_refill("rf-4", refills=refills, e2=6.0))


def test_a_refill_of_another_patients_order_is_not_about_this_patient(client: TestClient) -> None:
    assert rules(client, medication_refill("rf-5", refills=[med("rx-ana", "someone-else")])) == {}


def test_a_refill_without_context_medications_is_a_400(client: TestClient) -> None:
    request = medication_refill("rf-6")
    del request["context"]["medications"]
    assert client.post(REFILL, json=request).status_code == 400


def test_a_refill_bundle_without_type_is_accepted(client: TestClient) -> None:
    request = medication_refill("rf-7", e2=6.0)
    request["context"]["medications"].pop("type", None)
    assert "low-estradiol" in rules(client, request)


def test_an_order_sign_request_sent_to_the_refill_service_is_a_400(client: TestClient) -> None:
    request = medication_refill("rf-8")
    request["hook"] = "order-sign"
    assert client.post(REFILL, json=request).status_code == 400
