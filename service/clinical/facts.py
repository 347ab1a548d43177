"""Deriving the engine's facts from a patient's FHIR data (SPEC §3).

One fact per kind, always: ``count: 0`` when nothing usable exists, because absence must be
a positive fact for the engine. The readers do the clinical reading: :mod:`labs` (latest
interpretable result, units, ranking), :mod:`bone` (central DXA, T/Z-scores, FRAX),
:mod:`gate` (the safety labs before a bone drug), :mod:`therapy` (testosterone and current
bone therapy). Each fact's ``evidence`` is what a card may show: value, unit, date, source.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from cds_hooks.context import is_live_draft
from cds_hooks.fhir import belongs_to
from service.clinical import therapy
from service.clinical.bone import bone_density, latest_dxa, site_label
from service.clinical.display import fmt_number
from service.clinical.fhir import concept_display, parse_date
from service.clinical.gate import safety_fact
from service.clinical.labs import ASSAY_NAMES, read, shown
from service.clinical.medications import is_medication
from service.clinical.record import PatientData as PatientData
from service.clinical.record import PatientRecord, ref
from service.clinical.trend import trend_facts
from service.ruleset.model import RuleSet
from service.ruleset.schema import Fact

SEXES = ("male", "female", "other", "unknown")
# Marks a draft whose dose Osteoguard's suggestion already lowered (meta.tag), so accepting
# the suggestion does not bring the same card back on the next hook call.
ACTION_TAG_SYSTEM = "urn:osteoguard:action"
DOSE_LOWERED = "dose-lowered"


def tagged_dose_lowered(order: dict[str, Any]) -> bool:
    """True when a draft carries Osteoguard's dose-lowered tag in ``meta.tag``."""
    meta = order.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return isinstance(tags, list) and any(
        isinstance(t, dict) and t.get("system") == ACTION_TAG_SYSTEM and t.get("code") == DOSE_LOWERED
        for t in tags
    )


def is_deceased(patient: dict[str, Any] | None) -> bool:
    """``deceasedBoolean: true`` or any ``deceasedDateTime``: such a patient gets no cards."""
    if not isinstance(patient, dict):
        return False
    return patient.get("deceasedBoolean") is True or "deceasedDateTime" in patient


def age_on(patient: dict[str, Any] | None, today: date) -> int | None:
    """Whole years from ``birthDate`` (a partial date counts from its earliest day) to ``today``."""
    born = parse_date(patient.get("birthDate")) if isinstance(patient, dict) else None
    if born is None or born.day > today:
        return None
    day = born.day
    return today.year - day.year - ((today.month, today.day) < (day.month, day.day))


class FactBuilder:
    """Builds the fact list for one evaluation from a rule set's code lists and units."""

    def __init__(self, ruleset: RuleSet, today: date) -> None:
        self.rs = ruleset
        self.today = today

    def is_medication(self, request: dict[str, Any], group: str, bundle: Iterable[dict[str, Any]]) -> bool:
        """True when a MedicationRequest's drug is in the rule set's medication class."""
        return is_medication(self.rs, request, group, bundle)

    def _record(self, data: PatientData | PatientRecord) -> PatientRecord:
        return data if isinstance(data, PatientRecord) else PatientRecord(self.rs, data, self.today)

    # ---- facts -------------------------------------------------------------------------
    def context(self, data: PatientData | PatientRecord) -> Fact:
        record = self._record(data)
        data = record.data
        gender = data.patient.get("gender") if isinstance(data.patient, dict) else None
        sex = gender if isinstance(gender, str) and gender in SEXES else "unknown"
        drafts = [
            r
            for r in data.drafts
            if r.get("resourceType") == "MedicationRequest"
            and is_live_draft(r)
            and belongs_to(r, data.patient_id)
        ]
        trt = therapy.testosterone(record, drafts)
        age = age_on(data.patient, self.today)
        fields: dict[str, Any] = {
            "anastrozole": 1,
            "has_draft": int(bool(data.anastrozole_drafts)),
            "dose_lowered": int(any(tagged_dose_lowered(d) for d in data.anastrozole_drafts)),
            "hook": data.hook,
            "sex": sex,
            "on_testosterone": int(trt.on),
            "on_bone_agent": int(therapy.bone_agent(record, drafts).on),
            "age_known": int(age is not None),
        }
        evidence: dict[str, Any] = {
            "sex": sex,
            "gender": gender if isinstance(gender, str) else "not recorded",
            "age": f"{age} years" if age is not None else "not recorded",
            "testosterone": trt.text,
            "trt_started": trt.started,
        }
        if age is not None:
            fields["age"] = age
        if trt.first_days is not None:
            fields["trt_first_days"] = trt.first_days
        return Fact("context", fields, evidence)

    def lab(self, data: PatientData | PatientRecord, name: str) -> Fact:
        """Latest interpretable result of a lab, normalised to the target unit."""
        record = self._record(data)
        result = read(record, name)
        fields: dict[str, Any] = {"count": result.count, "ordered": record.ordered(name)}
        evidence: dict[str, Any] = {
            "count": result.count,
            "text": "none on record",
            "date": "none",
            "latest": "none on record",
        }
        newer = result.newer_unread
        evidence["newer_unread"] = (
            f"a newer result on {newer[0].text} ({ref(newer[1])}) could not be read as a value"
            if newer
            else "none"
        )
        reading = result.latest
        if reading is not None:
            comparator = "" if reading.quantity.comparator == "=" else reading.quantity.comparator
            fields |= {
                "days_ago": record.days_ago(reading.when),
                "value": reading.value,
                "comparator": reading.quantity.comparator,
            }
            if name != "testosterone":
                fields["newer_unread"] = int(newer is not None)
            evidence |= {
                "text": shown(reading, fmt_number(reading.value), fmt_number(reading.quantity.value)),
                "value": f"{comparator}{fmt_number(reading.value)}",
                "unit": reading.unit,
                "date": reading.when.text,
                "days_ago": record.days_ago(reading.when),
                "source": reading.source,
                "name": concept_display(reading.resource.get("code")),
                "censored": "yes" if reading.quantity.comparator != "=" else "no",
                "assay": ASSAY_NAMES[reading.rank] if name == "estradiol" else "",
            }
            evidence["latest"] = f"{evidence['text']} on {reading.when.text} ({reading.source})"
        return Fact(name, fields, evidence)

    def dxa(self, data: PatientData | PatientRecord) -> Fact:
        """The most recent central DXA of any kind."""
        record = self._record(data)
        found = latest_dxa(record)
        fields: dict[str, Any] = {"count": int(found is not None), "ordered": record.ordered("dxa")}
        evidence: dict[str, Any] = {"count": int(found is not None), "date": "none"}
        if found is not None:
            when, res = found
            fields["days_ago"] = record.days_ago(when)
            evidence |= {
                "date": when.text,
                "days_ago": record.days_ago(when),
                "source": ref(res),
                "name": concept_display(res.get("code")),
            }
        return Fact("dxa", fields, evidence)

    def bone(self, data: PatientData | PatientRecord) -> Fact:
        """The latest central DXA's lowest T- and Z-score, with the FRAX tied to it."""
        record = self._record(data)
        density = bone_density(record)
        scores = [s for s in (density.tscore, density.zscore) if s is not None]
        fields: dict[str, Any] = {"count": len(scores)}
        evidence: dict[str, Any] = {"count": len(scores), "frax": "not recorded", "date": "none"}
        if density.latest_day is not None and scores:
            fields["days_ago"] = (self.today - density.latest_day).days
            evidence |= {"date": density.latest_day.isoformat(), "days_ago": fields["days_ago"]}
        for name, score in (("tscore", density.tscore), ("zscore", density.zscore)):
            if score is not None:
                fields[name] = score.value
                evidence[name] = fmt_number(score.value)
                evidence[f"{name}_site"] = site_label(record, score.resource)
                evidence[f"{name}_source"] = ref(score.resource)
        if density.tscore is not None:  # the names older rule texts use
            evidence |= {"site": evidence["tscore_site"], "source": evidence["tscore_source"]}
        elif density.zscore is not None:
            evidence |= {"site": evidence["zscore_site"], "source": evidence["zscore_source"]}
        parts = []
        for name, label, score in (
            ("frax_hip", "hip", density.frax_hip),
            ("frax_major", "major osteoporotic", density.frax_major),
        ):
            if score is None:
                evidence[name] = "not recorded"
                continue
            fields[name] = score.value
            evidence[name] = f"{fmt_number(score.value)} %"
            parts.append(f"{label} {fmt_number(score.value)} % ({score.when.text}, {ref(score.resource)})")
        if parts:
            evidence["frax"] = "; ".join(parts)
        return Fact("bone", fields, evidence)

    def build(self, data: PatientData) -> list[Fact]:
        """All facts for one evaluation, in a fixed order."""
        record = PatientRecord(self.rs, data, self.today)
        return [
            self.context(record),
            self.lab(record, "estradiol"),
            self.lab(record, "vitamin_d"),
            self.lab(record, "testosterone"),
            self.dxa(record),
            self.bone(record),
            safety_fact(record),
            *trend_facts(record),
        ]
