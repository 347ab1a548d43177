"""HTTP behaviour: discovery, the answers, and every error a client can provoke (SPEC §7)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.engine import adapter as engine_module
from service.pipeline.prefetch import PREFETCH_KEYS
from tests.builders import bundle, day, med, order_sign, patient_view

SIGN = "/cds-services/anastrozole-bone-order-sign"
SELECT = "/cds-services/anastrozole-bone-order-select"
VIEW = "/cds-services/anastrozole-bone-patient-view"


def outcome_text(body: dict[str, Any]) -> str:
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["details"]["text"])


def fired(body: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in body["cards"]]


# ---- discovery ---------------------------------------------------------------------------
def test_discovery_lists_the_four_services(client: TestClient) -> None:
    body = client.get("/cds-services").json()
    assert {(s["id"], s["hook"]) for s in body["services"]} == {
        ("anastrozole-bone-order-select", "order-select"),
        ("anastrozole-bone-order-sign", "order-sign"),
        ("anastrozole-bone-patient-view", "patient-view"),
        ("anastrozole-bone-medication-refill", "medication-refill"),
    }
    for service in body["services"]:
        assert set(service["prefetch"]) == set(PREFETCH_KEYS)
        assert service["description"] and service["title"]


def test_prefetch_templates_use_encoded_token_searches(client: TestClient) -> None:
    service = client.get("/cds-services").json()["services"][0]
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    estradiol = service["prefetch"]["estradiol"]
    assert estradiol.startswith("Observation?patient={{context.patientId}}&code=")
    assert "http%3A%2F%2Floinc.org%7C2243-4" in estradiol
    assert "2243-4" in estradiol and "14715-7" in estradiol


# ---- answers -----------------------------------------------------------------------------
def test_no_anastrozole_is_exactly_an_empty_card_list(client: TestClient) -> None:
    req = order_sign("p1")
    req["context"]["draftOrders"] = bundle(med("d1", "p1", "835840", status="draft"))
    response = client.post(SIGN, json=req)
    assert response.status_code == 200
    assert response.content == b'{"cards":[]}'


def test_no_anastrozole_needs_no_prefetch(client: TestClient) -> None:
    req = order_sign("p1")
    req["context"]["draftOrders"] = bundle(med("d1", "p1", "835840", status="draft"))
    del req["prefetch"]
    assert client.post(SIGN, json=req).json() == {"cards": []}


def test_patient_view_without_active_anastrozole_is_empty(client: TestClient) -> None:
    req = patient_view("p1")
    req["prefetch"]["medications"] = bundle(med("x", "p1", "199224", status="stopped"))
    assert client.post(VIEW, json=req).json() == {"cards": []}


def test_patient_view_fires_without_draft_actions(client: TestClient) -> None:
    body = client.post(VIEW, json=patient_view("p1", e2=7.0)).json()
    assert "low-estradiol" in fired(body)
    card = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "low-estradiol")
    assert "suggestions" not in card and "selectionBehavior" not in card


# ---- 400: malformed requests --------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"{",  # truncated
        b'{"hook": "order-sign", "hookInstance": ',  # truncated mid-value
        b"not json at all",
        b"",
        b"\xff\xfe",
    ],
)
def test_invalid_json_is_400(client: TestClient, body: bytes) -> None:
    response = client.post(SIGN, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in outcome_text(response.json())


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda r: r.pop("hook"), "hook"),
        (lambda r: r.pop("hookInstance"), "hookInstance"),
        (lambda r: r.pop("context"), "context"),
        (lambda r: r.update(hook=7), "hook"),
        (lambda r: r.update(context=[1, 2]), "context"),
        (lambda r: r["context"].pop("patientId"), "context.patientId"),
        (lambda r: r["context"].update(patientId=12), "context.patientId"),
        (lambda r: r["context"].pop("draftOrders"), "context.draftOrders"),
        (lambda r: r["context"].update(draftOrders="nope"), "context.draftOrders"),
        (lambda r: r.update(prefetch=[1]), "prefetch"),
    ],
)
def test_missing_or_mistyped_required_fields_are_400_naming_the_field(
    client: TestClient, mutate: Any, named: str
) -> None:
    req = order_sign("p1")
    mutate(req)
    response = client.post(SIGN, json=req)
    assert response.status_code == 400
    assert named in outcome_text(response.json())


def test_fields_the_rules_do_not_read_never_fail_a_request(client: TestClient) -> None:
    req = order_sign("p1")
    req["fhirAuthorization"] = {"access_token": "t", "scope": ["patient/*.read"], "expires_in": "soon"}
    req["context"]["userId"] = {"odd": True}
    req["extension"] = {"com.example.x": [1, 2]}
    assert client.post(SIGN, json=req).status_code == 200


@pytest.mark.parametrize("patient_id", ["p 1", "../x", "a" * 65, "p/1"])
def test_invalid_patient_id_is_400(client: TestClient, patient_id: str) -> None:
    req = order_sign("p1")
    req["context"]["patientId"] = patient_id
    response = client.post(SIGN, json=req)
    assert response.status_code == 400
    assert "context.patientId" in outcome_text(response.json())


def test_json_array_body_is_400(client: TestClient) -> None:
    response = client.post(SIGN, json=[1, 2])
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "OG-400-JSON"


def test_order_select_without_selections_is_400(client: TestClient) -> None:
    req = order_sign("p1", hook="order-select")
    del req["context"]["selections"]
    response = client.post(SELECT, json=req)
    assert response.status_code == 400
    assert "context.selections" in outcome_text(response.json())


def test_wrong_hook_for_the_service_is_400(client: TestClient) -> None:
    response = client.post(VIEW, json=order_sign("p1"))
    assert response.status_code == 400
    assert "patient-view" in outcome_text(response.json())


def test_prefetch_for_another_patient_is_400(client: TestClient) -> None:
    req = order_sign("p1")
    req["prefetch"]["patient"]["id"] = "someone-else"
    response = client.post(SIGN, json=req)
    assert response.status_code == 400
    assert "different patient" in outcome_text(response.json())


# ---- 404, 405, 413 ------------------------------------------------------------------------
def test_unknown_service_is_404_operation_outcome(client: TestClient) -> None:
    response = client.post("/cds-services/nope", json=order_sign("p1"))
    assert response.status_code == 404
    assert "nope" in outcome_text(response.json())


def test_unknown_path_is_json_404(client: TestClient) -> None:
    response = client.get("/admin")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = client.delete("/cds-services")
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "OG-405"


def test_body_over_5_mb_is_413(client: TestClient) -> None:
    req = order_sign("p1")
    req["padding"] = "x" * (5 * 1024 * 1024)
    response = client.post(SIGN, content=json.dumps(req), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_streamed_body_over_5_mb_without_length_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(6):
            yield b" " * (1024 * 1024)

    response = client.post(SIGN, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


# ---- 412 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        None,  # null
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]},
    ],
)
def test_unusable_prefetch_key_without_fhir_server_is_412_naming_it(client: TestClient, value: Any) -> None:
    req = order_sign("p1")
    req["prefetch"]["estradiol"] = value
    response = client.post(SIGN, json=req)
    assert response.status_code == 412
    body = response.json()
    assert "estradiol" in outcome_text(body)
    assert body["issue"][0]["expression"] == ["prefetch.estradiol"]


def test_412_names_every_missing_key(client: TestClient) -> None:
    req = order_sign("p1")
    del req["prefetch"]["vitaminD"]
    del req["prefetch"]["boneDensity"]
    response = client.post(SIGN, json=req)
    assert response.status_code == 412
    text = outcome_text(response.json())
    assert "boneDensity" in text and "vitaminD" in text


def test_no_prefetch_at_all_is_412(client: TestClient) -> None:
    req = order_sign("p1")
    del req["prefetch"]
    assert client.post(SIGN, json=req).status_code == 412


# ---- lenient about what the rules do not read (real clients) -------------------------------
def test_sandbox_style_draft_with_category_object_and_bundle_without_type(client: TestClient) -> None:
    req = order_sign("p1", e2=7.0)
    draft = req["context"]["draftOrders"]["entry"][-1]["resource"]
    draft["category"] = {"coding": [{"code": "outpatient"}]}
    del req["context"]["draftOrders"]["type"]
    response = client.post(SIGN, json=req)
    assert response.status_code == 200
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "low-estradiol")
    # SPEC §4: the draft is repaired (category becomes a one-item list) and the update offered.
    updates = [a["resource"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "update"]
    assert updates and all(u["category"] == [{"coding": [{"code": "outpatient"}]}] for u in updates)


def test_order_select_before_a_drug_is_chosen(client: TestClient) -> None:
    req = order_sign("p1", hook="order-select")
    draft = req["context"]["draftOrders"]["entry"][-1]["resource"]
    del draft["medicationCodeableConcept"]
    del draft["intent"]
    assert client.post(SELECT, json=req).json() == {"cards": []}


@pytest.mark.parametrize(
    "junk",
    [
        {"resourceType": "Condition", "id": "c1", "code": {"text": "x"}},
        {"resourceType": "Observation", "id": "o1", "status": "final", "code": "2243-4"},
        {
            "resourceType": "Observation",
            "id": "o2",
            "status": "final",
            "code": {"coding": {"system": "http://loinc.org", "code": "2243-4"}},
            "effectiveDateTime": 20240101,
            "valueQuantity": {"value": "abc", "unit": "pg/mL"},
        },
        {
            "resourceType": "Observation",
            "id": "o3",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
            "effectiveDateTime": "not-a-date",
            "valueQuantity": {"value": 5, "unit": "pg/mL"},
        },
        {
            "resourceType": "Observation",
            "id": "o4",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
            "effectiveDateTime": "2026-02-30",
            "valueQuantity": [5],
        },
        {
            "resourceType": "Observation",
            "id": "o5",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
            "effectiveDateTime": "2026-01-01",
            "valueString": "see report",
        },
        {
            "resourceType": "Observation",
            "id": "o6",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
            "effectiveDateTime": "2026-01-01",
            "valueQuantity": {"value": True, "unit": "pg/mL"},
        },
        {"resourceType": 5},
        "a string entry",
        None,
    ],
)
def test_malformed_or_foreign_resources_in_a_bundle_never_fail_the_request(
    client: TestClient, junk: Any
) -> None:
    req = order_sign("p1", e2=25.0)
    req["prefetch"]["estradiol"]["entry"].append({"resource": junk})
    response = client.post(SIGN, json=req)
    assert response.status_code == 200
    assert "low-estradiol" not in fired(response.json())


def test_overflowing_number_in_a_value_is_not_an_error(client: TestClient) -> None:
    req = order_sign("p1", e2=25.0)
    req["prefetch"]["estradiol"]["entry"][0]["resource"]["valueQuantity"]["value"] = 123456789
    raw = json.dumps(req).replace("123456789", "1e400").encode()
    response = client.post(SIGN, content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400)
    assert "cards" in response.json() or response.json()["resourceType"] == "OperationOutcome"


def test_ten_thousand_entry_bundle(client: TestClient) -> None:
    req = order_sign("p1", e2=None)
    entries = req["prefetch"]["estradiol"]["entry"]
    template = {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
        "valueQuantity": {"value": 30, "unit": "pg/mL"},
    }
    for i in range(10_000):
        entry = copy.deepcopy(template)
        entry["id"] = f"e{i}"
        entry["effectiveDateTime"] = f"20{10 + i % 15}-0{1 + i % 9}-1{i % 9}"
        entries.append({"resource": entry})
    response = client.post(SIGN, json=req)
    assert response.status_code == 200


def test_deeply_nested_json_is_a_clean_error(client: TestClient) -> None:
    body = b'{"hook": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = client.post(SIGN, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_resources_for_another_patient_in_a_bundle_are_ignored(client: TestClient) -> None:
    req = order_sign("p1", e2=25.0)
    low = copy.deepcopy(req["prefetch"]["estradiol"]["entry"][0]["resource"])
    low.update(id="other", subject={"reference": "Patient/p2"})
    low["valueQuantity"]["value"] = 3
    low["effectiveDateTime"] = "2999-01-01"
    req["prefetch"]["estradiol"]["entry"].append({"resource": low})
    assert "low-estradiol" not in fired(client.post(SIGN, json=req).json())


# ---- 500s are clean ------------------------------------------------------------------------
def test_engine_failure_is_a_clean_operation_outcome(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(handle: int, payload: str) -> Any:
        raise Exception("error code: 101 secret-internal-detail")

    monkeypatch.setattr(engine_module.dre, "assert_facts", broken)
    response = client.post(SIGN, json=order_sign("p1"))
    assert response.status_code == 500
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.text


# ---- health --------------------------------------------------------------------------------
def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["version"]


# ---- findings from review: data that must not decide anything ------------------------------
def test_text_does_not_override_a_coded_drug(client: TestClient) -> None:
    req = order_sign("code-1", e2=6.0)
    draft = req["context"]["draftOrders"]["entry"][-1]["resource"]
    draft["medicationCodeableConcept"] = {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "72965"}],
        "text": "letrozole 2.5 mg (replaces anastrozole)",
    }
    assert client.post(SIGN, json=req).json() == {"cards": []}


def test_anastrozole_text_mentioning_testosterone_is_not_testosterone_therapy(client: TestClient) -> None:
    req = order_sign("code-2", e2=6.0, testosterone=False)
    draft = req["context"]["draftOrders"]["entry"][-1]["resource"]
    draft["medicationCodeableConcept"]["text"] = "anastrozole 1 mg, with testosterone therapy"
    cards = {c["source"]["topic"]["code"]: c for c in client.post(SIGN, json=req).json()["cards"]}
    # Not on testosterone therapy: the low-estradiol warning, never a dose action (SPEC §3).
    assert "suggestions" not in cards["low-estradiol"]
    assert "testosterone-monitoring" not in cards


def test_another_patients_draft_is_not_acted_on(client: TestClient) -> None:
    req = order_sign("pt-1", e2=6.0)
    req["context"]["draftOrders"]["entry"][-1]["resource"]["subject"] = {"reference": "Patient/other"}
    assert client.post(SIGN, json=req).json() == {"cards": []}


def test_another_patients_anastrozole_does_not_open_patient_view(client: TestClient) -> None:
    req = patient_view("pt-2", e2=6.0)
    req["prefetch"]["medications"]["entry"][-1]["resource"]["subject"] = {"reference": "Patient/other"}
    assert client.post(VIEW, json=req).json() == {"cards": []}


def test_a_prefetch_bundle_with_a_next_page_is_not_complete(client: TestClient) -> None:
    req = order_sign("page-1")
    req["prefetch"]["estradiol"]["link"] = [{"relation": "next", "url": "https://ehr.example/fhir?page=2"}]
    response = client.post(SIGN, json=req)
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["prefetch.estradiol"]


def test_a_newer_unreadable_estradiol_does_not_silence_an_older_readable_one(client: TestClient) -> None:
    req = order_sign("newer-1", e2=6.0, e2_days=100)
    newer = copy.deepcopy(req["prefetch"]["estradiol"]["entry"][0]["resource"])
    newer["id"] = "e2-newer"
    newer["effectiveDateTime"] = day(5)
    newer["valueQuantity"] = {"value": 2.5, "unit": "mg/dL"}  # a unit that cannot be converted
    req["prefetch"]["estradiol"]["entry"].append({"resource": newer})
    cards = {c["source"]["topic"]["code"]: c for c in client.post(SIGN, json=req).json()["cards"]}
    # SPEC §3: the latest interpretable result decides, and the card names the newer one.
    assert "Observation/e2-newer" in cards["low-estradiol"]["detail"]


def test_deeply_nested_draft_is_400_not_a_crash(client: TestClient) -> None:
    req = order_sign("deep-1")
    node: dict[str, Any] = {}
    req["context"]["draftOrders"]["entry"][-1]["resource"]["extension"] = [{"url": "x", "valueX": node}]
    for _ in range(800):
        node["n"] = {}
        node = node["n"]
    response = client.post(SIGN, json=req)
    assert response.status_code == 400
    assert "nests deeper" in outcome_text(response.json())


def test_no_generated_api_pages(client: TestClient) -> None:
    # FastAPI's defaults are off (README, "Documentation"); the rule pages stay public
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404, path
    assert client.get("/docs/rules").status_code == 200
