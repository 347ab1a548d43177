"""One patient's gathered FHIR data, indexed once per call for the fact readers.

Only usable data counts (SPEC §3): an Observation whose status the rule set lists as usable,
for this patient, dated, and not in the future. Each code list of the rule set maps to its
Observations oldest first; a bundle of hundreds is walked once. Resources of other types are
grouped by type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_hooks.fhir import belongs_to, text
from service.clinical.fhir import FhirDate, clinical_date, coded, concept_matches, parse_date
from service.ruleset.model import RuleSet

Dated = tuple[FhirDate, dict[str, Any]]
OBSERVATION_DATES = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")


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


def ref(resource: dict[str, Any]) -> str:
    """``Type/id`` of a resource, for the evidence a card cites."""
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


class PatientRecord:
    """The indexed record of one call."""

    def __init__(self, ruleset: RuleSet, data: PatientData, today: date) -> None:
        self.rs = ruleset
        self.data = data
        self.today = today
        self._by_type: dict[str, list[dict[str, Any]]] = {}
        for res in data.resources:
            kind = res.get("resourceType")
            if type(kind) is str:
                self._by_type.setdefault(kind, []).append(res)
        self._by_list: dict[str, list[Dated]] | None = None
        # Lab readings by code list, read once per call (the facts and the safety gate share them).
        self.lab_results: dict[str, Any] = {}

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        """The record's resources of one type (not the drafts)."""
        return self._by_type.get(resource_type, [])

    def usable(self, resource: dict[str, Any]) -> bool:
        """Status usable for its type (rule set ``usable_status``) and about this patient."""
        allowed = self.rs.usable_status.get(str(resource.get("resourceType")), frozenset())
        return text(resource.get("status")) in allowed and belongs_to(resource, self.data.patient_id)

    def days_ago(self, found: FhirDate) -> int:
        return (self.today - found.day).days

    def observations(self, code_list: str) -> list[Dated]:
        """Usable, dated, not-future Observations in a code list, oldest first."""
        if self._by_list is None:
            self._by_list = self._index_observations()
        return self._by_list.get(code_list, [])

    def ordered(self, name: str) -> int:
        """1 when a test of the rule set's ``orders`` list is already ordered (draft or active)."""
        codes = self.rs.orders[name]
        allowed = self.rs.usable_status.get("ServiceRequest", frozenset())
        data = self.data
        for res in [*data.drafts, *self.of_type("ServiceRequest")]:
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

    def _index_observations(self) -> dict[str, list[Dated]]:
        # One pass over the resources for every code list (a bundle can hold hundreds), so
        # this loop is written for speed: type() checks, no generators.
        index = _code_index(self.rs)
        allowed = self.rs.usable_status.get("Observation", frozenset())
        today = self.today
        patient_id = self.data.patient_id
        by_list: dict[str, list[Dated]] = {}
        for res in self.of_type("Observation"):
            status = res.get("status")
            if type(status) is not str or status not in allowed:
                continue
            lists: tuple[str, ...] = ()
            for pair in coded(res.get("code")):
                found = index.get(pair)
                if found:
                    lists += found
            if not lists or not belongs_to(res, patient_id):
                continue
            # Most results carry effectiveDateTime; clinical_date tries it first as well.
            when = parse_date(res.get("effectiveDateTime")) or clinical_date(res, *OBSERVATION_DATES)
            if when is None or when.day > today:
                continue
            for name in set(lists) if len(lists) > 1 else lists:
                by_list.setdefault(name, []).append((when, res))
        for found_list in by_list.values():
            found_list.sort(key=lambda pair: (pair[0].day, pair[0].stamp))
        return by_list
