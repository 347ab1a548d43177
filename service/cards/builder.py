"""Turning firings into CDS Hooks cards: the single place every card is built.

Card text and suggestion templates come from the rule files; this module fills them with
the evidence of the facts a rule matched and stamps the rule's metadata (source, topic,
rule-set version, override reasons, links to the rule's main sources, and ``source.url``: the
rule's documentation page below ``docs_base``) onto every card.

Two safety invariants are enforced here, in code, whatever the rule files say:

* a suggestion that lowers, holds or stops anastrozole is offered only for a male patient
  (in breast cancer, low estradiol is the goal);
* such a suggestion needs an anastrozole draft order to act on (none in patient-view).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_hooks.models import Action, Card, Coding, Link, Source, Suggestion
from cds_hooks.uuids import uuid4_str
from cds_hooks.vocabulary import Indicator
from service.cards.drafts import hold, is_valid_fhir, lower_weekly_dose
from service.cards.repair import first_problem
from service.cards.text import fill_resource, render, template_values
from service.clinical.medications import is_medication
from service.ruleset.docs import rule_doc_url
from service.ruleset.model import MAX_SUMMARY, ActionTemplate, Rule, RuleSet, SuggestionTemplate, Variant
from service.ruleset.safety import speaks_to_anastrozole
from service.ruleset.schema import Firing

log = logging.getLogger("osteoguard.cards")


@dataclass(frozen=True)
class NotOffered:
    """A suggestion that applies but could not be built: its label, a metric label, and why."""

    label: str
    reason: str  # bounded: no-draft-id | dose-unreadable | invalid-fhir
    why: str  # for the clinician, in the card's detail


def advice_allowed(advice: str | None, sex: str, on_testosterone: bool) -> bool:
    """SPEC §3, in code: dose advice only for a man on testosterone therapy; questioning the
    indication only for a man; anything else for anyone."""
    if advice == "dose":
        return sex == "male" and on_testosterone
    if advice == "indication":
        return sex == "male"
    return True


def card_text(card: Card) -> str:
    """Every text of a card a clinician reads."""
    parts = [card.summary, card.detail or ""]
    for suggestion in card.suggestions:
        parts += [suggestion.label, *(a.description for a in suggestion.actions)]
    return "\n".join(parts)


def applies(action: ActionTemplate, firing: Firing) -> bool:
    """Whether an action's ``only_when`` holds for the facts the rule matched."""
    for alias, name, value in action.only_when:
        fact = firing.matched.get(alias)
        if fact is None or fact.fields.get(name) != value:
            return False
    return True


@dataclass
class _Shared:
    """What every card of a rule set (or of one rule or variant) carries alike, made once as
    frozen models: nine pydantic models a card. Only the latest rule set's are kept, so a
    replaced rule set is not held in memory; during a reload the two sets may rebuild them."""

    ruleset: RuleSet
    override_reasons: tuple[Coding, ...]
    links: dict[tuple[str, str], tuple[Link, ...]]  # by rule id and variant name


_shared: _Shared | None = None


def _for(rs: RuleSet) -> _Shared:
    global _shared
    shared = _shared
    if shared is None or shared.ruleset is not rs:
        reasons = tuple(
            Coding(system=r.system or rs.override_system, code=r.code, display=r.display)
            for r in rs.override_reasons
        )
        shared = _shared = _Shared(rs, reasons, {})
    return shared


def _links(shared: _Shared, variant: Variant, rule: Rule) -> tuple[Link, ...]:
    key = (rule.id, variant.name)
    made = shared.links.get(key)
    if made is None:
        made = shared.links[key] = tuple(
            Link(label=link.label, url=link.url, type="absolute") for link in variant.links or rule.links
        )
    return made


class CardBuilder:
    """Builds the cards of one evaluation."""

    def __init__(
        self,
        ruleset: RuleSet,
        today: date,
        new_uuid: Callable[[], str] = uuid4_str,
        *,
        docs_base: str,
        on_not_offered: Callable[[str, str], None] | None = None,
    ) -> None:
        self.rs = ruleset
        self.on_not_offered = on_not_offered  # (rule id, reason label): the service counts these
        self.today = today
        self.docs_base = docs_base  # where the rule documentation pages are served
        self.new_uuid = new_uuid
        self._draft_valid: dict[int, bool] = {}
        self._values: dict[tuple[int, bool], Any] = {}  # the facts' template namespaces

    def _orders_anastrozole(self, suggestion: Suggestion) -> bool:
        return any(
            a.type == "create"
            and isinstance(a.resource, dict)
            and a.resource.get("resourceType") == "MedicationRequest"
            and is_medication(self.rs, a.resource, "anastrozole", [])
            for a in suggestion.actions
        )

    def _valid_draft(self, draft: dict[str, Any]) -> bool:
        """Whether a draft order is valid R4, validated once per call, not once per update.

        fhir.resources takes about 120 us a resource, and both transforms of one draft (lower
        the dose, hold) asked. From a valid draft they only set fields to values of their FHIR
        types (frequency, a finite period, text, status, a meta tag), so their results are
        valid too; the conformance check validates every suggested resource of every scenario.
        """
        key = id(draft)  # the drafts outlive this builder's one call
        if key not in self._draft_valid:
            self._draft_valid[key] = is_valid_fhir(draft)
        return self._draft_valid[key]

    def build(
        self,
        firings: list[Firing],
        *,
        patient_id: str,
        sex: str,
        drafts: list[dict[str, Any]],
        on_testosterone: bool = False,
    ) -> list[Card]:
        """One card per fired rule (its first firing variant, in rule-file order)."""
        cards = []
        done: set[str] = set()
        for firing in firings:
            if firing.rule_id in done:
                continue
            done.add(firing.rule_id)
            rule = self.rs.rule(firing.rule_id)
            variant = next(v for v in rule.variants if v.name == firing.variant)
            if not advice_allowed(variant.anastrozole_advice, sex, on_testosterone):
                # The loader refuses such rule files; this holds whatever the files say.
                log.error(
                    "card withheld: anastrozole advice for a patient it does not fit", extra={"rule": rule.id}
                )
                continue
            card = self._card(rule, variant, firing, patient_id, sex, drafts, on_testosterone)
            if variant.anastrozole_advice is None and speaks_to_anastrozole(card_text(card)):
                # The loader refuses such text; this holds for text filled in from the evidence too.
                log.error("card withheld: undeclared anastrozole advice in its text", extra={"rule": rule.id})
                continue
            cards.append(card)
        # Most urgent first; rule-file order within the same urgency.
        urgency = {Indicator.critical: 0, Indicator.warning: 1, Indicator.info: 2}
        return sorted(cards, key=lambda card: urgency[card.indicator])

    def _card(
        self,
        rule: Rule,
        variant: Variant,
        firing: Firing,
        patient_id: str,
        sex: str,
        drafts: list[dict[str, Any]],
        on_testosterone: bool,
    ) -> Card:
        matched, cache = firing.matched, self._values
        summary = " ".join(
            render(variant.summary, template_values(rule, self.rs, matched, cache=cache)).split()
        )
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1].rstrip() + "…"
        detail = render(
            variant.detail, template_values(rule, self.rs, matched, markdown=True, cache=cache)
        ).strip()
        suggestions = []
        not_offered: list[NotOffered] = []
        for template in variant.suggestions:
            if template.reduces_anastrozole and not advice_allowed("dose", sex, on_testosterone):
                continue  # safety invariant: anastrozole is acted on only for a man on testosterone
            if template.needs_draft and not drafts:
                continue
            suggestion = self._suggestion(template, rule, firing, patient_id, drafts)
            if isinstance(suggestion, NotOffered):
                not_offered.append(suggestion)
                continue
            if suggestion is None:
                continue
            if self._orders_anastrozole(suggestion) and not advice_allowed("dose", sex, on_testosterone):
                continue  # a new anastrozole order is dose advice too
            suggestions.append(suggestion)
        if not_offered:
            detail += "\n\n**Actions not offered**\n" + "\n".join(
                f"- “{n.label}” could not be offered: {n.why}." for n in not_offered
            )
            for n in not_offered:
                log.warning("suggestion not offered", extra={"rule": rule.id, "reason": n.reason})
                if self.on_not_offered is not None:
                    self.on_not_offered(rule.id, n.reason)
        detail += f"\n\n---\n_Rule `{rule.id}` ({rule.title}), rule set {self.rs.name} {self.rs.version}._"
        indicator = Indicator(rule.indicator)
        shared = _for(self.rs)
        override = list(shared.override_reasons) if indicator != Indicator.info else []
        return Card(
            uuid=self.new_uuid(),
            summary=summary,
            detail=detail,
            indicator=indicator,
            source=Source(
                label=self.rs.source_label,
                url=rule_doc_url(self.docs_base, rule.id),
                topic=Coding(system=self.rs.topic_system, code=rule.id, display=rule.title),
            ),
            suggestions=suggestions,
            selectionBehavior=rule.selection_behavior if suggestions else None,
            overrideReasons=override,
            links=list(_links(shared, variant, rule)),
        )

    def _suggestion(
        self,
        template: SuggestionTemplate,
        rule: Rule,
        firing: Firing,
        patient_id: str,
        drafts: list[dict[str, Any]],
    ) -> Suggestion | NotOffered | None:
        """The suggestion; None when it does not apply; :class:`NotOffered` when it applies but
        cannot be built (the card then says so: never silently dropped, SPEC §4)."""
        actions: list[Action] = []
        wanted = [a for a in template.actions if applies(a, firing)]
        if not wanted:
            return None
        for act in wanted:
            made = self._actions(act, rule, patient_id, drafts)
            if isinstance(made, NotOffered):
                return NotOffered(template.label, made.reason, made.why)
            if not made:
                return None
            actions.extend(made)  # every action of a suggestion must be possible (AND semantics)
        return Suggestion(
            label=template.label,
            uuid=self.new_uuid(),
            isRecommended=template.is_recommended or None,
            actions=actions,
        )

    def _actions(
        self, act: ActionTemplate, rule: Rule, patient_id: str, drafts: list[dict[str, Any]]
    ) -> list[Action] | NotOffered:
        if act.type == "create":
            assert act.resource is not None
            values = {"patient_ref": f"Patient/{patient_id}", "today": self.today.isoformat()}
            resource = fill_resource(act.resource, values)
            return [Action(type="create", description=act.description, resource=resource)]
        out = []
        for draft in drafts:
            draft_id = draft.get("id")
            if not isinstance(draft_id, str) or not draft_id:
                continue  # an update/delete must name the draft order's own id
            if act.type == "delete":
                out.append(
                    Action(
                        type="delete", description=act.description, resourceId=f"MedicationRequest/{draft_id}"
                    )
                )
                continue
            if act.transform == "lower-weekly-dose":
                updated = lower_weekly_dose(draft, float(rule.params.get("dose_factor", 0.5)))
                if updated is None:
                    return NotOffered(
                        "",
                        "dose-unreadable",
                        "the draft's dosage timing cannot be rewritten to a lower weekly dose "
                        "(it needs one frequency per period in days, weeks or months, "
                        "without fixed weekdays, times or as-needed dosing)",
                    )
            else:
                updated = hold(draft)
            # The draft was repaired (service.cards.repair) before it got here. An invalid draft
            # may still give a valid update (hold sets a missing status, the dose change rewrites
            # text and meta): then the result itself is checked. Never send invalid FHIR back.
            if not (self._valid_draft(draft) or is_valid_fhir(updated)):
                problem = first_problem(updated) or "it is not valid FHIR R4"
                return NotOffered("", "invalid-fhir", f"the draft order cannot be sent back: {problem}")
            out.append(Action(type="update", description=act.description, resource=updated))
        if drafts and not out:
            return NotOffered("", "no-draft-id", "the draft order has no id to act on")
        return out
