"""What the patient is being treated with: testosterone therapy, and current bone therapy.

"On testosterone therapy" is an active testosterone MedicationRequest or MedicationStatement,
or one in the draft orders, by any route (SPEC §3); an anastrozole order is never testosterone,
and a text that names testosterone only to say it is suppressed or absent does not count.
Current bone therapy is an active or draft bone agent (an order or a statement), and a
long-acting one given recently whatever its status: zoledronic acid within
``zoledronic_acid_current_days``, denosumab within ``denosumab_current_days`` (except
``entered-in-error`` and ``cancelled``). Never suggest a drug of that class again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cds_hooks.fhir import belongs_to, text
from service.clinical.fhir import RXNORM, clinical_date, codings, concept_texts
from service.clinical.medications import is_medication, medication_concepts, medication_members
from service.clinical.record import PatientRecord, ref

MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement")
# When an order or a statement says the therapy started.
STARTED = ("authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted")
# Long-acting bone agents and the shared parameter of how long a dose still acts.
LONG_ACTING = {"zoledronic-acid": "zoledronic_acid_current_days", "denosumab": "denosumab_current_days"}
NEVER_GIVEN = ("entered-in-error", "cancelled")
# A text-only medication that names testosterone to say it is suppressed or absent.
_NOT_THERAPY = re.compile(
    r"suppress|anti[- ]?androgen|anti-?testosterone|blocker|antagonist|deprivation|castrat"
    r"|\bno testosterone|\bwithout testosterone|\bnot on testosterone",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Therapy:
    on: bool
    text: str  # what was found, for a card: "testosterone cypionate (MedicationRequest/trt)"
    first_days: int | None = None  # days since the earliest dated order or statement
    started: str = "not recorded"  # that date, for a card


def _current(record: PatientRecord, drafts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Active orders and statements of the record, and the live draft orders."""
    found = [r for kind in MEDICATION_TYPES for r in record.of_type(kind) if record.usable(r)]
    return [*found, *drafts]


def _pool(record: PatientRecord) -> list[dict[str, Any]]:
    return [*record.data.resources, *record.data.drafts]


def _is_testosterone(record: PatientRecord, resource: dict[str, Any], pool: list[dict[str, Any]]) -> bool:
    rs = record.rs
    if not is_medication(rs, resource, "testosterone", pool) or is_medication(
        rs, resource, "anastrozole", pool
    ):
        return False
    concepts = medication_concepts(resource, pool)
    known = rs.medications.by_code
    if any(system == RXNORM and code in known for c in concepts for system, code, _ in codings(c)):
        return True  # a code the rule set knows decides, never its text
    return not any(_NOT_THERAPY.search(t) for c in concepts for t in concept_texts(c))


def testosterone(record: PatientRecord, drafts: list[dict[str, Any]]) -> Therapy:
    pool = _pool(record)
    found = [m for m in _current(record, drafts) if _is_testosterone(record, m, pool)]
    if not found:
        return Therapy(False, "no testosterone therapy on record")
    dated: list[tuple[int, str]] = []
    for res in found:
        when = clinical_date(res, *STARTED)
        if when is not None:
            dated.append((record.days_ago(when), when.text))
        elif any(res is d for d in drafts):
            dated.append((0, record.today.isoformat()))  # a draft starts today
    text = ", ".join(ref(r) for r in found)
    if not dated:
        return Therapy(True, text)
    days, started = max(dated)
    return Therapy(True, text, days, started)


def _long_acting(record: PatientRecord, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Zoledronic acid or denosumab given recently enough to act, whatever the order's status."""
    out = []
    for kind in MEDICATION_TYPES:
        for res in record.of_type(kind):
            if text(res.get("status")) in NEVER_GIVEN or not belongs_to(res, record.data.patient_id):
                continue
            when = clinical_date(res, *STARTED)
            if when is None or when.day > record.today:
                continue
            members = medication_members(record.rs, res, pool)
            if any(
                member in members and record.days_ago(when) <= record.rs.param(param)
                for member, param in LONG_ACTING.items()
            ):
                out.append(res)
    return out


def bone_agent(record: PatientRecord, drafts: list[dict[str, Any]]) -> Therapy:
    pool = _pool(record)
    found = [m for m in _current(record, drafts) if is_medication(record.rs, m, "bone-agent", pool)]
    found += [m for m in _long_acting(record, pool) if not any(m is f for f in found)]
    if not found:
        return Therapy(False, "no current bone therapy on record")
    return Therapy(True, ", ".join(ref(r) for r in found))
