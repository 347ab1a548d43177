"""Reading bone density: central DXA sites only, the latest DXA, its T- and Z-scores, FRAX.

Only central diagnostic sites count for diagnosis and for "has had a DXA" (ISCD): lumbar
spine, total hip, femoral neck and the one-third radius. A "Radius and Ulna" result is read
as the one-third radius unless its ``bodySite`` names another forearm region. Heel results, a
peripheral DXA (CPT 77081) and a vertebral fracture assessment alone (CPT 77086) are not a
DXA here. The latest DXA is the latest day with a central-site result; its lowest central
T-score (or Z-score) decides. FRAX counts only when dated no earlier than
``frax_before_dxa_days`` before that DXA and within ``frax_max_age_days`` of today.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from service.clinical.fhir import FhirDate, clinical_date, codings, concept_matches, concept_texts, quantity
from service.clinical.labs import mentions
from service.clinical.record import Dated, PatientRecord, ref
from service.ruleset.model import DxaSite

SCORE_BOUNDS = (-10.0, 10.0)
FRAX_BOUNDS = (0.0, 100.0)
ONE_THIRD = ("33%", "33 %", "one-third", "one third", "1/3", "third")


@dataclass(frozen=True)
class Score:
    when: FhirDate
    resource: dict[str, Any]
    value: float
    site: str  # the site's name in the rule set


@dataclass(frozen=True)
class BoneDensity:
    """What the latest central DXA shows, and the FRAX results tied to it."""

    latest_day: date | None  # the latest day with a central-site result
    tscore: Score | None  # lowest central T-score on that day
    zscore: Score | None  # lowest central Z-score on that day
    frax_hip: Score | None
    frax_major: Score | None


def site_of(record: PatientRecord, resource: dict[str, Any]) -> DxaSite | None:
    """The skeletal site of a DXA result, by its code (None when the code names no site)."""
    sites = record.rs.terms.dxa_sites
    for system, code, _ in codings(resource.get("code")):
        site = sites.get((system, code))
        if site is not None:
            return site
    return None


def site_label(record: PatientRecord, resource: dict[str, Any]) -> str:
    """The site as a clinician names it: the result's own display, else the site's name."""
    for _, _, display in codings(resource.get("code")):
        if display:
            return display
    site = site_of(record, resource)
    if site is None:
        return "site not stated"
    return (
        "one-third radius" if site.forearm and is_central(record, resource) else site.name.replace("-", " ")
    )


def is_central(record: PatientRecord, resource: dict[str, Any]) -> bool:
    site = site_of(record, resource)
    if site is None or not site.central:
        return False
    if not site.forearm:
        return True
    body = list(concept_texts(resource.get("bodySite")))
    if not body or mentions(body, ONE_THIRD):
        return True
    return not mentions(body, record.rs.terms.other_forearm_regions)


def _central(record: PatientRecord, code_list: str) -> list[Dated]:
    return [(when, res) for when, res in record.observations(code_list) if is_central(record, res)]


def latest_dxa(record: PatientRecord) -> Dated | None:
    """The most recent central DXA of any kind: a completed DXA Procedure or a central result."""
    found: list[Dated] = []
    codes = record.rs.procedures["dxa"]
    for res in record.of_type("Procedure"):
        if record.usable(res) and concept_matches(res.get("code"), codes):
            when = clinical_date(res, "performedDateTime", "performedPeriod")
            if when is not None and when.day <= record.today:
                found.append((when, res))
    for code_list in ("dxa_tscore", "dxa_bmd", "dxa_zscore"):
        found += _central(record, code_list)
    return max(found, key=lambda pair: (pair[0].day, pair[0].stamp, ref(pair[1])), default=None)


def _scores(record: PatientRecord, code_list: str, bounds: tuple[float, float]) -> list[Score]:
    out = []
    for when, res in record.observations(code_list):
        q = quantity(res)
        if q is None or q.comparator != "=" or not bounds[0] <= q.value <= bounds[1]:
            continue
        site = site_of(record, res)
        out.append(Score(when, res, q.value, site.name if site else ""))
    return out


def _lowest_on(scores: list[Score], day: date | None) -> Score | None:
    # The lowest value decides. Between equal values (the same decision either way) the later
    # instant, then the reference, picks which result the card cites: never the bundle order.
    same_day = [s for s in scores if s.when.visit == day]
    return min(same_day, key=lambda s: (s.value, _neg(s.when.stamp), ref(s.resource)), default=None)


def _neg(stamp: str) -> tuple[int, ...]:
    # Orders later instants first inside an ascending min().
    return tuple(-ord(c) for c in stamp)


def bone_density(record: PatientRecord) -> BoneDensity:
    central = {
        name: [s for s in _scores(record, name, SCORE_BOUNDS) if is_central(record, s.resource)]
        for name in ("dxa_tscore", "dxa_zscore")
    }
    days = [
        when.visit for name in ("dxa_tscore", "dxa_bmd", "dxa_zscore") for when, _ in _central(record, name)
    ]
    latest = max(days, default=None)
    frax: dict[str, Score | None] = {"frax_hip": None, "frax_major": None}
    if latest is not None:
        earliest = latest - timedelta(days=record.rs.param("frax_before_dxa_days"))
        oldest = record.today - timedelta(days=record.rs.param("frax_max_age_days"))
        for name in frax:
            tied = [s for s in _scores(record, name, FRAX_BOUNDS) if s.when.day >= max(earliest, oldest)]
            frax[name] = max(
                tied, key=lambda s: (s.when.day, s.when.stamp, s.value, ref(s.resource)), default=None
            )
    return BoneDensity(
        latest_day=latest,
        tscore=_lowest_on(central["dxa_tscore"], latest),
        zscore=_lowest_on(central["dxa_zscore"], latest),
        frax_hip=frax["frax_hip"],
        frax_major=frax["frax_major"],
    )
