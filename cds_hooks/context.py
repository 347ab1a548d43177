"""Reading a hook's context: the patient, the draft orders, and which drafts a call is about.

* ``order-select``: a MedicationRequest in ``draftOrders`` that ``selections`` points to.
* ``order-sign``: any MedicationRequest in ``draftOrders``.
* ``patient-view``: an active MedicationRequest in the ``medications`` prefetch.
* ``medication-refill`` (CDS Hooks library, 0.1.0): any MedicationRequest in
  ``context.medications``, the Bundle of the orders being refilled. They play the part the
  drafts play in the order hooks: an ``update`` acts on the refilled order.

Strict about what the rules read (``patientId``, ``selections``, ``draftOrders``), lenient
about the rest: a draft order with no medication yet is simply not anastrozole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cds_hooks.errors import RequestError
from cds_hooks.fhir import belongs_to, bundle_resources, text
from cds_hooks.vocabulary import MEDICATION_REFILL, ORDER_HOOKS, ORDER_SELECT

# A draft order is live unless the client says otherwise: drafts may omit status (the public
# sandbox does), while on-hold/cancelled/entered-in-error drafts are not going to be given.
LIVE_DRAFT_STATUSES = (None, "draft", "active")
# FHIR id: [A-Za-z0-9\-\.]{1,64}
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_live_draft(order: dict[str, Any]) -> bool:
    """True for a draft order that would be given if signed."""
    return text(order.get("status")) in LIVE_DRAFT_STATUSES


@dataclass(frozen=True)
class HookContext:
    hook: str
    patient_id: str
    drafts: list[dict[str, Any]] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    encounter_id: str | None = None  # context.encounterId, when the client sends one


def _require_str(context: dict[str, Any], key: str) -> str:
    value = context.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"context.{key} is required and must be a non-empty string")
    return value


def parse_context(hook: str, context: dict[str, Any]) -> HookContext:
    """Validate the context fields the service reads for ``hook``."""
    patient_id = _require_str(context, "patientId")
    # fullmatch: "$" alone would let "x\n" through; "." and ".." match the R4 pattern but are
    # path segments, never ids, once they sit in a FHIR URL.
    if not _FHIR_ID.fullmatch(patient_id) or patient_id in {".", ".."}:
        raise RequestError("context.patientId is not a valid FHIR id ([A-Za-z0-9-.], at most 64)")
    encounter = context.get("encounterId")
    encounter_id = encounter if isinstance(encounter, str) and encounter.strip() else None
    if hook == MEDICATION_REFILL:
        refills = context.get("medications")
        if not isinstance(refills, dict) or refills.get("resourceType") != "Bundle":
            raise RequestError("context.medications is required and must be a FHIR Bundle")
        return HookContext(hook, patient_id, bundle_resources(refills), encounter_id=encounter_id)
    if hook not in ORDER_HOOKS:
        return HookContext(hook, patient_id, encounter_id=encounter_id)
    draft_orders = context.get("draftOrders")
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        raise RequestError("context.draftOrders is required and must be a FHIR Bundle")
    drafts = bundle_resources(draft_orders)
    selections: list[str] = []
    if hook == ORDER_SELECT:
        raw = context.get("selections")
        if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            raise RequestError("context.selections is required and must be an array of strings")
        selections = raw
    return HookContext(hook, patient_id, drafts, selections, encounter_id)


def _matches_selection(resource: dict[str, Any], selections: list[str]) -> bool:
    rid = resource.get("id")
    if not isinstance(rid, str):
        return False
    wanted = f"{resource.get('resourceType')}/{rid}"
    return any(s == wanted or s.endswith("/" + wanted) for s in selections)


def candidate_orders(ctx: HookContext) -> list[dict[str, Any]]:
    """The live draft MedicationRequests for this patient that the call is about.

    order-select: only the selected ones; order-sign: all of them; medication-refill: every
    one being refilled.
    """
    meds = [
        r
        for r in ctx.drafts
        if r.get("resourceType") == "MedicationRequest" and is_live_draft(r) and belongs_to(r, ctx.patient_id)
    ]
    if ctx.hook == ORDER_SELECT:
        return [r for r in meds if _matches_selection(r, ctx.selections)]
    return meds
