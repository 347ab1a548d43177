"""One evaluation before the first real call, so that call does not pay for first use.

The first hook call of a fresh process took 50–90 ms instead of 1–2 ms: fhir.resources builds
its R4 models on first use (about 90 ms for MedicationRequest), and more is set up lazily
along the pipeline. The lifespan runs :func:`warm_up` once before the service takes traffic.
The request is synthetic (no real patient) and goes through a registry with no store and no
FHIR server, so nothing is audited, fetched, logged or counted.

Then the start-up heap (modules, the FHIR and wire models, the rule set: hundreds of
thousands of objects that live as long as the process) is frozen out of the cyclic garbage
collector's sight (``gc.freeze``). Each full collection walked all of it: with 200 results a
call made enough young objects to set one off every few calls, about a third of the large
request's instructions. Frozen objects are still freed by reference counting; only cycles
among them are never collected, and those are start-up objects that live as long as the
process anyway. It happens once per process, at the first warm-up.
"""

from __future__ import annotations

import gc
import logging
from datetime import timedelta
from typing import Any

from service.errors import ServiceError
from service.pipeline.registry import Registry

log = logging.getLogger("osteoguard.warmup")
_RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_PATIENT = "osteoguard-warm-up"


def _request(registry: Registry) -> dict[str, Any]:
    # A man on testosterone with a low estradiol result and an anastrozole draft order: the
    # card path with both update suggestions, so the draft is validated as FHIR R4.
    recent = (registry.today() - timedelta(days=30)).isoformat()
    subject = {"reference": f"Patient/{_PATIENT}"}

    def order(rid: str, code: str, status: str) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": rid,
            "status": status,
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": {"coding": [{"system": _RXNORM, "code": code}]},
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "wk"}}}],
        }

    def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    estradiol = {
        "resourceType": "Observation",
        "id": "e2",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
        "subject": subject,
        "effectiveDateTime": recent,
        "valueQuantity": {"value": 6.0, "unit": "pg/mL", "code": "pg/mL"},
    }
    return {
        "hook": "order-sign",
        "hookInstance": "osteoguard-warm-up",
        "context": {"patientId": _PATIENT, "draftOrders": bundle(order("draft", "199224", "draft"))},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": _PATIENT, "gender": "male"},
            "medications": bundle(order("trt", "835840", "active")),
            "estradiol": bundle(estradiol),
            "boneDensity": bundle(),
            "dexaProcedures": bundle(),
            "vitaminD": bundle(),
            "boneAgents": bundle(),
            "boneAgentStatements": bundle(),
            "safetyLabs": bundle(),
            "testosterone": bundle(),
        },
    }


async def warm_up(registry: Registry) -> int:
    """Evaluate the synthetic request once; returns how many cards it gave (0 on any error).

    ``registry`` must have no store and no fetcher. A rule set whose codes differ may fire
    nothing, which only makes the warm-up shorter. Nothing it meets stops the service from
    starting: a rule set that fails here (say, a card text naming evidence this patient lacks)
    fails the same way on real calls, which answer with an error; a warning names the type.
    """
    if registry.store is not None or registry.fetcher is not None:
        raise ValueError("warm up with a registry that has no store and no FHIR fetcher")
    try:
        response = await registry.call(registry.service_for_hook("order-sign").id, _request(registry))
    except ServiceError:
        return 0
    except Exception as exc:  # the type only: messages of foreign exceptions can echo data
        log.warning("warm-up evaluation failed: %s", type(exc).__name__)
        return 0
    finally:
        if not gc.get_freeze_count():  # once a process: later objects are not start-up ones
            gc.freeze()
    return len(response.cards)
