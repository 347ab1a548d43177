"""The rule set as the rest of the service sees it: immutable records, loaded once per version.

Everyone imports these; only :mod:`service.ruleset.loader` builds them (from the rule files)
and only :mod:`service.ruleset.check` and :mod:`service.ruleset.safety` judge them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cds_hooks.vocabulary import SUMMARY_MAX_CHARS, Indicator, SelectionBehavior

INDICATORS = tuple(i.value for i in Indicator)
OPERATORS = {"$and", "$or", "$lt", "$lte", "$gt", "$gte", "$neq", "$ex", "$nex"}
COMPARISONS = {"$lt", "$lte", "$gt", "$gte", "$neq"}
RULE_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
DRAFT_TRANSFORMS = ("lower-weekly-dose", "hold")
MAX_SUMMARY = SUMMARY_MAX_CHARS
# The texts of a rule file that a clinician reads: on the card (summary, detail, suggestion and
# link labels, action descriptions, the title) and on the rule's documentation page (when, then).
CLINICIAN_TEXT = ("summary", "detail", "label", "description", "title", "when", "then")


@dataclass(frozen=True)
class ActionTemplate:
    type: str
    description: str
    resource: dict[str, Any] | None = None  # create: a FHIR resource template
    transform: str | None = None  # update of the anastrozole draft: a named transform
    # Offered only when the matched fact of each alias has these field values (for example a
    # lab order only when that lab is unknown): ((alias, field, value), ...).
    only_when: tuple[tuple[str, str, float | str], ...] = ()


@dataclass(frozen=True)
class SuggestionTemplate:
    label: str
    actions: tuple[ActionTemplate, ...]
    is_recommended: bool = False
    # Acts on the anastrozole draft order: offered only when one exists (not in patient-view).
    needs_draft: bool = False
    # Lowers, holds or stops anastrozole: offered only for male patients, whatever the file says.
    reduces_anastrozole: bool = False


@dataclass(frozen=True)
class SourceLink:
    """One main source of a rule (guideline, trial or drug label): a link on each of its cards."""

    label: str
    url: str  # an absolute https URL (DOI, PubMed, DailyMed)


@dataclass(frozen=True)
class Variant:
    name: str
    conditions: tuple[dict[str, Any], ...]  # engine-ready, params substituted
    summary: str
    detail: str
    suggestions: tuple[SuggestionTemplate, ...]
    # Declared in the rule file: the text speaks to the anastrozole "dose" (men on testosterone
    # therapy only) or "indication" (men only); None: it does neither.
    anastrozole_advice: str | None = None
    # The variant's own sources, instead of the rule's, on its cards (none: the rule's).
    links: tuple[SourceLink, ...] = ()


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    path: Path
    title: str
    when: str
    then: str
    indicator: str
    params: dict[str, float]
    variants: tuple[Variant, ...]
    selection_behavior: SelectionBehavior
    links: tuple[SourceLink, ...]  # on every card, unless the variant has its own
    # The parameters the rule uses (its own, then the shared ones it names): its page lists them.
    param_names: tuple[str, ...]


@dataclass(frozen=True)
class OverrideReason:
    code: str
    display: str
    snooze: bool = False
    system: str | None = None  # None: the rule set's own override_system
    same_as: str | None = None  # for a standard code: the code of ours it means the same as


class Membership(NamedTuple):
    """A medication's place in a class: ``("bone-agent", "denosumab", "denosumab")``."""

    cls: str
    member: str
    group: str  # "" in a class without groups


@dataclass(frozen=True)
class MedicationMember:
    id: str
    group: str  # bone-agent: bisphosphonate, denosumab or anabolic; "" elsewhere
    codes: frozenset[str]  # RxNorm codes: its ingredients and every concept containing them
    names: tuple[str, ...]  # ingredient and brand names, for the text fallback


@dataclass(frozen=True)
class MedicationClass:
    """One ``rules/classes/<class>.yaml``: a dated snapshot of RxNorm codes, plus names."""

    id: str
    path: Path
    snapshot_date: str
    members: tuple[MedicationMember, ...]
    not_members: frozenset[str]  # codes known NOT to be the class (so their text never decides)

    @property
    def codes(self) -> frozenset[str]:
        return frozenset().union(*(m.codes for m in self.members))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for m in self.members for n in m.names)

    def member(self, member_id: str) -> MedicationMember:
        for member in self.members:
            if member.id == member_id:
                return member
        raise KeyError(member_id)


@dataclass(frozen=True)
class Medications:
    """The medication classes, with the lookups matching needs, built once per rule set."""

    classes: dict[str, MedicationClass]
    # Every RxNorm code the rule set knows -> its memberships (empty for a known non-member).
    by_code: dict[str, frozenset[Membership]]
    # A name's key (its words in lower case, joined by one space) -> its memberships.
    by_name: dict[str, frozenset[Membership]]
    # A name's first word -> the names starting with it, as word tuples, longest first.
    name_starts: dict[str, tuple[tuple[str, ...], ...]]

    def __getitem__(self, class_id: str) -> MedicationClass:
        return self.classes[class_id]

    def __contains__(self, class_id: object) -> bool:
        return class_id in self.classes


@dataclass(frozen=True)
class DxaSite:
    name: str  # lumbar-spine, hip, femur, radius, calcaneus, unspecified
    central: bool  # a central diagnostic site (ISCD)
    forearm: bool = False  # read as the one-third radius unless bodySite names another region


@dataclass(frozen=True)
class ClinicalTerms:
    """The clinical vocabulary beyond code lists (see rules/ruleset.yaml)."""

    dxa_sites: dict[tuple[str, str], DxaSite] = field(default_factory=dict)
    other_forearm_regions: tuple[str, ...] = ()
    mass_spectrometry: tuple[str, ...] = ()
    immunoassay: tuple[str, ...] = ()
    immunoassay_codes: frozenset[tuple[str, str]] = frozenset()
    preferred: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    # DXA result codes that name a side (the left / right hip BMD codes).
    dxa_sides: dict[tuple[str, str], str] = field(default_factory=dict)
    # Groups of DXA devices a cross-calibration makes comparable (device keys, see trend.py).
    cross_calibrations: tuple[frozenset[str], ...] = ()


@dataclass(frozen=True)
class ForbiddenWord:
    """A word or phrase clinician text must not use (``forbidden_card_words`` in ruleset.yaml)."""

    phrase: str
    allow: tuple[str, ...] = ()  # exact phrases that contain it and may be used
    fields: tuple[str, ...] = CLINICIAN_TEXT  # where it is forbidden


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    root: Path
    source_label: str
    topic_system: str
    override_system: str
    override_reasons: tuple[OverrideReason, ...]
    snooze_days: int
    usable_status: dict[str, frozenset[str]]
    medications: Medications
    observations: dict[str, frozenset[tuple[str, str]]]
    procedures: dict[str, frozenset[tuple[str, str]]]
    orders: dict[str, frozenset[tuple[str, str]]]
    units: dict[str, tuple[str, dict[str, float]]]
    rules: tuple[Rule, ...]
    forbidden_words: tuple[ForbiddenWord, ...] = ()
    # Shared parameters (ruleset.yaml params): thresholds and windows the facts also use.
    params: dict[str, float] = field(default_factory=dict)
    terms: ClinicalTerms = field(default_factory=ClinicalTerms)

    def param(self, name: str) -> float:
        """A shared parameter; KeyError names it when the rule set lacks it."""
        return self.params[name]

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)
