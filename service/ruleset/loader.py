"""Loading and validating the rule set: ``rules/ruleset.yaml`` plus one folder per rule.

Layout::

    rules/ruleset.yaml                       version, the manifest (rules:, classes:), code lists,
                                             units, shared params
    rules/classes/<class>.yaml               medication classes: RxNorm codes and names
    rules/<category>/<rule-id>/rule.yaml     one rule: links, params, variants (conditions, text), suggestions
    rules/<category>/<rule-id>/cases/*.yaml  its scenario fixtures

Only what the manifest names is read, and the folder must hold exactly that
(:mod:`service.ruleset.manifest`). ruleset.yaml and every rule.yaml end with the line ``...``
(YAML's document end) and a rule file has every key of ``RULE_KEYS``, so a file cut short that
still parses is refused. The rule id is the folder name, never typed twice.
Conditions are durable_rules JSON (``$and``/``$or``/``$lt``…); a string value ``$name`` is
replaced by the parameter ``name`` (rule ``params`` first, then ruleset ``params``), so a
threshold is written once. Every problem is reported as ``file:line: message``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from cds_hooks.vocabulary import ACTION_TYPES, SELECTION_BEHAVIORS, SelectionBehavior
from service.clinical.fhir import SYSTEM_ALIASES
from service.errors import RuleSetError
from service.ruleset.classes import load_classes
from service.ruleset.manifest import Manifest, layout_problems, read_manifest
from service.ruleset.metadata import params_used, parse_forbidden_words, parse_links
from service.ruleset.model import (
    COMPARISONS,
    DRAFT_TRANSFORMS,
    INDICATORS,
    RULE_ID,
    ActionTemplate,
    OverrideReason,
    Rule,
    RuleSet,
    SuggestionTemplate,
    Variant,
)
from service.ruleset.safety import ADVICE, advice_problems
from service.ruleset.schema import FACT_FIELDS, RULE_KEYS, TEXT_VALUES
from service.ruleset.terms import parse_terms, parse_units
from service.ruleset.yamlfile import Problems as _Problems
from service.ruleset.yamlfile import read_yaml as _read_yaml


def _code_set(spec: Any, where: tuple[Any, ...], problems: _Problems) -> frozenset[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    if not isinstance(spec, dict):
        problems.add(where, "expected a mapping of code system -> list of codes")
        return frozenset()
    for system_key, codes in spec.items():
        if system_key == "names":
            continue
        system = SYSTEM_ALIASES.get(system_key)
        if system is None:
            problems.add((*where, system_key), f"unknown code system {system_key!r}")
            continue
        if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
            problems.add((*where, system_key), "codes must be a list of quoted strings")
            continue
        pairs.update((system, c) for c in codes)
    return frozenset(pairs)


def _check_expr(
    expr: Any, kind: str | None, params: dict[str, float], where: tuple[Any, ...], problems: _Problems
) -> Any:
    """Validate one condition expression; returns it with ``$param`` strings substituted."""
    if not isinstance(expr, dict) or len(expr) != 1:
        problems.add(where, "each condition must be a mapping with exactly one key")
        return expr
    ((key, value),) = expr.items()
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            problems.add((*where, key), f"{key} needs a non-empty list")
            return expr
        return {key: [_check_expr(v, kind, params, (*where, key, i), problems) for i, v in enumerate(value)]}
    if key in COMPARISONS or key in ("$ex", "$nex"):
        if not isinstance(value, dict) or len(value) != 1:
            problems.add((*where, key), f"{key} needs one field: value")
            return expr
        ((fname, operand),) = value.items()
        _check_field(fname, kind, (*where, key), problems)
        if key in ("$ex", "$nex"):
            return {key: {fname: 1}}
        operand = _resolve(operand, params, (*where, key, fname), problems)
        return {key: {fname: operand}}
    if key.startswith("$") or key.endswith("$not"):
        problems.add(where, f"operator {key!r} is not allowed (absence is a fact with count: 0)")
        return expr
    _check_field(key, kind, where, problems)
    value = _resolve(value, params, (*where, key), problems)
    if isinstance(value, str):
        allowed = TEXT_VALUES.get(key)
        if key == "kind":
            if value not in FACT_FIELDS:
                problems.add((*where, key), f"unknown fact kind {value!r}")
        elif allowed is not None and value not in allowed:
            problems.add((*where, key), f"{key} is one of {sorted(allowed)}, not {value!r}")
    return {key: value}


def _check_field(name: str, kind: str | None, where: tuple[Any, ...], problems: _Problems) -> None:
    if name == "kind":
        return
    if kind is None:
        problems.add(where, "each alias must first constrain its fact kind, e.g. {kind: estradiol}")
    elif kind not in FACT_FIELDS:
        return  # the unknown kind itself is reported where it is named
    elif name not in FACT_FIELDS[kind]:
        problems.add(where, f"fact kind {kind!r} has no field {name!r}")


def _resolve(value: Any, params: dict[str, float], where: tuple[Any, ...], problems: _Problems) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in params:
            problems.add(where, f"unknown parameter {value!r}")
            return value
        return params[name]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        problems.add(where, "a condition value must be a number or a short text")
    return value


def alias_kind(expr: Any) -> str | None:
    """The fact kind an alias expression constrains (``{kind: x}`` at its top or in its ``$and``)."""
    if isinstance(expr, dict):
        if isinstance(expr.get("kind"), str):
            return str(expr["kind"])
        for part in expr.get("$and", []) or []:
            if isinstance(part, dict) and isinstance(part.get("kind"), str):
                return str(part["kind"])
    return None


_FORMATTER = string.Formatter()


def template_fields(text: str) -> list[str]:
    """Top-level names used as ``{name.attr}`` placeholders in a card text template."""
    names = []
    for _, field_name, _, _ in _FORMATTER.parse(text):
        if field_name:
            names.append(field_name.split(".")[0].split("[")[0])
    return names


def _only_when(
    raw: Any, where: tuple[Any, ...], problems: _Problems
) -> tuple[tuple[str, str, float | str], ...]:
    """``only_when: {alias: {field: value}}`` as (alias, field, value) triples."""
    if raw is None:
        return ()
    out: list[tuple[str, str, float | str]] = []
    if isinstance(raw, dict):
        for alias, fields in raw.items():
            if not isinstance(fields, dict) or not fields:
                break
            for name, value in fields.items():
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    break
                out.append((str(alias), str(name), value))
            else:
                continue
            break
        else:
            return tuple(out)
    problems.add(where, "only_when must map an alias to {field: number or text}")
    return ()


def _parse_suggestions(
    raw: Any, where: tuple[Any, ...], problems: _Problems
) -> tuple[SuggestionTemplate, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add(where, "suggestions must be a list")
        return ()
    out = []
    for i, item in enumerate(raw):
        here = (*where, i)
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            problems.add(here, "a suggestion needs a label")
            continue
        actions = []
        for j, act in enumerate(item.get("actions") or []):
            there = (*here, "actions", j)
            if not isinstance(act, dict) or act.get("type") not in ACTION_TYPES:
                problems.add(there, f"action type must be one of {ACTION_TYPES}")
                continue
            if not isinstance(act.get("description"), str) or not act["description"]:
                problems.add(there, "an action needs a description")
                continue
            transform = act.get("transform")
            resource = act.get("resource")
            if act["type"] == "create" and not isinstance(resource, dict):
                problems.add(there, "a create action needs a resource template")
                continue
            if act["type"] == "update" and transform not in DRAFT_TRANSFORMS:
                problems.add(there, f"an update action needs transform: one of {DRAFT_TRANSFORMS}")
                continue
            only_when = _only_when(act.get("only_when"), (*there, "only_when"), problems)
            actions.append(ActionTemplate(act["type"], act["description"], resource, transform, only_when))
        if not actions:
            problems.add(here, "a suggestion needs at least one valid action")
            continue
        acts_on_draft = any(a.type in ("update", "delete") for a in actions)
        out.append(
            SuggestionTemplate(
                label=item["label"],
                actions=tuple(actions),
                is_recommended=bool(item.get("isRecommended", False)),
                needs_draft=acts_on_draft,
                reduces_anastrozole=acts_on_draft,
            )
        )
    return tuple(out)


def _parse_rule(path: Path, shared: dict[str, float], problems: _Problems) -> Rule | None:
    data = _read_yaml(path, problems, end_marker=True)
    if data is None:
        return None
    rule_id = path.parent.name
    if not RULE_ID.match(rule_id):
        problems.add((), f"rule folder name {rule_id!r} is not a valid rule id (kebab-case)")
    if not isinstance(data, dict):
        problems.add((), "a rule file must be a mapping")
        return None
    missing = [key for key in RULE_KEYS if key not in data]
    if missing:
        problems.add((), f"missing {', '.join(map(repr, missing))}: a rule file needs {', '.join(RULE_KEYS)}")
    for key in ("title", "when", "then"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            problems.add((key,), f"missing {key!r} (plain-language statement)")
    indicator = data.get("indicator")
    if indicator not in INDICATORS:
        problems.add(("indicator",), f"indicator must be one of {INDICATORS}")
    links = parse_links(data.get("links"), problems.add)
    params = dict(shared)
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        problems.add(("params",), "params must be a mapping of name -> number")
        raw_params = {}
    for name, value in raw_params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.add(("params", name), f"parameter {name!r} must be a number")
        else:
            params[name] = value
    rule_suggestions = _parse_suggestions(data.get("suggestions"), ("suggestions",), problems)
    variants = []
    raw_variants = data.get("variants")
    if not isinstance(raw_variants, dict) or not raw_variants:
        problems.add(("variants",), "a rule needs at least one variant")
        raw_variants = {}
    for vname, vdata in raw_variants.items():
        where = ("variants", vname)
        if not isinstance(vdata, dict):
            problems.add(where, "a variant must be a mapping")
            continue
        conds = vdata.get("conditions")
        if not isinstance(conds, list) or not conds:
            problems.add((*where, "conditions"), "a variant needs a non-empty conditions list")
            continue
        compiled = []
        aliases: set[str] = set()
        for i, cond in enumerate(conds):
            if not isinstance(cond, dict) or len(cond) != 1:
                problems.add((*where, "conditions", i), "each condition is {alias: expression}")
                continue
            ((alias, expr),) = cond.items()
            if "$" in alias:
                problems.add((*where, "conditions", i), f"alias {alias!r}: $not/$ aliases are not allowed")
                continue
            kind = alias_kind(expr)
            checked = _check_expr(expr, kind, params, (*where, "conditions", i, alias), problems)
            compiled.append({alias: checked})
            aliases.add(alias)
        summary, detail = vdata.get("summary"), vdata.get("detail")
        if isinstance(detail, list) and detail and all(isinstance(part, str) for part in detail):
            # Parts (often YAML anchors shared by variants) make one Markdown text.
            detail = "\n\n".join(part.strip() for part in detail)
        if not isinstance(summary, str) or not summary:
            problems.add((*where, "summary"), "a variant needs a summary template")
            summary = ""
        if not isinstance(detail, str) or not detail:
            problems.add((*where, "detail"), "a variant needs a detail template (Markdown)")
            detail = ""
        for text, key in ((summary, "summary"), (detail, "detail")):
            try:
                for name in template_fields(text):
                    if name not in aliases and name not in ("params", "ruleset", "evidence"):
                        problems.add(
                            (*where, key), f"template uses {{{name}}}, which is not an alias of this variant"
                        )
            except ValueError as exc:
                problems.add((*where, key), f"bad template: {exc}")
        if "suggestions" in vdata:
            suggestions = _parse_suggestions(vdata["suggestions"], (*where, "suggestions"), problems)
        else:
            suggestions = rule_suggestions
        advice = vdata.get("anastrozole_advice")
        if advice is not None and advice not in ADVICE:
            problems.add((*where, "anastrozole_advice"), f"anastrozole_advice must be one of {ADVICE}")
            advice = None
        texts = [summary, detail, *(t.label for t in suggestions)]
        texts += [a.description for t in suggestions for a in t.actions]
        for message in advice_problems(advice, texts, compiled):
            problems.add((*where, "anastrozole_advice" if advice else "summary"), message)
        if advice != "dose" and any(t.reduces_anastrozole for t in suggestions):
            problems.add(
                (*where, "suggestions"),
                "a suggestion that acts on the anastrozole draft needs anastrozole_advice: dose",
            )
        own_links = parse_links(vdata["links"], problems.add, where) if "links" in vdata else ()
        variants.append(Variant(str(vname), tuple(compiled), summary, detail, suggestions, advice, own_links))
    behaviour: SelectionBehavior = "at-most-one"
    given = data.get("selectionBehavior", behaviour)
    if given in SELECTION_BEHAVIORS:
        behaviour = given
    else:
        problems.add(("selectionBehavior",), "selectionBehavior must be at-most-one or any")
    return Rule(
        id=rule_id,
        category=path.parent.parent.name,
        path=path,
        title=str(data.get("title", "")),
        when=str(data.get("when", "")),
        then=str(data.get("then", "")),
        indicator=str(indicator),
        params=params,
        variants=tuple(variants),
        selection_behavior=behaviour,
        links=links,
        param_names=params_used(data, shared),
    )


# Shared parameters the fact builder reads (windows and thresholds of the facts themselves).
REQUIRED_PARAMS = (
    "frax_before_dxa_days",
    "frax_max_age_days",
    "zoledronic_acid_current_days",
    "denosumab_current_days",
    "safety_lab_window_days",
    "vitamin_d_gate_window_days",
    "calcium_low_mg_dl",
    "calcium_ionized_low_mmol_l",
    "bmd_trend_min_interval_days",
)


def rule_files(root: Path) -> list[Path]:
    """Every ``<category>/<rule-id>/rule.yaml`` below ``root``, sorted (named or not)."""
    return sorted(root.glob("*/*/rule.yaml"))


def load_ruleset(root: Path) -> RuleSet:
    """Load and validate a rule set folder; raises RuleSetError listing every problem.

    The one definition of a loadable set: the service at start and on reload, ``rules check``,
    ``rules test``, ``explain`` and the tests all load through here.
    """
    return load_with_manifest(root)[0]


def load_with_manifest(root: Path) -> tuple[RuleSet, Manifest]:
    """:func:`load_ruleset`, also returning the manifest it was loaded against."""
    problems = _Problems()
    head_path = root / "ruleset.yaml"
    head = _read_yaml(head_path, problems, end_marker=True)
    if not isinstance(head, dict):
        if not problems.items:
            problems.items.append(f"{head_path}:1: missing or not a mapping")
        raise RuleSetError(problems.items)
    for key in (
        "name",
        "version",
        "source",
        "override_reasons",
        "usable_status",
        "observations",
        "procedures",
        "orders",
        "units",
    ):
        if key not in head:
            problems.add((), f"ruleset.yaml needs {key!r}")
    manifest = read_manifest(head, problems)
    if problems.items:
        raise RuleSetError(problems.items)
    layout = layout_problems(root, manifest)
    if layout:
        raise RuleSetError(layout)
    source = head["source"] or {}
    reasons_spec = head["override_reasons"] or {}
    reasons = tuple(
        OverrideReason(
            str(r["code"]),
            str(r["display"]),
            bool(r.get("snooze", False)),
            str(r["system"]) if r.get("system") else None,
            str(r["same_as"]) if r.get("same_as") else None,
        )
        for r in reasons_spec.get("reasons", [])
        if isinstance(r, dict) and r.get("code") and r.get("display")
    )
    if sum(r.snooze for r in reasons) != 1:
        problems.add(("override_reasons",), "exactly one override reason must have snooze: true")
    own_codes = {r.code for r in reasons if r.system is None}
    for r in reasons:
        if r.snooze and r.system is not None:
            problems.add(("override_reasons",), "the snooze reason must be in the rule set's own system")
        if r.same_as is not None and r.same_as not in own_codes:
            problems.add(("override_reasons",), f"{r.code}: same_as {r.same_as!r} is not a code of ours")
    observations = {n: _code_set(s, ("observations", n), problems) for n, s in head["observations"].items()}
    procedures = {n: _code_set(s, ("procedures", n), problems) for n, s in head["procedures"].items()}
    orders = {n: _code_set(s, ("orders", n), problems) for n, s in head["orders"].items()}
    for group, needed in (
        (observations, ("estradiol", "vitamin_d", "dxa_tscore", "dxa_bmd", "frax_hip", "frax_major")),
        (procedures, ("dxa",)),
        (orders, ("dxa", "estradiol", "vitamin_d")),
    ):
        for name in needed:
            if name not in group:
                problems.add((), f"ruleset.yaml needs the code list {name!r}")
    units = parse_units(head["units"], problems.add)
    terms = parse_terms(head, lambda spec, where: _code_set(spec, where, problems), problems.add)
    forbidden = parse_forbidden_words(head.get("forbidden_card_words"), problems.add)
    medications = load_classes(root, problems, manifest.class_files(root))
    shared_params = head.get("params") or {}
    for name in REQUIRED_PARAMS:
        if not isinstance(shared_params.get(name), int | float) or isinstance(shared_params.get(name), bool):
            problems.add(("params",), f"ruleset.yaml params needs the number {name!r}")
    rules = []
    for path in manifest.rule_files(root):
        rule = _parse_rule(path, shared_params, problems)
        if rule is not None:
            rules.append(rule)
    ids = [r.id for r in rules]
    for dup in {i for i in ids if ids.count(i) > 1}:
        problems.items.append(f"{root}:1: rule id {dup!r} is defined more than once")
    if problems.items:
        raise RuleSetError(problems.items)
    ruleset = RuleSet(
        name=str(head["name"]),
        version=str(head["version"]),
        root=root,
        source_label=str(source.get("label", "Osteoguard")),
        topic_system=str(source.get("topic_system", "urn:osteoguard:rule")),
        override_system=str(reasons_spec.get("system", "urn:osteoguard:override-reason")),
        override_reasons=reasons,
        snooze_days=int(reasons_spec.get("snooze_days", 90)),
        usable_status={k: frozenset(v) for k, v in head["usable_status"].items()},
        medications=medications,
        observations=observations,
        procedures=procedures,
        orders=orders,
        units=units,
        rules=tuple(rules),
        forbidden_words=forbidden,
        params={k: float(v) for k, v in shared_params.items() if isinstance(v, int | float)},
        terms=terms,
    )
    return ruleset, manifest
