"""Small builders for FHIR resources and CDS Hooks requests used by unit tests.

Golden scenarios live beside the rules (rules/*/*/cases); these builders serve tests that
need many variations of one request (concurrency, order independence, robustness).
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from service.pipeline.registry import utc_today

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"


def day(days_ago: int) -> str:
    # The app's today (UTC): a local date can differ from it by a day.
    return (utc_today() - timedelta(days=days_ago)).isoformat()


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def patient(pid: str, gender: str | None = "male", birth_date: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if gender is not None:
        res["gender"] = gender
    if birth_date is not None:
        res["birthDate"] = birth_date
    return res


def med(
    rid: str, pid: str, code: str | None = "199224", text: str | None = None, status: str = "active"
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code}]
    if text:
        concept["text"] = text
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": concept,
        "dosageInstruction": [
            {
                "text": "1 mg twice weekly",
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "wk"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "mg"}}],
            }
        ],
    }


def obs(
    rid: str,
    pid: str,
    code: str,
    value: float | None,
    unit: str,
    days_ago: int,
    status: str = "final",
    comparator: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day(days_ago),
    }
    if value is not None:
        q: dict[str, Any] = {"value": value, "unit": unit, "code": unit}
        if comparator:
            q["comparator"] = comparator
        res["valueQuantity"] = q
    return res


def dxa_procedure(rid: str, pid: str, days_ago: int, status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": CPT, "code": "77080"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": day(days_ago),
    }


def order_sign(
    pid: str,
    *,
    gender: str | None = "male",
    testosterone: bool = True,
    e2: float | None = 25.0,
    e2_days: int = 30,
    tscore: float | None = -0.5,
    dxa_days: int = 100,
    vitd: float | None = 42.0,
    egfr: float | None = 80.0,
    calcium: float | None = 9.4,
    total_t: float | None = 550.0,
    birth_date: str | None = "1960-05-01",
    extra_drafts: list[dict[str, Any]] | None = None,
    hook: str = "order-sign",
) -> dict[str, Any]:
    """A complete order-sign (or order-select) request for an anastrozole draft order.

    By default a 66-year-old man on testosterone with normal safety labs and a recent total
    testosterone, so only what a test varies decides which cards fire.
    """
    draft = med("draft-ana", pid, status="draft")
    meds = [med("trt", pid, "835840", "testosterone cypionate")] if testosterone else []
    context: dict[str, Any] = {
        "userId": "Practitioner/dr",
        "patientId": pid,
        "draftOrders": bundle(*(extra_drafts or []), draft),
    }
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/draft-ana"]
    return {
        "hook": hook,
        "hookInstance": f"hi-{pid}",
        "context": context,
        "prefetch": {
            "patient": patient(pid, gender, birth_date),
            "medications": bundle(*meds),
            "estradiol": bundle(
                *([obs("e2", pid, "2243-4", e2, "pg/mL", e2_days)] if e2 is not None else [])
            ),
            "boneDensity": bundle(
                *([obs("t", pid, "38267-1", tscore, "{T-score}", dxa_days)] if tscore is not None else [])
            ),
            "dexaProcedures": bundle(),
            "vitaminD": bundle(*([obs("vd", pid, "62292-8", vitd, "ng/mL", 60)] if vitd is not None else [])),
            "boneAgents": bundle(),
            "boneAgentStatements": bundle(),
            "safetyLabs": bundle(
                *([obs("egfr", pid, "98979-8", egfr, "mL/min/{1.73_m2}", 40)] if egfr is not None else []),
                *([obs("ca", pid, "17861-6", calcium, "mg/dL", 40)] if calcium is not None else []),
            ),
            "testosterone": bundle(
                *([obs("tt", pid, "2986-8", total_t, "ng/dL", 50)] if total_t is not None else [])
            ),
        },
    }


def patient_view(pid: str, **kwargs: Any) -> dict[str, Any]:
    req = order_sign(pid, **kwargs)
    req = copy.deepcopy(req)
    req["hook"] = "patient-view"
    req["context"] = {"userId": "Practitioner/dr", "patientId": pid}
    req["prefetch"]["medications"]["entry"].append({"resource": med("ana", pid)})
    return req


SERVICE_FOR_HOOK = {
    "order-select": "anastrozole-bone-order-select",
    "order-sign": "anastrozole-bone-order-sign",
    "patient-view": "anastrozole-bone-patient-view",
    "medication-refill": "anastrozole-bone-medication-refill",
}


def medication_refill(
    pid: str, *, refills: list[dict[str, Any]] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """A complete medication-refill request (CDS Hooks library hook 0.1.0): the anastrozole
    order being refilled (active, id ``rx-ana``) in ``context.medications``; facts as for
    :func:`order_sign`."""
    request = order_sign(pid, **kwargs)
    request["hook"] = "medication-refill"
    request["context"] = {
        "userId": "Practitioner/dr",
        "patientId": pid,
        "medications": bundle(*(refills if refills is not None else [med("rx-ana", pid)])),
    }
    return request
