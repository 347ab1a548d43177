"""Rewriting the clinician's draft anastrozole order for an ``update`` suggestion.

Two transforms: a lower weekly dose (fewer administrations, same tablets) and a hold. Both
work on a copy; a draft whose timing cannot be rewritten consistently gets no dose change
rather than a contradictory one. :func:`is_valid_fhir` is the last check before anything is
sent back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from service.clinical.display import fmt_number
from service.clinical.facts import ACTION_TAG_SYSTEM, DOSE_LOWERED

# FHIR Timing.repeat periodUnit -> weeks, for the units an anastrozole schedule is written in.
_WEEKS = {"d": 1 / 7, "wk": 1.0, "mo": 30.4375 / 7, "a": 365.25 / 7, "h": 1 / 168}
# Timing details the transform cannot rewrite consistently (fixed weekdays, events, ranges,
# a total count, PRN): with any of them present it offers no dose change rather than a
# contradictory one.
_UNSAFE_REPEAT = ("dayOfWeek", "timeOfDay", "when", "frequencyMax", "periodMax", "count", "countMax")
_UNSAFE_TIMING = ("event", "code")
_UNSAFE_DOSAGE = ("asNeededBoolean", "asNeededCodeableConcept", "maxDosePerPeriod")


def _positive(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def doses_per_week(repeat: Mapping[str, Any]) -> float | None:
    """Administrations a week of a FHIR ``Timing.repeat``: ``frequency`` per ``period`` ``periodUnit``.

    ``frequency`` defaults to 1. None unless frequency and period are positive numbers and the
    unit is one of d, wk, mo, a, h; fixed weekdays, times of day and ranges are the caller's to judge.
    """
    frequency = repeat.get("frequency", 1)
    period = repeat.get("period")
    unit = repeat.get("periodUnit")
    if not (_positive(frequency) and _positive(period) and isinstance(unit, str) and unit in _WEEKS):
        return None
    return frequency / (period * _WEEKS[unit])


def _tag_dose_lowered(order: dict[str, Any]) -> None:
    meta = order.setdefault("meta", {})
    if not isinstance(meta, dict):
        order["meta"] = meta = {}
    tags = meta.get("tag")
    if not isinstance(tags, list):
        meta["tag"] = tags = []
    tags.append(
        {
            "system": ACTION_TAG_SYSTEM,
            "code": DOSE_LOWERED,
            "display": "Dose lowered on an Osteoguard suggestion",
        }
    )


def lower_weekly_dose(order: dict[str, Any], factor: float) -> dict[str, Any] | None:
    """The draft order with its weekly dose scaled by ``factor`` (< 1), tablets unchanged.

    Fewer administrations rather than smaller ones: twice weekly becomes once weekly, once
    weekly becomes once every two weeks. The result carries Osteoguard's ``dose-lowered`` tag
    so the same suggestion is not offered again for it. None when the timing cannot be read
    or rewritten consistently.
    """
    if not 0 < factor < 1:
        return None
    updated = copy.deepcopy(order)
    dosages = updated.get("dosageInstruction")
    if not isinstance(dosages, list) or not dosages:
        return None
    for dosage in dosages:
        if not isinstance(dosage, dict) or any(k in dosage for k in _UNSAFE_DOSAGE):
            return None
        timing = dosage.get("timing")
        if not isinstance(timing, dict) or any(k in timing for k in _UNSAFE_TIMING):
            return None
        repeat = timing.get("repeat")
        if not isinstance(repeat, dict) or any(k in repeat for k in _UNSAFE_REPEAT):
            return None
        before = doses_per_week(repeat)
        frequency = repeat.get("frequency", 1)
        if before is None or not isinstance(frequency, int):
            return None
        period = repeat["period"]  # a positive number: doses_per_week read it
        if frequency > 100 or period > 1000:
            return None  # not a real anastrozole schedule
        new_frequency = frequency * factor
        if new_frequency >= 1 and math.isclose(new_frequency, round(new_frequency)):
            repeat["frequency"] = int(round(new_frequency))
        else:
            repeat["frequency"] = frequency
            new_period = period / factor
            if not math.isfinite(new_period) or new_period > 1000:
                return None  # a factor so small the schedule stops being one
            repeat["period"] = int(new_period) if float(new_period).is_integer() else new_period
        after = doses_per_week(repeat)
        if after is None:
            return None
        instruction = f"{_dose_text(dosage)}{_timing_text(repeat)}"
        dosage["text"] = (
            f"{instruction} (reduced from {fmt_number(before)} to {fmt_number(after)} doses per week)"
        )
        if "patientInstruction" in dosage:
            dosage["patientInstruction"] = f"Take {instruction}."
    _tag_dose_lowered(updated)
    return updated


def _dose_text(dosage: dict[str, Any]) -> str:
    dose_rates = dosage.get("doseAndRate")
    for dose_rate in dose_rates if isinstance(dose_rates, list) else []:
        q = dose_rate.get("doseQuantity") if isinstance(dose_rate, dict) else None
        if isinstance(q, dict) and _positive(q.get("value")):
            unit = q.get("unit") if isinstance(q.get("unit"), str) else q.get("code")
            unit = unit if isinstance(unit, str) else ""
            return f"{fmt_number(float(q['value']))} {unit}".rstrip() + " "
    return ""


def _timing_text(repeat: dict[str, Any]) -> str:
    names = {"d": "day", "wk": "week", "mo": "month", "a": "year", "h": "hour"}
    adverbs = {"d": "daily", "wk": "weekly", "mo": "monthly", "a": "yearly", "h": "hourly"}
    frequency, period, unit = repeat["frequency"], repeat["period"], repeat["periodUnit"]
    times = {1: "once", 2: "twice"}.get(frequency, f"{frequency} times")
    if period == 1:
        return f"{times} {adverbs[unit]}"
    return f"{times} every {fmt_number(float(period))} {names[unit]}s"


def hold(order: dict[str, Any]) -> dict[str, Any]:
    """The draft order put on hold (status ``on-hold``), everything else unchanged."""
    updated = copy.deepcopy(order)
    updated["status"] = "on-hold"
    return updated


def is_valid_fhir(resource: dict[str, Any]) -> bool:
    """True when ``resource`` validates as a FHIR R4 resource (fhir.resources R4B models)."""
    try:
        get_fhir_model_class(str(resource.get("resourceType"))).model_validate(resource)
    except (ValidationError, KeyError, ValueError):
        return False
    return True
