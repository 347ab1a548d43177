"""The safety gate before any bone drug (SPEC §3): renal function, calcium, vitamin D.

Each lab is *known* only when a result inside its window proves which side of its threshold
it is on; "no result on record" is never "normal", and a censored result that straddles the
threshold (eGFR ">30" against 35) is unknown too. Calcium is albumin-corrected when an albumin
of the same day exists (corrected = Ca + 0.8 × (4.0 − albumin g/dL)) and is low below the
result's own reference range, else below the rule set's default. Ionised calcium, when it is
the latest, decides instead. What is unknown is named, so the card can offer exactly those
lab orders.
"""

from __future__ import annotations

from typing import Any

from service.clinical.display import fmt_number
from service.clinical.fhir import clinical_date, quantity
from service.clinical.labs import Reading, read, shown
from service.clinical.record import OBSERVATION_DATES, PatientRecord, ref
from service.ruleset.schema import Fact


def proves_below(reading: Reading, threshold: float) -> bool | None:
    """Whether the reading proves the value is below ``threshold`` (None: it cannot tell)."""
    value, comparator = reading.value, reading.quantity.comparator
    if comparator == "=":
        return value < threshold
    if comparator in ("<", "<="):
        return True if (value <= threshold if comparator == "<" else value < threshold) else None
    return False if value >= threshold else None  # ">" / ">=": at least the value


def _unreadable(
    record: PatientRecord, names: tuple[str, ...], after: Reading | None, window_param: str
) -> str | None:
    """A result in the window, newer than ``after``, that cannot be read: it makes the lab
    unknown, because it may be the one that rules a drug out. Its words for the card."""
    window = record.rs.param(window_param)
    newest = None
    for name in names:
        found = read(record, name).newer_unread
        if found is None or record.days_ago(found[0]) > window:
            continue
        if after is not None and (found[0].day, found[0].stamp) <= (after.when.day, after.when.stamp):
            continue
        if newest is None or (found[0].day, found[0].stamp) > (newest[0].day, newest[0].stamp):
            newest = found
    if newest is None:
        return None
    return f"a newer result on {newest[0].text} ({ref(newest[1])}) could not be read"


def _recent(record: PatientRecord, reading: Reading | None, window_param: str) -> Reading | None:
    if reading is None:
        return None
    return reading if record.days_ago(reading.when) <= record.rs.param(window_param) else None


def _text(reading: Reading) -> str:
    value = shown(reading, fmt_number(reading.value), fmt_number(reading.quantity.value))
    return f"{value} on {reading.when.text}"


RENAL = ("egfr", "creatinine_clearance")
CALCIUM = ("calcium", "calcium_ionized")


def _renal(record: PatientRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    window = int(record.rs.param("safety_lab_window_days"))
    candidates: list[tuple[str, Reading]] = []
    for label, name in (("eGFR", "egfr"), ("creatinine clearance", "creatinine_clearance")):
        reading = _recent(record, read(record, name).latest, "safety_lab_window_days")
        if reading is not None:
            candidates.append((label, reading))
    unknown = {"renal_known": 0, "renal_low": 0, "renal_severe": 0}
    if not candidates:
        newer = _unreadable(record, RENAL, None, "safety_lab_window_days")
        text = f"no eGFR or creatinine clearance within {window} days" + (f" ({newer})" if newer else "")
        return unknown, {"renal": text, "renal_short": "renal function unknown"}
    label, reading = max(candidates, key=lambda c: (c[1].when.day, c[1].when.stamp, -c[1].value))
    newer = _unreadable(record, RENAL, reading, "safety_lab_window_days")
    if newer is not None:
        text = f"{label} {_text(reading)} ({reading.source}), but {newer}: renal function is unknown"
        return unknown, {"renal": text, "renal_short": "renal function unknown"}
    minimum = record.rs.param("egfr_bisphosphonate_min")
    low = proves_below(reading, minimum)
    severe = proves_below(reading, record.rs.param("egfr_denosumab_caution"))
    text = f"{label} {_text(reading)} ({reading.source})"
    if low is None:
        text += f": does not show whether it is at least {fmt_number(minimum)}"
    fields = {
        "renal_known": int(low is not None),
        "renal_low": int(low is True),
        "renal_severe": int(severe is not False),
    }
    comparator = "" if reading.quantity.comparator == "=" else reading.quantity.comparator
    short = f"{label} {comparator}{fmt_number(reading.value)} {reading.unit}"
    return fields, {"renal": text, "egfr": fmt_number(reading.value), "renal_short": short}


def _reference_low(reading: Reading, divisors: dict[str, float]) -> float | None:
    ranges = reading.resource.get("referenceRange")
    first = ranges[0] if isinstance(ranges, list) and ranges and isinstance(ranges[0], dict) else None
    low = first.get("low") if first else None
    if not isinstance(low, dict):
        return None
    q = quantity({"valueQuantity": low})
    if q is None:
        return None
    unit = q.unit or reading.quantity.unit
    divisor = divisors.get(unit) or {k.lower(): v for k, v in divisors.items()}.get(unit.lower())
    return q.value / divisor if divisor else None


def _calcium(record: PatientRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    window = int(record.rs.param("safety_lab_window_days"))
    total = _recent(record, read(record, "calcium").latest, "safety_lab_window_days")
    ionised = _recent(record, read(record, "calcium_ionized").latest, "safety_lab_window_days")
    latest = max(
        (r for r in (total, ionised) if r is not None),
        key=lambda r: (r.when.day, r.when.stamp),
        default=None,
    )
    newer = _unreadable(record, CALCIUM, latest, "safety_lab_window_days")
    if latest is None or newer is not None:
        text = f"no serum calcium within {window} days" if latest is None else "serum calcium unknown"
        return {"calcium_known": 0, "calcium_low": 0}, {"calcium": text + (f" ({newer})" if newer else "")}
    use_ionised = ionised is not None and (
        total is None or (ionised.when.day, ionised.when.stamp) >= (total.when.day, total.when.stamp)
    )
    if use_ionised:
        assert ionised is not None
        low_at = _reference_low(ionised, record.rs.units["calcium_ionized"][1]) or record.rs.param(
            "calcium_ionized_low_mmol_l"
        )
        below = proves_below(ionised, low_at)
        text = f"ionised calcium {_text(ionised)} ({ionised.source}; low: below {fmt_number(low_at)} mmol/L)"
    else:
        assert total is not None
        low_at = _reference_low(total, record.rs.units["calcium"][1]) or record.rs.param("calcium_low_mg_dl")
        albumin = next((r for _, r in reversed(record.observations("albumin")) if _same_day(r, total)), None)
        text = f"serum calcium {_text(total)} ({total.source})"
        below = proves_below(total, low_at)
        alb = read_albumin(record, albumin)
        if alb is not None and total.quantity.comparator == "=":
            corrected = total.value + 0.8 * (4.0 - alb)
            below = corrected < low_at
            text += (
                f", albumin-corrected {fmt_number(corrected)} mg/dL"
                f" (albumin {fmt_number(alb)} g/dL the same day)"
            )
        text += f" (low: below {fmt_number(low_at)} mg/dL)"
    return {"calcium_known": int(below is not None), "calcium_low": int(below is True)}, {"calcium": text}


def _same_day(resource: dict[str, Any], reading: Reading) -> bool:
    when = clinical_date(resource, *OBSERVATION_DATES)
    return when is not None and when.day == reading.when.day


def read_albumin(record: PatientRecord, resource: dict[str, Any] | None) -> float | None:
    """An albumin result in g/dL, or None when it cannot be read."""
    if resource is None:
        return None
    q = quantity(resource)
    divisors = record.rs.units["albumin"][1]
    if q is None or q.comparator != "=":
        return None
    divisor = divisors.get(q.unit) or {k.lower(): v for k, v in divisors.items()}.get(q.unit.lower())
    value = q.value / divisor if divisor else None
    # Outside 1-6 g/dL an albumin is a data error, and correcting with it could hide a low calcium.
    return value if value is not None and 1.0 <= value <= 6.0 else None


def _vitamin_d(record: PatientRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    window = int(record.rs.param("vitamin_d_gate_window_days"))
    reading = _recent(record, read(record, "vitamin_d").latest, "vitamin_d_gate_window_days")
    newer = _unreadable(record, ("vitamin_d",), reading, "vitamin_d_gate_window_days")
    if reading is None or newer is not None:
        text = f"no 25-OH vitamin D within {window} days" if reading is None else "25-OH vitamin D unknown"
        return {"vitd_known": 0, "vitd_low": 0}, {"vitamin_d": text + (f" ({newer})" if newer else "")}
    minimum = record.rs.param("vitamin_d_gate_min_ng_ml")
    below = proves_below(reading, minimum)
    text = f"25-OH vitamin D {_text(reading)} ({reading.source})"
    if below is None:
        text += f": does not show whether it is at least {fmt_number(minimum)} ng/mL"
    return {"vitd_known": int(below is not None), "vitd_low": int(below is True)}, {"vitamin_d": text}


def safety_fact(record: PatientRecord) -> Fact:
    """The ``safety`` fact: each lab known or not, low or not, ordered or not, in words."""
    fields: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    for part in (_renal, _calcium, _vitamin_d):
        f, e = part(record)
        fields |= f
        evidence |= e
    fields |= {
        "renal_ordered": record.ordered("renal"),
        "calcium_ordered": record.ordered("calcium"),
        "vitd_ordered": record.ordered("vitamin_d"),
    }
    unknown = [
        name
        for name, flag in (
            ("eGFR or creatinine clearance", "renal_known"),
            ("serum calcium", "calcium_known"),
            ("25-OH vitamin D", "vitd_known"),
        )
        if not fields[flag]
    ]
    fields["unknown"] = len(unknown)
    evidence["unknown"] = ", ".join(unknown) if unknown else "none"
    evidence["labs"] = "; ".join(str(evidence[k]) for k in ("renal", "calcium", "vitamin_d"))
    return Fact("safety", fields, evidence)
