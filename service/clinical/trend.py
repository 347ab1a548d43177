"""Serial bone density: is the newer BMD lower than the older one? (SPEC §3, ``bmd-decline``)

Only what ISCD allows to be compared is paired (the rule file then judges the change against
the site's least significant change):

* BMD in g/cm² (the rule set's ``dxa_bmd`` codes, unit ``dxa_bmd``), never T- or Z-scores;
* central diagnostic sites only (lumbar spine, total hip, femoral neck, one-third radius), and
  only the same site with the same side (a side code, else "left"/"right" in ``bodySite``);
* the same DXA system: the same ``Observation.device``, else (no device on either result) the
  same performer(s). Results from different devices are compared only when the rule set
  declares a cross-calibration between them (``bmd_cross_calibrations`` in ruleset.yaml).

Each comparable series gives one fact: its newest result against the latest result at least
``bmd_trend_min_interval_days`` older. No comparable pair: one fact with ``count: 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.clinical.bone import is_central, site_label, site_of
from service.clinical.display import fmt_number
from service.clinical.fhir import FhirDate, codings, concept_texts, quantity
from service.clinical.labs import mentions
from service.clinical.record import PatientRecord, ref
from service.ruleset.schema import Fact

# A BMD outside these bounds (g/cm²) is a data error, not a result.
BMD_BOUNDS = (0.05, 3.0)
# At most this many comparisons are asserted (the largest losses first); far below the engine's
# fact limit.
MAX_TRENDS = 8
DEFAULT_UNITS = ("g/cm2", {"g/cm2": 1.0})
SITE_NAMES = {
    "lumbar-spine": "Lumbar spine",
    "hip": "Total hip",
    "femur": "Femoral neck",
    "radius": "One-third radius",
}


@dataclass(frozen=True)
class Bmd:
    when: FhirDate
    resource: dict[str, Any]
    value: float  # g/cm²
    site: str
    side: str
    device: str  # the device key (or "performer:..."), as written in the rule set


def _reference_key(reference: Any) -> str | None:
    """A Reference as a device key: its ``reference``, else ``identifier`` as system|value."""
    if not isinstance(reference, dict):
        return None
    target = reference.get("reference")
    if isinstance(target, str) and target.strip():
        return target.strip()
    identifier = reference.get("identifier")
    if isinstance(identifier, dict):
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(value, str) and value.strip():
            return f"{system.strip() if isinstance(system, str) else ''}|{value.strip()}"
    return None


def device_key(resource: dict[str, Any]) -> str | None:
    """Which DXA system measured a result: its device, else its performer(s); None: unknown."""
    device = _reference_key(resource.get("device"))
    if device is not None:
        return device
    performers = resource.get("performer")
    if isinstance(performers, dict):
        performers = [performers]
    if not isinstance(performers, list):
        return None
    keys = sorted(k for k in (_reference_key(p) for p in performers) if k is not None)
    return "performer:" + ",".join(keys) if keys else None


def side_of(record: PatientRecord, resource: dict[str, Any]) -> str | None:
    """left, right or unstated; None when the result names both sides (not comparable)."""
    sides = record.rs.terms.dxa_sides
    for system, code, _ in codings(resource.get("code")):
        side = sides.get((system, code))
        if side is not None:
            return side
    words = list(concept_texts(resource.get("bodySite")))
    left, right = mentions(words, ("left",)), mentions(words, ("right",))
    if left and right:
        return None
    return "left" if left else "right" if right else "unstated"


def _canonical(record: PatientRecord, device: str) -> str:
    """The device key, or the cross-calibrated group it belongs to."""
    for group in record.rs.terms.cross_calibrations:
        if device in group:
            return "calibrated:" + ",".join(sorted(group))
    return device


def bmd_results(record: PatientRecord) -> list[Bmd]:
    """Every readable central-site BMD in g/cm² with a known site, side and device."""
    _, divisors = record.rs.units.get("dxa_bmd", DEFAULT_UNITS)
    lowered = {k.lower(): v for k, v in divisors.items()}
    out = []
    for when, res in record.observations("dxa_bmd"):
        site = site_of(record, res)
        if site is None or site.name not in SITE_NAMES or not is_central(record, res):
            continue
        q = quantity(res)
        if q is None or q.comparator != "=":
            continue
        divisor = divisors.get(q.unit, lowered.get(q.unit.lower()))
        if divisor is None:
            continue  # a unit that is not a BMD unit (a T-score sent under a BMD code)
        value = round(q.value / divisor, 4)
        side = side_of(record, res)
        device = device_key(res)
        if not BMD_BOUNDS[0] <= value <= BMD_BOUNDS[1] or side is None or device is None:
            continue
        out.append(Bmd(when, res, value, site.name, side, device))
    return out


def _pair(series: list[Bmd], min_days: float) -> tuple[Bmd, Bmd] | None:
    """The newest result and the latest one at least ``min_days`` older (None: no such pair)."""
    ordered = sorted(series, key=lambda b: (b.when.day, b.when.stamp, ref(b.resource)))
    newer = ordered[-1]
    older = [b for b in ordered if (newer.when.day - b.when.day).days >= min_days]
    return (older[-1], newer) if older else None


def _fact(record: PatientRecord, older: Bmd, newer: Bmd) -> Fact:
    change = round(newer.value - older.value, 4)
    change_pct = round(100.0 * change / older.value, 2)
    days_apart = (newer.when.day - older.when.day).days
    calibrated = int(older.device != newer.device)
    fields: dict[str, Any] = {
        "count": 1,
        "site": newer.site,
        "side": newer.side,
        "days_apart": days_apart,
        "days_ago": record.days_ago(newer.when),
        "change": change,
        "change_pct": change_pct,
        "loss_pct": round(-change_pct, 2) + 0.0,  # + 0.0: never "-0.0"
        "cross_calibrated": calibrated,
    }
    site = SITE_NAMES[newer.site] + ("" if newer.side == "unstated" else f", {newer.side}")
    sign = "+" if change > 0 else ""
    device = (
        f"the same DXA system ({newer.device})"
        if not calibrated
        else f"two cross-calibrated DXA systems ({older.device}, then {newer.device})"
    )
    evidence: dict[str, Any] = {
        "count": 1,
        "site": site,
        "site_display": site_label(record, newer.resource),
        "older": f"{older.value:.3f} g/cm²",
        "older_date": older.when.text,
        "older_source": ref(older.resource),
        "newer": f"{newer.value:.3f} g/cm²",
        "newer_date": newer.when.text,
        "newer_source": ref(newer.resource),
        "source": ref(newer.resource),
        # What a snooze's evidence fingerprint rests on: both results, their values and dates.
        "sources": f"{ref(older.resource)}, {ref(newer.resource)}",
        "value": f"{older.value:.3f} to {newer.value:.3f} g/cm²",
        "date": f"{older.when.text} to {newer.when.text}",
        "change": f"{sign}{change:.3f} g/cm²",
        "change_pct": f"{sign}{change_pct:.1f} %",
        "loss_pct": f"{abs(change_pct):.1f}",
        "days_apart": days_apart,
        "months_apart": fmt_number(round(days_apart / 30.44, 1)),
        "device": device,
    }
    return Fact("bmd_trend", fields, evidence)


def trend_facts(record: PatientRecord) -> list[Fact]:
    """One ``bmd_trend`` fact per comparable series, the largest loss first; ``count: 0`` if none."""
    series: dict[tuple[str, str, str], list[Bmd]] = {}
    for bmd in bmd_results(record):
        series.setdefault((bmd.site, bmd.side, _canonical(record, bmd.device)), []).append(bmd)
    min_days = record.rs.param("bmd_trend_min_interval_days")
    facts = []
    for key in sorted(series):
        pair = _pair(series[key], min_days)
        if pair is not None:
            facts.append(_fact(record, *pair))
    if not facts:
        return [Fact("bmd_trend", {"count": 0}, {"count": 0})]
    facts.sort(key=lambda f: (-f.fields["loss_pct"], f.fields["site"], f.fields["side"]))
    return facts[:MAX_TRENDS]
