"""Turning firings into CDS Hooks cards: the single place every card is built.

Card text and suggestion templates come from the rule files; this module fills them with
the evidence of the facts a rule matched and stamps the rule's metadata (source, topic,
rule-set version, override reasons) onto every card.

Two safety invariants are enforced here, in code, whatever the rule files say:

* a suggestion that lowers, holds or stops anastrozole is offered only for a male patient
  (in breast cancer, low estradiol is the goal);
* such a suggestion needs an anastrozole draft order to act on (none in patient-view).
"""

from __future__ import annotations

import copy
import functools
import math
import re
import string
import uuid
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds_hooks.models import Action, Card, Coding, Indicator, Source, Suggestion
from service.engine import Fact, Firing
from service.facts import ACTION_TAG_SYSTEM, DOSE_LOWERED, fmt_number
from service.ruleset import MAX_SUMMARY, ActionTemplate, Rule, RuleSet, SuggestionTemplate, Variant


class _Namespace(dict[str, Any]):
    """Dict whose keys are readable as attributes in ``{alias.field}`` templates."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class _SafeFormatter(string.Formatter):
    """str.format without attribute access to private names (rule files are data, not code)."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if any(part.startswith("_") for part in re.split(r"[.\[\]]", field_name)):
            raise ValueError(f"placeholder {field_name!r} is not allowed")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, float) and not format_spec:
            return fmt_number(value)
        return super().format_field(value, format_spec)


_FORMAT = _SafeFormatter()


_Piece = tuple[str, tuple[str, ...] | None, str | None, str]


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> tuple[_Piece, ...] | None:
    """A template split once into (literal, field path, conversion, format spec) pieces.

    ``string.Formatter`` re-parses the text on every call in pure Python; card texts are a
    fixed set per rule set, so each is parsed once. None when a placeholder needs what only
    the formatter does (indexing, positional or nested fields): those go the slow way.
    """
    pieces: list[_Piece] = []
    for literal, field_name, spec, conversion in _FORMAT.parse(text):
        if field_name is None:
            pieces.append((literal, None, None, ""))
            continue
        path = tuple(field_name.split("."))
        if "[" in field_name or "{" in (spec or "") or not all(path) or path[0].isdigit():
            return None
        if any(part.startswith("_") for part in path):
            return None  # the formatter raises the error that names the placeholder
        pieces.append((literal, path, conversion, spec or ""))
    return tuple(pieces)


def _attribute(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        try:
            return value[name]
        except KeyError as exc:
            raise AttributeError(name) from exc
    return getattr(value, name)


def render(text: str, values: Mapping[str, Any]) -> str:
    """Fill a card text template. Unknown placeholders raise KeyError/AttributeError."""
    pieces = _compile(text)
    if pieces is None:
        return _FORMAT.vformat(text, (), values)
    out = []
    for literal, path, conversion, spec in pieces:
        out.append(literal)
        if path is None:
            continue
        value = values[path[0]]
        for name in path[1:]:
            value = _attribute(value, name)
        if conversion:
            value = _FORMAT.convert_field(value, conversion)
        out.append(_FORMAT.format_field(value, spec))
    return "".join(out)


_LEAVES = (str, int, float)


def _ns(mapping: Mapping[str, Any]) -> _Namespace:
    # Leaves are checked first: isinstance against the Mapping ABC is slow for every str.
    return _Namespace(
        {k: v if isinstance(v, _LEAVES) or not isinstance(v, Mapping) else _ns(v) for k, v in mapping.items()}
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def markdown_text(value: str) -> str:
    """Client-supplied text made inert in GitHub-flavoured Markdown (no links, HTML, emphasis)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", value))


def _escaped(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: markdown_text(v) if isinstance(v, str) else _escaped(v) if isinstance(v, Mapping) else v
        for k, v in mapping.items()
    }


def template_values(
    rule: Rule, ruleset: RuleSet, matched: Mapping[str, Fact], *, markdown: bool = False
) -> dict[str, Any]:
    """What a rule's card templates can refer to: matched aliases, params, rule-set info.

    With ``markdown``, evidence strings (which come from the client's FHIR data) are escaped.
    """
    values: dict[str, Any] = {
        alias: _ns(_escaped(fact.evidence) if markdown else fact.evidence) for alias, fact in matched.items()
    }
    values["params"] = _ns({k: fmt_number(v) if isinstance(v, float) else v for k, v in rule.params.items()})
    values["ruleset"] = _ns({"name": ruleset.name, "version": ruleset.version})
    return values


def _fill(template: Any, values: Mapping[str, str]) -> Any:
    """Substitute ``{patient_ref}``-style placeholders in every string of a resource template."""
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, str) and "{" in template:
        return render(template, values)
    return template


_WEEKS = {"d": 1 / 7, "wk": 1.0, "mo": 30.4375 / 7, "a": 365.25 / 7, "h": 1 / 168}
# Timing details the transform cannot rewrite consistently (fixed weekdays, events, ranges,
# a total count, PRN): with any of them present it offers no dose change rather than a
# contradictory one.
_UNSAFE_REPEAT = ("dayOfWeek", "timeOfDay", "when", "frequencyMax", "periodMax", "count", "countMax")
_UNSAFE_TIMING = ("event", "code")
_UNSAFE_DOSAGE = ("asNeededBoolean", "asNeededCodeableConcept", "maxDosePerPeriod")


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


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
        frequency = repeat.get("frequency", 1)
        period = repeat.get("period")
        unit = repeat.get("periodUnit")
        if not (isinstance(frequency, int) and _positive(frequency) and _positive(period)):
            return None
        if frequency > 100 or period > 1000:
            return None  # not a real anastrozole schedule
        if not isinstance(unit, str) or unit not in _WEEKS:
            return None
        before = frequency / (period * _WEEKS[unit])
        new_frequency = frequency * factor
        if new_frequency >= 1 and math.isclose(new_frequency, round(new_frequency)):
            repeat["frequency"] = int(round(new_frequency))
        else:
            repeat["frequency"] = frequency
            new_period = period / factor
            if not math.isfinite(new_period) or new_period > 1000:
                return None  # a factor so small the schedule stops being one
            repeat["period"] = int(new_period) if float(new_period).is_integer() else new_period
        after = repeat["frequency"] / (repeat["period"] * _WEEKS[unit])
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


class CardBuilder:
    """Builds the cards of one evaluation."""

    def __init__(
        self,
        ruleset: RuleSet,
        today: date,
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.rs = ruleset
        self.today = today
        self.new_uuid = new_uuid
        self._draft_valid: dict[int, bool] = {}

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
            cards.append(self._card(rule, variant, firing, patient_id, sex, drafts))
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
    ) -> Card:
        summary = " ".join(render(variant.summary, template_values(rule, self.rs, firing.matched)).split())
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1].rstrip() + "…"
        detail = render(variant.detail, template_values(rule, self.rs, firing.matched, markdown=True)).strip()
        detail += f"\n\n---\n_Rule `{rule.id}` ({rule.title}), rule set {self.rs.name} {self.rs.version}._"
        suggestions = []
        for template in variant.suggestions:
            if template.reduces_anastrozole and sex != "male":
                continue  # safety invariant: never lower/hold/stop anastrozole unless male
            if template.needs_draft and not drafts:
                continue
            suggestion = self._suggestion(template, rule, patient_id, drafts)
            if suggestion is not None:
                suggestions.append(suggestion)
        indicator = Indicator(rule.indicator)
        override = []
        if indicator != Indicator.info:
            override = [
                Coding(system=self.rs.override_system, code=r.code, display=r.display)
                for r in self.rs.override_reasons
            ]
        return Card(
            uuid=self.new_uuid(),
            summary=summary,
            detail=detail,
            indicator=indicator,
            source=Source(
                label=self.rs.source_label,
                topic=Coding(system=self.rs.topic_system, code=rule.id, display=rule.title),
            ),
            suggestions=suggestions,
            selectionBehavior=rule.selection_behavior if suggestions else None,
            overrideReasons=override,
        )

    def _suggestion(
        self,
        template: SuggestionTemplate,
        rule: Rule,
        patient_id: str,
        drafts: list[dict[str, Any]],
    ) -> Suggestion | None:
        actions: list[Action] = []
        for act in template.actions:
            made = self._actions(act, rule, patient_id, drafts)
            if not made:
                return None  # every action of a suggestion must be possible (AND semantics)
            actions.extend(made)
        return Suggestion(
            label=template.label,
            uuid=self.new_uuid(),
            isRecommended=template.is_recommended or None,
            actions=actions,
        )

    def _actions(
        self, act: ActionTemplate, rule: Rule, patient_id: str, drafts: list[dict[str, Any]]
    ) -> list[Action]:
        if act.type == "create":
            assert act.resource is not None
            values = {"patient_ref": f"Patient/{patient_id}", "today": self.today.isoformat()}
            resource = _fill(act.resource, values)
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
            else:
                updated = hold(draft)
            # An invalid draft may still give a valid update (hold sets a missing status, the
            # dose change rewrites text and meta): then the result itself is checked. Never
            # send invalid FHIR back.
            if updated is None or not (self._valid_draft(draft) or is_valid_fhir(updated)):
                return []
            out.append(Action(type="update", description=act.description, resource=updated))
        return out
