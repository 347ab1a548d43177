"""Rule scenario fixtures: ``rules/<category>/<rule-id>/cases/*.yaml``.

A case is a full CDS Hooks request plus the rule ids that must and must not fire::

    title: Latest E2 8.2 pg/mL in a man on testosterone
    service: anastrozole-bone-order-sign     # optional; default: the service for request.hook
    expect: [low-estradiol]                  # these rule ids must fire
    forbid: [estradiol-monitoring]           # these must not
    suggestions:                             # optional: the labels a fired card offers, in order
      low-estradiol: [Lower the weekly anastrozole dose …, Hold anastrozole …]
    request: {...}                           # dates as "{{today-30d}}", relative to today

Dates are relative so lookback windows never rot (``{{today}}``, ``{{today-180d}}``,
``{{today+7d}}``; the token may be part of a longer string such as a dateTime).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from service.errors import ServiceError
from service.pipeline.registry import Registry
from service.ruleset.schema import Fact, Firing
from service.ruleset.yamlfile import LOADER, cut_short

Observer = Callable[[Any, list[Fact], list[Firing]], None]

_DATE_TOKEN = re.compile(r"\{\{today(?:([+-])(\d+)d)?\}\}")


def roll_dates(value: Any, today: date) -> Any:
    """Replace every ``{{today±Nd}}`` token in strings of ``value`` with an ISO date."""
    if isinstance(value, dict):
        return {k: roll_dates(v, today) for k, v in value.items()}
    if isinstance(value, list):
        return [roll_dates(v, today) for v in value]
    if isinstance(value, str) and "{{today" in value:

        def replace(match: re.Match[str]) -> str:
            sign, days = match.group(1), match.group(2)
            offset = int(days or 0) * (-1 if sign == "-" else 1)
            return (today + timedelta(days=offset)).isoformat()

        return _DATE_TOKEN.sub(replace, value)
    return value


@dataclass(frozen=True)
class Case:
    path: Path
    rule_id: str
    title: str
    expect: tuple[str, ...]
    forbid: tuple[str, ...]
    request: dict[str, Any]
    service: str | None = None
    # rule id -> the suggestion labels its card must offer, in order ([] = none)
    suggestions: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Outcome:
    case: Case
    fired: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_cases(root: Path) -> list[Case]:
    """Every case file below ``root`` (rules/<category>/<rule-id>/cases/*.yaml), sorted."""
    cases = []
    for path in sorted(root.glob("*/*/cases/*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
            if cut_short(text):
                line = text.count("\n") + 1
                raise ValueError(f"{path}:{line}: the file does not end with a line break (cut short?)")
            # libyaml's parser: the pure-Python one takes 1.7 s for the ~160 case files, this 0.7 s.
            data = yaml.load(text, Loader=LOADER)  # noqa: S506 - a safe loader
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}:1: not UTF-8 text: {exc.reason}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            raise ValueError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
            raise ValueError(f"{path}:1: a case needs a request mapping")
        expect, forbid = data.get("expect") or [], data.get("forbid") or []
        if not expect and not forbid:
            raise ValueError(f"{path}:1: a case needs expect and/or forbid rule ids")
        offered = data.get("suggestions") or {}
        if not isinstance(offered, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in offered.values()
        ):
            raise ValueError(f"{path}:1: suggestions maps a rule id to a list of suggestion labels")
        cases.append(
            Case(
                path=path,
                rule_id=path.parent.parent.name,
                title=str(data.get("title", path.stem)),
                expect=tuple(expect),
                forbid=tuple(forbid),
                request=data["request"],
                service=data.get("service"),
                suggestions={str(k): tuple(v) for k, v in offered.items()},
            )
        )
    return cases


async def run_case(case: Case, registry: Registry, observe: Observer | None = None) -> Outcome:
    """Evaluate one case through the full pipeline and compare fired rule ids.

    ``observe`` is told the call's facts and firings (``osteoguard rules test --explain``).
    """
    outcome = Outcome(case)
    request = roll_dates(case.request, registry.today())
    service = case.service or registry.service_for_hook(str(request.get("hook"))).id
    try:
        response = await registry.call(service, request, observe=observe)
    except ServiceError as exc:
        outcome.problems.append(f"request failed: {exc.status_code} {exc.message}")
        return outcome
    outcome.fired = [c.source.topic.code for c in response.cards if c.source.topic]
    known = {r.id for r in registry.ruleset.rules}
    for rule_id in [*case.expect, *case.forbid]:
        if rule_id not in known:
            outcome.problems.append(f"names unknown rule id {rule_id!r}")
    for rule_id in case.expect:
        if rule_id not in outcome.fired:
            outcome.problems.append(f"expected {rule_id} to fire")
    for rule_id in case.forbid:
        if rule_id in outcome.fired:
            outcome.problems.append(f"{rule_id} fired but is forbidden")
    cards = {c.source.topic.code: c for c in response.cards if c.source.topic}
    for rule_id, labels in case.suggestions.items():
        card = cards.get(rule_id)
        if card is None:
            outcome.problems.append(f"suggestions of {rule_id} were expected, but it did not fire")
            continue
        offered = tuple(s.label for s in card.suggestions)
        if offered != labels:
            outcome.problems.append(f"{rule_id} offers {list(offered)}, expected {list(labels)}")
    return outcome
