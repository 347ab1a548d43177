"""Deriving the engine's facts from a patient's FHIR data (SPEC §3).

Only usable data counts (status filters from the rule set); the latest result wins by
clinical date whatever order the bundle lists them in (ties broken by timestamp, then id,
so the outcome never depends on bundle order); units are normalised with the rule set's
divisors; censored values keep their comparator so rules can tell "<24" from "low"; values
that are not numbers are skipped. One fact per kind is always produced, ``count: 0`` when
nothing usable exists, because absence must be a positive fact for the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_DOWN, Decimal
from typing import Any

from cds_hooks.context import is_live_draft
from cds_hooks.fhir import belongs_to, text
from service.clinical.fhir import (
    FhirDate,
    clinical_date,
    codings,
    concept_display,
    concept_matches,
    quantity,
)
from service.clinical.medications import is_medication
from service.ruleset.model import RuleSet
from service.ruleset.schema import Fact

SEXES = ("male", "female", "other", "unknown")
# Marks a draft whose dose Osteoguard's suggestion already lowered (meta.tag), so accepting
# the suggestion does not bring the same card back on the next hook call.
ACTION_TAG_SYSTEM = "urn:osteoguard:action"
DOSE_LOWERED = "dose-lowered"
# Values outside these bounds are data errors, not results; they are treated as unreadable.
PLAUSIBLE = {"lab": (0.0, 100_000.0), "tscore": (-10.0, 10.0), "frax": (0.0, 100.0)}


@dataclass(frozen=True)
class PatientData:
    """Everything the fact builder reads, already gathered from prefetch / FHIR / context."""

    patient_id: str
    patient: dict[str, Any] | None
    resources: list[dict[str, Any]]  # from the prefetch bundles (any order)
    drafts: list[dict[str, Any]]  # context.draftOrders entries
    hook: str
    # The anastrozole draft orders this call is about (empty in patient-view).
    anastrozole_drafts: list[dict[str, Any]] = field(default_factory=list)


def fmt_number(value: float) -> str:
    """Short display of a number: 8.2, 10, -2.5, 9.999.

    Truncated toward zero at 3 decimals, so a value never *displays* on the other side of a
    threshold written with 3 decimals or fewer (9.9996 shows as 9.999, not 10; -2.4996 as
    -2.499, not -2.5).
    """
    if not abs(value) < 1e12:
        return f"{value:.6g}"  # data errors only (plausibility bounds stop them before rules)
    shown = repr(float(value))
    if "e" in shown:  # below 1e-4: repr switches to exponent notation
        exact = Decimal(shown).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
        shown = format(exact.normalize(), "f")
    else:
        # Cutting the shortest decimal repr after 3 decimals is truncation toward zero,
        # without Decimal's cost (this runs for every value a card may show).
        whole, _, decimals = shown.partition(".")
        decimals = decimals[:3].rstrip("0")
        shown = f"{whole}.{decimals}" if decimals else whole
    return "0" if shown in ("-0", "0") else shown


def tagged_dose_lowered(order: dict[str, Any]) -> bool:
    """True when a draft carries Osteoguard's dose-lowered tag in ``meta.tag``."""
    meta = order.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return isinstance(tags, list) and any(
        isinstance(t, dict) and t.get("system") == ACTION_TAG_SYSTEM and t.get("code") == DOSE_LOWERED
        for t in tags
    )


def _plausible(value: float, kind: str) -> bool:
    low, high = PLAUSIBLE[kind]
    return low <= value <= high


def _sort_key(found: FhirDate, resource: dict[str, Any]) -> tuple[date, str, str]:
    rid = resource.get("id")
    return (found.day, found.stamp, rid if isinstance(rid, str) else "")


def _pair_sort_key(pair: tuple[FhirDate, dict[str, Any]]) -> tuple[date, str, str]:
    return _sort_key(pair[0], pair[1])


def _ref(resource: dict[str, Any]) -> str:
    rid = resource.get("id")
    rtype = resource.get("resourceType", "Resource")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid else f"{rtype} (no id)"


_CODE_INDEX: dict[int, tuple[RuleSet, dict[tuple[str, str], tuple[str, ...]]]] = {}


def _code_index(ruleset: RuleSet) -> dict[tuple[str, str], tuple[str, ...]]:
    """(system, code) -> the observation code lists it belongs to; built once per rule set."""
    cached = _CODE_INDEX.get(id(ruleset))
    if cached is not None and cached[0] is ruleset:
        return cached[1]
    index: dict[tuple[str, str], tuple[str, ...]] = {}
    for name, codes in ruleset.observations.items():
        for pair in codes:
            index[pair] = (*index.get(pair, ()), name)
    _CODE_INDEX[id(ruleset)] = (ruleset, index)
    return index


class FactBuilder:
    """Builds the fact list for one evaluation from a rule set's code lists and units."""

    def __init__(self, ruleset: RuleSet, today: date) -> None:
        self.rs = ruleset
        self.today = today
        self._by_list: dict[str, list[tuple[FhirDate, dict[str, Any]]]] | None = None
        self._by_list_of: PatientData | None = None
        self._by_type: dict[str, list[dict[str, Any]]] = {}
        self._by_type_of: PatientData | None = None

    def is_medication(self, request: dict[str, Any], group: str, bundle: Iterable[dict[str, Any]]) -> bool:
        """True when a MedicationRequest's drug is in the rule set's medication class."""
        return is_medication(self.rs, request, group, bundle)

    # ---- helpers -----------------------------------------------------------------------
    def _usable(self, resource: dict[str, Any], patient_id: str) -> bool:
        allowed = self.rs.usable_status.get(str(resource.get("resourceType")), frozenset())
        return text(resource.get("status")) in allowed and belongs_to(resource, patient_id)

    def _days_ago(self, found: FhirDate) -> int:
        return (self.today - found.day).days

    def _ordered(self, name: str, data: PatientData) -> int:
        codes = self.rs.orders[name]
        allowed = self.rs.usable_status.get("ServiceRequest", frozenset())
        for res in [*data.drafts, *self._of_type(data, "ServiceRequest")]:
            if res.get("resourceType") != "ServiceRequest" or not belongs_to(res, data.patient_id):
                continue
            status = text(res.get("status"))
            # Drafts in the order session may omit status; anything else must be draft/active.
            in_session = any(res is d for d in data.drafts)
            if (status in allowed or (in_session and status is None)) and concept_matches(
                res.get("code"), codes
            ):
                return 1
        return 0

    def _of_type(self, data: PatientData, resource_type: str) -> list[dict[str, Any]]:
        """The record's resources of one type (one pass over a bundle that can hold hundreds)."""
        if self._by_type_of is not data:
            by_type: dict[str, list[dict[str, Any]]] = {}
            for res in data.resources:
                kind = res.get("resourceType")
                if type(kind) is str:
                    by_type.setdefault(kind, []).append(res)
            self._by_type, self._by_type_of = by_type, data
        return self._by_type.get(resource_type, [])

    def _observations(self, data: PatientData, code_list: str) -> list[tuple[FhirDate, dict[str, Any]]]:
        """Usable, dated, not-future Observations in a code list, oldest first."""
        if self._by_list is None or self._by_list_of is not data:
            self._by_list = self._index_observations(data)
            self._by_list_of = data
        return self._by_list.get(code_list, [])

    def _index_observations(self, data: PatientData) -> dict[str, list[tuple[FhirDate, dict[str, Any]]]]:
        # One pass over the resources for every code list (a bundle can hold hundreds), so
        # this loop is written for speed: type() checks, no generators.
        index = _code_index(self.rs)
        allowed = self.rs.usable_status.get("Observation", frozenset())
        today = self.today
        by_list: dict[str, list[tuple[FhirDate, dict[str, Any]]]] = {}
        for res in self._of_type(data, "Observation"):
            status = res.get("status")
            if type(status) is not str or status not in allowed:
                continue
            lists: tuple[str, ...] = ()
            for system, code, _ in codings(res.get("code")):
                found = index.get((system, code))
                if found:
                    lists += found
            if not lists or not belongs_to(res, data.patient_id):
                continue
            when = clinical_date(res, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
            if when is None or when.day > today:
                continue
            for name in set(lists) if len(lists) > 1 else lists:
                by_list.setdefault(name, []).append((when, res))
        for found_list in by_list.values():
            found_list.sort(key=_pair_sort_key)
        return by_list

    # ---- facts -------------------------------------------------------------------------
    def context(self, data: PatientData) -> Fact:
        gender = data.patient.get("gender") if isinstance(data.patient, dict) else None
        sex = gender if isinstance(gender, str) and gender in SEXES else "unknown"
        pool = [*data.resources, *data.drafts]
        meds = [r for r in self._of_type(data, "MedicationRequest") if self._usable(r, data.patient_id)]
        meds += [
            r
            for r in data.drafts
            if r.get("resourceType") == "MedicationRequest"
            and is_live_draft(r)
            and belongs_to(r, data.patient_id)
        ]
        on_t = any(self.is_medication(m, "testosterone", pool) for m in meds)
        on_ar = any(self.is_medication(m, "bone-agent", pool) for m in meds)
        fields = {
            "anastrozole": 1,
            "has_draft": int(bool(data.anastrozole_drafts)),
            "dose_lowered": int(any(tagged_dose_lowered(d) for d in data.anastrozole_drafts)),
            "hook": data.hook,
            "sex": sex,
            "on_testosterone": int(on_t),
            "on_antiresorptive": int(on_ar),
        }
        evidence = {"sex": sex, "gender": gender if isinstance(gender, str) else "not recorded"}
        return Fact("context", fields, evidence)

    def lab(self, data: PatientData, name: str) -> Fact:
        """Latest readable result of a lab (estradiol, vitamin_d), normalised to the target unit.

        ``newer_unread`` says a newer usable-status result exists that cannot be read (text,
        no value, an unconvertible unit): the readable one is then not the latest word.
        """
        target, divisors = self.rs.units[name]
        lowered = {k.lower(): v for k, v in divisors.items()}
        usable: list[tuple[FhirDate, dict[str, Any], float, Any]] = []
        unread: list[FhirDate] = []
        low, high = PLAUSIBLE["lab"]
        for when, res in self._observations(data, name):
            q = quantity(res)
            divisor = None
            if q is not None:
                divisor = divisors.get(q.unit)
                if divisor is None:  # the case-insensitive lookup only when the exact one fails
                    divisor = lowered.get(q.unit.lower())
            if q is None or divisor is None:
                unread.append(when)  # skipped as a value, never an error
                continue
            value = round(q.value / divisor, 6)
            if not low <= value <= high:
                unread.append(when)
                continue
            usable.append((when, res, value, q))
        fields: dict[str, Any] = {"count": len(usable), "ordered": self._ordered(name, data)}
        evidence: dict[str, Any] = {"count": len(usable), "text": "none on record", "date": "none"}
        if usable:
            when, res, value, q = usable[-1]
            comparator = "" if q.comparator == "=" else q.comparator
            shown = f"{comparator}{fmt_number(value)} {target}"
            if q.unit != target:
                shown = f"{comparator}{fmt_number(q.value)} {q.unit} ({shown})"
            newer_unread = any((u.day, u.stamp) > (when.day, when.stamp) for u in unread)
            fields |= {
                "days_ago": self._days_ago(when),
                "value": value,
                "comparator": q.comparator,
                "newer_unread": int(newer_unread),
            }
            evidence |= {
                "text": shown,
                "value": f"{comparator}{fmt_number(value)}",
                "unit": target,
                "date": when.text,
                "days_ago": self._days_ago(when),
                "source": _ref(res),
                "name": concept_display(res.get("code")),
                "censored": "yes" if q.comparator != "=" else "no",
            }
        return Fact(name, fields, evidence)

    def dxa(self, data: PatientData) -> Fact:
        """The most recent DXA of any kind: completed Procedure or T-score/BMD Observation."""
        found: list[tuple[FhirDate, dict[str, Any]]] = []
        codes = self.rs.procedures["dxa"]
        for res in self._of_type(data, "Procedure"):
            if not self._usable(res, data.patient_id):
                continue
            if concept_matches(res.get("code"), codes):
                when = clinical_date(res, "performedDateTime", "performedPeriod")
                if when is not None and when.day <= self.today:
                    found.append((when, res))
        found += self._observations(data, "dxa_tscore") + self._observations(data, "dxa_bmd")
        found.sort(key=lambda pair: _sort_key(*pair))
        fields: dict[str, Any] = {"count": len(found), "ordered": self._ordered("dxa", data)}
        evidence: dict[str, Any] = {"count": len(found), "date": "none"}
        if found:
            when, res = found[-1]
            fields["days_ago"] = self._days_ago(when)
            evidence |= {
                "date": when.text,
                "days_ago": self._days_ago(when),
                "source": _ref(res),
                "name": concept_display(res.get("code")),
            }
        return Fact("dxa", fields, evidence)

    def bone(self, data: PatientData) -> Fact:
        """Lowest T-score on the most recent T-score date, with the latest FRAX results."""
        scores = []
        for when, res in self._observations(data, "dxa_tscore"):
            q = quantity(res)
            if q is not None and q.comparator == "=" and _plausible(q.value, "tscore"):
                scores.append((when, res, q.value))
        fields: dict[str, Any] = {"count": len(scores)}
        evidence: dict[str, Any] = {"count": len(scores), "frax": "not recorded"}
        if scores:
            last_day = scores[-1][0].day
            same_day = [s for s in scores if s[0].day == last_day]
            when, res, tscore = min(same_day, key=lambda s: (s[2], _sort_key(s[0], s[1])))
            fields |= {"days_ago": self._days_ago(when), "tscore": tscore}
            evidence |= {
                "tscore": fmt_number(tscore),
                "site": concept_display(res.get("code")),
                "date": when.text,
                "days_ago": self._days_ago(when),
                "source": _ref(res),
            }
        frax_parts = []
        for field_name, code_list, label in (
            ("frax_hip", "frax_hip", "hip"),
            ("frax_major", "frax_major", "major osteoporotic"),
        ):
            results = []
            for when, res in self._observations(data, code_list):
                q = quantity(res)
                if q is not None and q.comparator == "=" and _plausible(q.value, "frax"):
                    results.append((when, res, q.value))
            if results:
                when, res, value = results[-1]
                fields[field_name] = value
                evidence[field_name] = f"{fmt_number(value)} %"
                frax_parts.append(f"{label} {fmt_number(value)} % ({when.text}, {_ref(res)})")
            else:
                evidence[field_name] = "not recorded"
        if frax_parts:
            evidence["frax"] = "; ".join(frax_parts)
        return Fact("bone", fields, evidence)

    def build(self, data: PatientData) -> list[Fact]:
        """All facts for one evaluation, in a fixed order."""
        return [
            self.context(data),
            self.lab(data, "estradiol"),
            self.lab(data, "vitamin_d"),
            self.dxa(data),
            self.bone(data),
        ]
