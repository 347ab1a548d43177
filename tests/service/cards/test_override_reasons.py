"""Override reasons on warning cards: our snooze kept, the HL7 non-adherence reason codes
(CDS Hooks 3.0 ballot vocabulary) offered beside ours where they mean the same."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.ruleset.model import RuleSet
from tests.builders import order_sign

HL7 = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
OURS = "urn:osteoguard:override-reason"


def reasons(client: TestClient) -> list[dict[str, str]]:
    body = client.post("/cds-services/anastrozole-bone-order-sign", json=order_sign("or-1", e2=6.0)).json()
    (card,) = [c for c in body["cards"] if c["indicator"] == "warning"]
    return list(card["overrideReasons"])


def test_the_snooze_is_still_offered_first(client: TestClient) -> None:
    assert reasons(client)[0] == {
        "code": "snooze-90d",
        "system": OURS,
        "display": "Not now: snooze this reminder for this patient for 90 days",
    }


def test_the_hl7_codes_are_offered_with_their_published_displays(client: TestClient) -> None:
    offered = {r["code"]: r["display"] for r in reasons(client) if r["system"] == HL7}
    assert offered == {
        "action-completed": "Recommended action was already completed",
        "cds-not-applicable": "PC CDS does not apply to patient",
        "patient-refuses": "Patient refuses/declines (no context given)*",
    }


def test_each_hl7_code_follows_the_reason_of_ours_it_means(client: TestClient, ruleset: RuleSet) -> None:
    offered = [r["code"] for r in reasons(client)]
    for reason in ruleset.override_reasons:
        if reason.same_as is not None:
            assert offered.index(reason.code) == offered.index(reason.same_as) + 1
