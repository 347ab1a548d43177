"""The exact request shapes the public CDS Hooks sandbox (github.com/cds-hooks/sandbox, commit
3b7e255) sends, produced by running its own ``createFhirResource`` (fixtures/sandbox-requests.json):
order-select before a drug is chosen, order-select and order-sign after, and the DSTU2 default.

:func:`anastrozole` keeps the sandbox's shape and changes only the drug (and the prefetch the
service needs), so the quirks reach the card builder: ``category`` as an object, a Bundle
without ``type``, date-only ``authoredOn``, a dose in ``{pill}`` with no unit.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.builders import order_sign

SHAPES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "sandbox-requests.json").read_text(encoding="utf-8")
)
ANASTROZOLE = {
    "text": "Anastrozole 1 MG Oral Tablet",
    "coding": [
        {
            "display": "Anastrozole 1 MG Oral Tablet",
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "199224",
        }
    ],
}


def shape(name: str) -> dict[str, Any]:
    return copy.deepcopy(SHAPES[name])


def draft_of(request: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = request["context"]["draftOrders"]["entry"][0]["resource"]
    return resource


def anastrozole(name: str = "orderSignAfter", pid: str = "smart-1288992", **facts: Any) -> dict[str, Any]:
    """The sandbox request ``name`` for anastrozole, with the full prefetch of a man on TRT
    (``facts`` as for :func:`tests.builders.order_sign`; default: a low estradiol)."""
    request = shape(name)
    request["context"]["patientId"] = pid
    draft = draft_of(request)
    draft["subject"] = {"reference": f"Patient/{pid}"}
    draft["medicationCodeableConcept"] = copy.deepcopy(ANASTROZOLE)
    facts.setdefault("e2", 6.0)
    request["prefetch"] = order_sign(pid, **facts)["prefetch"]
    return request
