"""Reading the parts of FHIR R4 resources the rules use, leniently.

Real clients send imperfect FHIR (a ``category`` object where a list belongs, a Bundle
without ``type``, a draft order with no medication yet). Validating whole resources would
turn those into 400s for fields no rule reads, so these helpers read only the fields the
rules need and check *those* strictly: a field of the wrong type is treated as absent, and
the resource is then skipped by the fact builder if it can no longer be interpreted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, NamedTuple

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"

SYSTEM_ALIASES = {"rxnorm": RXNORM, "loinc": LOINC, "cpt": CPT, "snomed": SNOMED}

_FHIR_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True, slots=True)
class FhirDate:
    """A FHIR date/dateTime reduced to a calendar day.

    ``text`` keeps the precision the source gave (``2025``, ``2025-03``, ``2025-03-14``) for
    display. ``day`` is the *earliest* day the value can denote, so "within N days" only
    holds when even the earliest reading is within N days.
    """

    day: date
    text: str
    stamp: str = ""  # UTC ISO timestamp when the source had a time; orders same-day results
    local: date | None = None  # the calendar day as written (its own time zone), when it differs

    @property
    def visit(self) -> date:
        """The day as the clinic wrote it: one DXA visit is one day, whatever its UTC offset."""
        return self.local or self.day


def parse_date(value: Any) -> FhirDate | None:
    """Parse a FHIR ``date``/``dateTime``/``instant`` (partial dates allowed); None if invalid."""
    if not isinstance(value, str):
        return None
    return _parse_date_text(value)


@lru_cache(maxsize=16384)
def _parse_date_text(value: str) -> FhirDate | None:
    # Cached: the same dates come back call after call (a patient's history, the EHR's clock).
    match = _FHIR_DATE.match(value)
    if not match:
        return None
    year, month, day = match.group(1), match.group(2), match.group(3)
    try:
        if day is not None and len(value) > 10:
            # A dateTime with a time and offset: reduce to the UTC calendar day.
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            written = stamp.date()
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone(UTC)
            local = written if written != stamp.date() else None
            return FhirDate(stamp.date(), stamp.date().isoformat(), stamp.isoformat(), local)
        parsed = date(int(year), int(month or 1), int(day or 1))
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+14:00 leaves the calendar
        return None
    text = year + (f"-{month}" if month else "") + (f"-{day}" if day else "")
    return FhirDate(parsed, text)


def clinical_date(resource: dict[str, Any], *fields: str) -> FhirDate | None:
    """The first usable date among ``fields``; ``xPeriod`` fields use their start (else end)."""
    for name in fields:
        value = resource.get(name)
        if name.endswith("Period"):
            if isinstance(value, dict):
                found = parse_date(value.get("start")) or parse_date(value.get("end"))
                if found:
                    return found
            continue
        found = parse_date(value)
        if found:
            return found
    return None


def codings(concept: Any) -> list[tuple[str, str, str]]:
    """``(system, code, display)`` of a CodeableConcept's codings; malformed codings are skipped.

    A list, not a generator: it runs for every resource read, and most concepts hold one or
    two codings.
    """
    if not isinstance(concept, dict):
        return []
    raw = concept.get("coding")
    if isinstance(raw, dict):  # a lone Coding where a list belongs
        raw = [raw]
    elif not isinstance(raw, list):
        return []
    out = []
    for coding in raw:
        if not isinstance(coding, dict):
            continue
        code = coding.get("code")
        if not isinstance(code, str) or not code:
            continue
        system = coding.get("system")
        display = coding.get("display")
        out.append(
            (
                system if isinstance(system, str) else "",
                code,
                display if isinstance(display, str) else "",
            )
        )
    return out


def coded(concept: Any) -> list[tuple[str, str]]:
    """``(system, code)`` of a CodeableConcept's codings, as :func:`codings` reads them.

    The code lookup of every Observation needs only these, and a bundle can hold hundreds.
    """
    if not isinstance(concept, dict):
        return []
    raw = concept.get("coding")
    if isinstance(raw, dict):  # a lone Coding where a list belongs
        raw = [raw]
    elif not isinstance(raw, list):
        return []
    out = []
    for coding in raw:
        if isinstance(coding, dict):
            code = coding.get("code")
            if isinstance(code, str) and code:
                system = coding.get("system")
                out.append((system if isinstance(system, str) else "", code))
    return out


def concept_texts(concept: Any) -> Iterator[str]:
    """Yield the human text of a CodeableConcept: ``text`` and every coding ``display``."""
    if not isinstance(concept, dict):
        return
    text = concept.get("text")
    if isinstance(text, str) and text:
        yield text
    for _, _, display in codings(concept):
        if display:
            yield display


def concept_matches(concept: Any, codes: frozenset[tuple[str, str]]) -> tuple[str, str, str] | None:
    """The first coding of ``concept`` whose ``(system, code)`` is in ``codes``."""
    for system, code, display in codings(concept):
        if (system, code) in codes:
            return system, code, display
    return None


def concept_display(concept: Any) -> str:
    """A short human name for a CodeableConcept (its text, else the first display or code)."""
    for text in concept_texts(concept):
        return text
    for _, code, _ in codings(concept):
        return code
    return ""


class Quantity(NamedTuple):
    """A numeric result (a tuple: made for every Observation read, so it must be cheap)."""

    value: float
    comparator: str  # one of "=", "<", "<=", ">", ">="
    unit: str  # UCUM code when given, else the human unit text


_COMPARATORS = {"<", "<=", ">", ">="}


def quantity(resource: dict[str, Any]) -> Quantity | None:
    """``valueQuantity`` as a Quantity, or None when the value is not a finite number."""
    raw = resource.get("valueQuantity")
    if not isinstance(raw, dict):
        return None
    value = raw.get("value")
    # bool is an int subclass; a JSON true is not a lab value.
    kind = type(value)
    if kind is not float and (kind is bool or not isinstance(value, int | float)):
        return None
    assert isinstance(value, int | float)
    if not math.isfinite(value):
        return None
    comparator = raw.get("comparator")
    if comparator is None:
        comparator = "="
    elif not isinstance(comparator, str) or comparator not in _COMPARATORS:
        return None
    code = raw.get("code")
    unit = raw.get("unit")
    unit_text = (
        code.strip()
        if isinstance(code, str) and code.strip()
        else unit.strip()
        if isinstance(unit, str)
        else ""
    )
    return Quantity(float(value), comparator, unit_text)
