"""Reading lab results: the latest interpretable one decides (SPEC §3).

A result is read as a number in the rule set's target unit (UCUM code or unit text, matched
case-insensitively when the exact lookup fails). Results at the same instant are ranked by
what they are, never by resource id: estradiol by its assay (mass spectrometry, then no stated
method, then immunoassay), other labs by the rule set's ``preferred`` codes; a remaining tie
goes to the lower value, the cautious reading for every lab here. A result that cannot be
read (text, no value, an unknown unit, an implausible value) is never a value, but a newer
one is remembered, so a card can name it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.clinical.fhir import FhirDate, Quantity, concept_matches, concept_texts, quantity
from service.clinical.record import PatientRecord, ref

# Outside these bounds a value is a data error, not a result (an estradiol of 0 is unreadable).
PLAUSIBLE = (0.0, 100_000.0)
MASS_SPECTROMETRY, NO_METHOD, IMMUNOASSAY = 2, 1, 0
ASSAY_NAMES = {
    MASS_SPECTROMETRY: "mass spectrometry",
    NO_METHOD: "method not stated",
    IMMUNOASSAY: "immunoassay",
}


@dataclass(frozen=True)
class Reading:
    """One interpretable result, normalised to the target unit."""

    when: FhirDate
    resource: dict[str, Any]
    value: float  # in the target unit
    quantity: Quantity  # as sent
    unit: str  # the target unit
    rank: int

    @property
    def source(self) -> str:
        return ref(self.resource)


@dataclass(frozen=True)
class LabResult:
    """The deciding reading of a lab (if any) and the newest unreadable result after it."""

    latest: Reading | None
    count: int
    newer_unread: tuple[FhirDate, dict[str, Any]] | None


def mentions(texts: Iterable[str], words: Iterable[str]) -> bool:
    """True when a text names one of ``words`` (case-insensitive, not inside another word)."""
    lowered = [t.lower() for t in texts]
    return any(
        re.search(rf"(?<![a-z0-9]){re.escape(w.lower())}(?![a-z0-9])", t) for w in words for t in lowered
    )


def assay_rank(record: PatientRecord, resource: dict[str, Any]) -> int:
    """How an estradiol result was measured, from its method (text/display) or its code."""
    terms = record.rs.terms
    method = resource.get("method")
    words = list(concept_texts(method))
    if mentions(words, terms.mass_spectrometry):
        return MASS_SPECTROMETRY
    if mentions(words, terms.immunoassay) or concept_matches(resource.get("code"), terms.immunoassay_codes):
        return IMMUNOASSAY
    return NO_METHOD


def _rank(record: PatientRecord, name: str, resource: dict[str, Any]) -> int:
    if name == "estradiol":
        return assay_rank(record, resource)
    preferred = record.rs.terms.preferred.get(name)
    return int(
        bool(preferred) and concept_matches(resource.get("code"), preferred or frozenset()) is not None
    )


def read(record: PatientRecord, name: str) -> LabResult:
    """The latest interpretable result of the code list ``name`` (its unit table of the same name).

    Read once per record: the lab facts and the safety gate ask for the same lists."""
    cached: LabResult | None = record.lab_results.get(name)
    if cached is None:
        cached = record.lab_results[name] = _read(record, name)
    return cached


def _read(record: PatientRecord, name: str) -> LabResult:
    target, divisors = record.rs.units[name]
    lowered: dict[str, float] | None = None  # made only when an exact unit lookup fails
    usable: list[tuple[FhirDate, dict[str, Any], float, Quantity]] = []
    unread: list[tuple[FhirDate, dict[str, Any]]] = []
    low, high = PLAUSIBLE
    for when, res in record.observations(name):
        q = quantity(res)
        divisor = None
        if q is not None:
            divisor = divisors.get(q.unit)
            if divisor is None:  # the case-insensitive lookup only when the exact one fails
                if lowered is None:
                    lowered = {k.lower(): v for k, v in divisors.items()}
                divisor = lowered.get(q.unit.lower())
        if q is None or divisor is None:
            unread.append((when, res))  # skipped as a value, never an error
            continue
        value = round(q.value / divisor, 6)
        if not low < value <= high:
            unread.append((when, res))
            continue
        usable.append((when, res, value, q))
    if not usable:
        return LabResult(None, 0, unread[-1] if unread else None)
    # Latest instant first, then the better-ranked result, then the lower value. Only between
    # results equal in all of these (the same decision either way) does the reference pick
    # which one the card cites, so the answer never depends on bundle order. Only the results
    # at the latest instant are ranked: a long history is read for its count, not ranked.
    instant = max((u[0].day, u[0].stamp) for u in usable)
    tied = [
        Reading(when, res, value, q, target, _rank(record, name, res))
        for when, res, value, q in usable
        if (when.day, when.stamp) == instant
    ]
    latest = max(tied, key=lambda r: (r.rank, -r.value, r.source))
    newer = [u for u in unread if (u[0].day, u[0].stamp) > instant]
    return LabResult(latest, len(usable), newer[-1] if newer else None)


def shown(reading: Reading, number: str, sent_number: str) -> str:
    """The value as a clinician reads it: ``8.2 pg/mL``, or ``30 pmol/L (8.172 pg/mL)``."""
    comparator = "" if reading.quantity.comparator == "=" else reading.quantity.comparator
    text = f"{comparator}{number} {reading.unit}"
    # A unit that differs only in how it is written (UCUM "mL/min/{1.73_m2}") is not repeated.
    if reading.quantity.unit != reading.unit and number != sent_number:
        text = f"{comparator}{sent_number} {reading.quantity.unit} ({text})"
    return text
