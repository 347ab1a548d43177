"""The facts the rules can test (kinds, fields, types) and the Fact/Firing records: the contract
between code and rule files. Importing this never loads the rule engine.

Absence is always a positive fact: every kind below is asserted once per evaluation, with
``count: 0`` when nothing usable exists (durable_rules' ``$not`` depends on fact order, so
rule files may not use it). Fields marked optional are present only when ``count > 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

NUMBER: Final = "number"
FLAG: Final = "flag"  # 0 or 1
TEXT: Final = "text"  # short, non-numeric string from a closed set

# kind -> field -> type
FACT_FIELDS: Final[dict[str, dict[str, str]]] = {
    "context": {
        "anastrozole": FLAG,  # the hook is about an anastrozole order / active prescription
        "has_draft": FLAG,  # an anastrozole draft order exists that suggestions may act on
        "dose_lowered": FLAG,  # that draft already carries Osteoguard's dose-lowered tag
        "hook": TEXT,  # order-select | order-sign | patient-view
        "sex": TEXT,  # male | female | other | unknown
        "on_testosterone": FLAG,  # active or draft testosterone MedicationRequest
        "on_antiresorptive": FLAG,  # active or draft antiresorptive/anabolic MedicationRequest
    },
    # Latest usable estradiol result, value in pg/mL.
    "estradiol": {
        "count": NUMBER,
        "ordered": FLAG,  # an estradiol lab order is in the drafts or active
        "days_ago": NUMBER,
        "value": NUMBER,
        "comparator": TEXT,  # = < <= > >=
        "newer_unread": FLAG,  # a newer result exists that could not be read (text, odd unit)
    },
    # Latest usable 25-OH vitamin D result, value in ng/mL.
    "vitamin_d": {
        "count": NUMBER,
        "ordered": FLAG,
        "days_ago": NUMBER,
        "value": NUMBER,
        "comparator": TEXT,
        "newer_unread": FLAG,
    },
    # Most recent DXA of any kind: completed Procedure, T-score or BMD Observation.
    "dxa": {
        "count": NUMBER,
        "ordered": FLAG,
        "days_ago": NUMBER,
    },
    # Lowest T-score on the most recent date with a T-score, plus the latest FRAX results.
    "bone": {
        "count": NUMBER,
        "days_ago": NUMBER,
        "tscore": NUMBER,
        "frax_hip": NUMBER,  # percent, optional
        "frax_major": NUMBER,  # percent, optional
    },
}

TEXT_VALUES: Final[dict[str, frozenset[str]]] = {
    "hook": frozenset({"order-select", "order-sign", "patient-view"}),
    "sex": frozenset({"male", "female", "other", "unknown"}),
    "comparator": frozenset({"=", "<", "<=", ">", ">="}),
}


@dataclass(frozen=True)
class Fact:
    """One fact for the engine (``fields``) plus what cards show about it (``evidence``)."""

    kind: str
    fields: Mapping[str, Any]
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Firing:
    """A rule variant that fired, with the facts it matched, by alias."""

    rule_id: str
    variant: str
    matched: Mapping[str, Fact]
