"""What the patient is being treated with: testosterone therapy, and current bone therapy.

"On testosterone therapy" is an active testosterone MedicationRequest or MedicationStatement,
or one in the draft orders, by any route (SPEC §3). Current bone therapy is an active or draft
bone agent (an order or a statement) — never suggest a drug of that class again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.clinical.fhir import clinical_date
from service.clinical.medications import is_medication
from service.clinical.record import PatientRecord, ref

MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement")
# When an order or a statement says the therapy started.
STARTED = ("authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted")


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


def testosterone(record: PatientRecord, drafts: list[dict[str, Any]]) -> Therapy:
    pool = _pool(record)
    found = [m for m in _current(record, drafts) if is_medication(record.rs, m, "testosterone", pool)]
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


def bone_agent(record: PatientRecord, drafts: list[dict[str, Any]]) -> Therapy:
    pool = _pool(record)
    found = [m for m in _current(record, drafts) if is_medication(record.rs, m, "antiresorptive", pool)]
    if not found:
        return Therapy(False, "no current bone therapy on record")
    return Therapy(True, ", ".join(ref(r) for r in found))
