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
        "hook": TEXT,  # order-select | order-sign | patient-view | medication-refill
        "sex": TEXT,  # male | female | other | unknown
        "on_testosterone": FLAG,  # testosterone therapy: active or draft order, active statement
        "on_bone_agent": FLAG,  # current bone therapy (long-acting agents given months ago count)
        "age_known": FLAG,  # birthDate on record
        "age": NUMBER,  # whole years on the day of the call (optional)
        "trt_first_days": NUMBER,  # days since the first testosterone order on record (optional)
    },
    # Latest interpretable estradiol result, value in pg/mL.
    "estradiol": {
        "count": NUMBER,
        "ordered": FLAG,  # an estradiol lab order is in the drafts or active
        "days_ago": NUMBER,
        "value": NUMBER,
        "comparator": TEXT,  # = < <= > >=
        "newer_unread": FLAG,  # a newer result exists that could not be read (named on the card)
    },
    # Latest interpretable 25-OH vitamin D result, value in ng/mL.
    "vitamin_d": {
        "count": NUMBER,
        "ordered": FLAG,
        "days_ago": NUMBER,
        "value": NUMBER,
        "comparator": TEXT,
        "newer_unread": FLAG,
    },
    # Latest interpretable total testosterone result, value in ng/dL.
    "testosterone": {
        "count": NUMBER,
        "ordered": FLAG,
        "days_ago": NUMBER,
        "value": NUMBER,
        "comparator": TEXT,
    },
    # Most recent central DXA: completed DXA Procedure, or a central-site T-score/Z-score/BMD.
    "dxa": {
        "count": NUMBER,
        "ordered": FLAG,
        "days_ago": NUMBER,
    },
    # The latest central DXA: its lowest central T- and Z-score, and the FRAX tied to it.
    "bone": {
        "count": NUMBER,  # central T- and Z-scores on the latest DXA day
        "days_ago": NUMBER,
        "tscore": NUMBER,  # optional
        "zscore": NUMBER,  # optional
        "frax_hip": NUMBER,  # percent, optional
        "frax_major": NUMBER,  # percent, optional
    },
    # The safety gate before a bone drug: known = a result in the window proves its side.
    "safety": {
        "renal_known": FLAG,
        "renal_low": FLAG,  # proven below egfr_bisphosphonate_min
        "renal_severe": FLAG,  # not proven at or above egfr_denosumab_caution
        "renal_ordered": FLAG,
        "calcium_known": FLAG,
        "calcium_low": FLAG,
        "calcium_ordered": FLAG,
        "vitd_known": FLAG,
        "vitd_low": FLAG,  # proven below vitamin_d_gate_min_ng_ml
        "vitd_ordered": FLAG,
        "unknown": NUMBER,  # how many of the three are unknown
    },
    # Serial BMD (g/cm², never T-scores): one fact per comparable series (same central site,
    # side and device, or a declared cross-calibration), the newest result against the latest
    # one at least ``bmd_trend_min_interval_days`` older. ``count: 0`` (and nothing else) when
    # no two results can be compared. Several facts of this kind may be asserted.
    "bmd_trend": {
        "count": NUMBER,  # 1: this fact is a comparison; 0: none is possible
        "site": TEXT,  # lumbar-spine | hip | femur (femoral neck) | radius (optional)
        "side": TEXT,  # left | right | unstated (optional)
        "days_apart": NUMBER,  # between the two results (optional)
        "days_ago": NUMBER,  # of the newer result (optional)
        "change": NUMBER,  # newer minus older, g/cm² (negative: lower) (optional)
        "change_pct": NUMBER,  # the same as a percentage of the older value (optional)
        "loss_pct": NUMBER,  # -change_pct: positive when the newer is lower (optional)
        "cross_calibrated": FLAG,  # different devices under a declared cross-calibration (optional)
    },
}

# The keys every rule.yaml must have (the loader refuses a file without one): a file cut short
# mid-way, or still being written, that happens to parse lacks the later ones. Each variant
# needs ``conditions``, ``summary`` and ``detail`` as well.
RULE_KEYS: Final = ("title", "when", "then", "indicator", "links", "variants")

TEXT_VALUES: Final[dict[str, frozenset[str]]] = {
    "hook": frozenset({"order-select", "order-sign", "patient-view", "medication-refill"}),
    "sex": frozenset({"male", "female", "other", "unknown"}),
    "comparator": frozenset({"=", "<", "<=", ">", ">="}),
    "site": frozenset({"lumbar-spine", "hip", "femur", "radius"}),
    "side": frozenset({"left", "right", "unstated"}),
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
