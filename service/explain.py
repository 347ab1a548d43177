"""``osteoguard explain``: why each rule did or did not fire, from the conditions the engine ran.

The pipeline runs exactly as for ``evaluate`` (one call of :meth:`Registry.call`, one engine
session); an observer receives the facts it derived and the engine's firings. This module then
reads each variant's conditions from the rule set that call was served with
(:attr:`Variant.conditions`, the engine-ready conditions with parameters filled in) and
evaluates them over the same facts with a small evaluator of the rule-file condition language:
``$and``, ``$or``, ``$lt``, ``$lte``, ``$gt``, ``$gte``, ``$neq``, ``$ex``, ``$nex``, and
equality. A field a fact does not have fails every test but ``$nex``, as in durable_rules.

The evaluator explains; the engine decides. Both verdicts are reported for every variant
(``fires`` and ``engine_fired``), and a test holds them equal on every scenario case, so an
explanation can never quietly describe different logic from the one that ran.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_hooks.models import Card, to_json_dict
from service.ruleset.loader import alias_kind
from service.ruleset.model import RuleSet
from service.ruleset.schema import Fact, Firing

_SYMBOLS = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">=", "$neq": "!="}
# FHIR references inside evidence texts: where a fact came from.
_REFERENCE = re.compile(
    r"\b(?:Observation|Procedure|MedicationRequest|MedicationStatement|ServiceRequest|Medication)"
    r"/[A-Za-z0-9\-.]{1,64}"
)
ABSENT = "absent"


@dataclass(frozen=True)
class Check:
    """One test of a condition, or a group (``all of`` / ``any of``), with its verdict."""

    test: str  # "sex = male", "all of", "any of"
    holds: bool
    field: str | None = None
    actual: Any = None  # the fact's value; None when the fact has no such field
    parts: tuple[Check, ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"test": self.test, "holds": self.holds}
        if self.field is not None:
            out["field"] = self.field
            out["actual"] = self.actual
        if self.parts:
            out["parts"] = [p.as_json() for p in self.parts]
        return out


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    numeric = isinstance(actual, int | float) and isinstance(expected, int | float)
    if op == "$neq":
        return bool(actual != expected)
    if not numeric:
        return False  # durable_rules compares numbers here; our facts are typed
    if op == "$lt":
        return bool(actual < expected)
    if op == "$lte":
        return bool(actual <= expected)
    if op == "$gt":
        return bool(actual > expected)
    return bool(actual >= expected)


def check(expr: Mapping[str, Any], fields: Mapping[str, Any]) -> Check:
    """Evaluate one condition expression of a rule file over a fact's fields (``kind`` included)."""
    ((key, value),) = expr.items()
    if key in ("$and", "$or"):
        parts = tuple(check(part, fields) for part in value)
        holds = all(p.holds for p in parts) if key == "$and" else any(p.holds for p in parts)
        return Check("all of" if key == "$and" else "any of", holds, parts=parts)
    if key in ("$ex", "$nex"):
        ((name, _),) = value.items()
        actual = fields.get(name)
        present = actual is not None
        test = f"{name} is {'present' if key == '$ex' else 'absent'}"
        return Check(test, present if key == "$ex" else not present, name, actual)
    if key in _SYMBOLS:
        ((name, expected),) = value.items()
        actual = fields.get(name)
        return Check(
            f"{name} {_SYMBOLS[key]} {_show(expected)}", _compare(key, actual, expected), name, actual
        )
    actual = fields.get(key)
    return Check(f"{key} = {_show(value)}", actual is not None and actual == value, key, actual)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # quoted: comparator = "=" reads as text
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Candidate:
    fact: int  # index into the facts
    check: Check


@dataclass(frozen=True)
class AliasView:
    alias: str
    kind: str | None
    holds: bool
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class VariantView:
    name: str
    fires: bool  # by this module's reading of the conditions
    engine_fired: bool  # by durable_rules, in the same call
    conditions: tuple[AliasView, ...]


@dataclass(frozen=True)
class RuleView:
    id: str
    title: str
    variants: tuple[VariantView, ...]

    @property
    def fired(self) -> bool:
        return any(v.engine_fired for v in self.variants)


def explain_variants(ruleset: RuleSet, facts: list[Fact], firings: list[Firing]) -> list[RuleView]:
    """Every rule and variant of ``ruleset``, its conditions evaluated over ``facts``."""
    fired = {(f.rule_id, f.variant) for f in firings}
    views = []
    for rule in ruleset.rules:
        variants = []
        for variant in rule.variants:
            aliases = []
            for condition in variant.conditions:
                ((alias, expr),) = condition.items()
                kind = alias_kind(expr)
                candidates = tuple(
                    Candidate(i, check(expr, {**fact.fields, "kind": fact.kind}))
                    for i, fact in enumerate(facts)
                    if fact.kind == kind
                )
                aliases.append(AliasView(alias, kind, any(c.check.holds for c in candidates), candidates))
            variants.append(
                VariantView(
                    variant.name,
                    all(a.holds for a in aliases),
                    (rule.id, variant.name) in fired,
                    tuple(aliases),
                )
            )
        views.append(RuleView(rule.id, rule.title, tuple(variants)))
    return views


def sources(fact: Fact) -> list[str]:
    """The FHIR resources a fact was read from, as named in its evidence."""
    found: set[str] = set()
    for value in fact.evidence.values():
        if isinstance(value, str):
            found.update(_REFERENCE.findall(value))
    return sorted(found)


@dataclass
class Explanation:
    """What ``osteoguard explain`` reports for one call."""

    service: str
    hook: str
    today: date
    ruleset: str
    outcome: str = "evaluated"  # or why no rule ran
    patient_ref: str | None = None
    facts: list[Fact] = field(default_factory=list)
    rules: list[RuleView] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)

    def observe(self, call: Any, facts: list[Fact], firings: list[Firing]) -> None:
        """The observer :meth:`Registry.call` calls once the engine has run."""
        self.facts = list(facts)
        self.rules = explain_variants(call.served.ruleset, self.facts, firings)
        self.patient_ref = f"Patient/{call.context.patient_id}"

    def only(self, rule_id: str) -> None:
        self.rules = [r for r in self.rules if r.id == rule_id]
        self.cards = [c for c in self.cards if c.source.topic and c.source.topic.code == rule_id]

    def disagreements(self) -> list[str]:
        """Variants where this reading and the engine differ (never, the tests say)."""
        return [f"{r.id}/{v.name}" for r in self.rules for v in r.variants if v.fires != v.engine_fired]

    # ---- output ---------------------------------------------------------------------------
    def as_json(self, *, identifying: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.service,
            "hook": self.hook,
            "today": self.today.isoformat(),
            "ruleset": self.ruleset,
            "outcome": self.outcome,
            "facts": [
                {"fact": i, "kind": f.kind, "fields": dict(f.fields)}
                | ({"sources": self._sources(i, f)} if identifying else {})
                for i, f in enumerate(self.facts)
            ],
            "rules": [
                {
                    "id": r.id,
                    "fired": r.fired,
                    "variants": [
                        {
                            "name": v.name,
                            "fires": v.fires,
                            "engine_fired": v.engine_fired,
                            "conditions": [
                                {
                                    "alias": a.alias,
                                    "kind": a.kind,
                                    "holds": a.holds,
                                    "facts": [{"fact": c.fact} | c.check.as_json() for c in a.candidates],
                                }
                                for a in v.conditions
                            ],
                        }
                        for v in r.variants
                    ],
                }
                for r in self.rules
            ],
        }
        if identifying:
            out["cards"] = [to_json_dict(c) for c in self.cards]
        else:
            out["cards"] = [{"rule": _rule_of(c), "indicator": str(c.indicator.value)} for c in self.cards]
        return out

    def _sources(self, index: int, fact: Fact) -> list[str]:
        found = sources(fact)
        if index == 0 and fact.kind == "context" and self.patient_ref:
            found.insert(0, self.patient_ref)
        return found

    def render(self, *, identifying: bool = True) -> str:
        """Human-readable: the facts, then every rule and variant, then the cards."""
        lines = [f"{self.service} ({self.hook}), as of {self.today.isoformat()}, rule set {self.ruleset}"]
        if self.outcome != "evaluated":
            lines.append(f"No rule was evaluated: {self.outcome}.")
        if self.facts:
            lines += ["", "Facts (what the rules were given)"]
            for i, fact in enumerate(self.facts):
                shown = " ".join(f"{k}={_show(v)}" for k, v in fact.fields.items())
                lines.append(f"  #{i} {fact.kind}: {shown}")
                if identifying:
                    found = self._sources(i, fact)
                    lines.append(f"      from: {', '.join(found) if found else 'no FHIR resource (absence)'}")
        for rule in self.rules:
            winner = next((v.name for v in rule.variants if v.engine_fired), None)
            verdict = f"FIRED (variant {winner})" if winner else "did not fire"
            lines += ["", f"Rule {rule.id}: {verdict}"]
            for v in rule.variants:
                mark = "fires" if v.fires else "does not fire"
                if v.fires != v.engine_fired:
                    mark += f" (but the engine {'fired' if v.engine_fired else 'did not fire'} it)"
                lines.append(f"  variant {v.name}: {mark}")
                for a in v.conditions:
                    lines.append(f"    {a.alias} ({a.kind}): {'true' if a.holds else 'false'}")
                    if not a.candidates:
                        lines.append(f"      no {a.kind} fact was asserted")
                    for c in a.candidates:
                        lines.append(f"      fact #{c.fact}:")
                        lines += _tree(c.check, 8)
        lines += ["", "Cards"]
        if not self.cards:
            lines.append("  none")
        for card in self.cards:
            text = f": {card.summary}" if identifying else ""
            lines.append(f"  [{card.indicator.value}] {_rule_of(card)}{text}")
        return "\n".join(lines) + "\n"


def _rule_of(card: Card) -> str:
    return card.source.topic.code if card.source.topic else "?"


def _tree(node: Check, indent: int) -> list[str]:
    pad = " " * indent
    mark = "true " if node.holds else "false"
    if node.parts:
        lines = [f"{pad}{mark} {node.test}:"]
        for part in node.parts:
            lines += _tree(part, indent + 2)
        return lines
    actual = ABSENT if node.actual is None else _show(node.actual)
    return [f"{pad}{mark} {node.test}  (fact: {actual})"]
