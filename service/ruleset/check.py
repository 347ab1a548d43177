"""What makes a rule set acceptable: one definition, for ``osteoguard rules check`` and reload.

:func:`assess` is the only judge. Beyond what loading validates (the manifest and the folder,
structure, operators, fact fields, parameters), it renders every card template with sample
evidence (summary must stay under 140 characters), validates every suggestion resource
template as FHIR R4, looks for this project's internal words in text clinicians read
(:mod:`service.ruleset.wording`), compiles the rule set in the engine, checks that every rule
has scenario cases that expect it and cases that forbid it, and runs every case against the
new engine (what ``osteoguard rules test`` runs). A set without its cases (the chart's
ConfigMap leaves them out) is judged on everything else. ``rules check`` exits non-zero on
any problem; a reload refuses the set on any problem, with the same messages.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from service.cards.drafts import is_valid_fhir
from service.cards.text import fill_resource, render, template_values
from service.engine.adapter import RuleEngine
from service.errors import RuleSetError, ServiceError
from service.pipeline.registry import Registry
from service.ruleset.loader import alias_kind, load_with_manifest
from service.ruleset.manifest import carries_cases
from service.ruleset.model import MAX_SUMMARY, RuleSet
from service.ruleset.scenarios import Case, load_cases, run_case
from service.ruleset.schema import Fact
from service.ruleset.wording import check_wording

# Long but realistic evidence values, so templates are checked against their widest output.
SAMPLE_EVIDENCE: dict[str, dict[str, Any]] = {
    "context": {
        "sex": "male",
        "gender": "male",
        "age": "104 years",
        "testosterone": "MedicationRequest/testosterone-0001, MedicationStatement/testosterone-0002",
        "trt_started": "2026-11-28",
    },
    "estradiol": {
        "count": 3,
        "text": "<36.71 pmol/L (10.001 pg/mL)",
        "value": "<10.001",
        "unit": "pg/mL",
        "date": "2026-11-28",
        "days_ago": 1234,
        "source": "Observation/e2-result-0001",
        "name": "Estradiol (E2) [Moles/volume] in Serum or Plasma",
        "censored": "yes",
        "latest": "<36.71 pmol/L (10.001 pg/mL) on 2026-11-28 (Observation/e2-result-0001)",
        "assay": "method not stated",
        "newer_unread": (
            "a newer result on 2026-11-29 (Observation/e2-result-0002) could not be read as a value"
        ),
    },
    "testosterone": {
        "count": 2,
        "text": "17.34 nmol/L (500.085 ng/dL)",
        "value": "500.085",
        "unit": "ng/dL",
        "date": "2026-11-28",
        "days_ago": 1234,
        "source": "Observation/testosterone-0001",
        "name": "Testosterone [Mass/volume] in Serum or Plasma",
        "censored": "no",
        "latest": "17.34 nmol/L (500.085 ng/dL) on 2026-11-28 (Observation/testosterone-0001)",
        "assay": "",
        "newer_unread": "none",
    },
    "safety": {
        "renal": "creatinine clearance 34.999 mL/min on 2026-11-28 (Observation/crcl-result-0001)",
        "egfr": "34.999",
        "renal_short": "creatinine clearance <34.999 mL/min",
        "calcium": (
            "serum calcium 8.499 mg/dL on 2026-11-28 (Observation/calcium-0001), albumin-corrected "
            "8.899 mg/dL (albumin 3.499 g/dL the same day), low below 8.5 mg/dL"
        ),
        "vitamin_d": "no 25-OH vitamin D within 365 days",
        "unknown": "eGFR or creatinine clearance, serum calcium, 25-OH vitamin D",
        "labs": "no eGFR or creatinine clearance within 180 days; no serum calcium within 180 days; "
        "no 25-OH vitamin D within 365 days",
    },
    "vitamin_d": {
        "count": 2,
        "text": "74.87 nmol/L (29.996 ng/mL)",
        "value": "29.996",
        "unit": "ng/mL",
        "date": "2026-11-28",
        "days_ago": 1234,
        "source": "Observation/vitd-result-0001",
        "name": "25-hydroxyvitamin D3 [Mass/volume]",
        "censored": "no",
        "latest": "74.87 nmol/L (29.996 ng/mL) on 2026-11-28 (Observation/vitd-result-0001)",
        "assay": "",
        "newer_unread": "none",
    },
    "dxa": {
        "count": 2,
        "date": "2026-11-28",
        "days_ago": 1234,
        "source": "Procedure/dxa-0001",
        "name": "DXA Lumbar spine [T-score] Bone density",
    },
    "bone": {
        "count": 4,
        "tscore": "-2.55",
        "zscore": "-2.05",
        "tscore_site": "DXA Femur - left [T-score] Bone density",
        "zscore_site": "DXA Radius and Ulna - left [Z-score] Bone density",
        "tscore_source": "Observation/tscore-0001",
        "zscore_source": "Observation/zscore-0001",
        "site": "DXA Femur - left [T-score] Bone density",
        "date": "2026-11-28",
        "days_ago": 1234,
        "source": "Observation/tscore-0001",
        "frax_hip": "12.5 %",
        "frax_major": "25.5 %",
        "frax": (
            "hip 12.5 % (2026-11-28, Observation/frax-1); "
            "major osteoporotic 25.5 % (2026-11-28, Observation/frax-2)"
        ),
    },
    "bmd_trend": {
        "count": 1,
        "site": "Femoral neck, right",
        "site_display": "DXA Hip - right [Mass/Area] Bone density",
        "older": "1.2345 g/cm²",
        "older_date": "2026-11-28",
        "older_source": "Observation/bmd-result-0001",
        "newer": "1.1234 g/cm²",
        "newer_date": "2026-11-29",
        "newer_source": "Observation/bmd-result-0002",
        "source": "Observation/bmd-result-0002",
        "sources": "Observation/bmd-result-0001, Observation/bmd-result-0002",
        "value": "1.235 to 1.123 g/cm²",
        "date": "2026-11-28 to 2026-11-29",
        "change": "-0.1111 g/cm²",
        "change_pct": "-10.55 %",
        "loss_pct": "10.55",
        "days_apart": 1234,
        "months_apart": "40.5",
        "device": (
            "two cross-calibrated DXA systems (urn:example:dxa|scanner-0001, "
            "then urn:example:dxa|scanner-0002)"
        ),
    },
}


def alias_kinds(conditions: tuple[dict[str, Any], ...]) -> dict[str, str]:
    kinds = {}
    for cond in conditions:
        ((alias, expr),) = cond.items()
        kind = alias_kind(expr)
        if kind is not None:
            kinds[alias] = kind
    return kinds


def check_templates(ruleset: RuleSet) -> list[str]:
    problems = []
    for rule in ruleset.rules:
        for variant in rule.variants:
            where = f"{rule.path}:1: variant {variant.name!r}"
            matched = {
                alias: Fact(kind, {}, SAMPLE_EVIDENCE[kind])
                for alias, kind in alias_kinds(variant.conditions).items()
            }
            values = template_values(rule, ruleset, matched)
            for key, text in (("summary", variant.summary), ("detail", variant.detail)):
                try:
                    rendered = " ".join(render(text, values).split())
                except (KeyError, AttributeError, ValueError, IndexError) as exc:
                    problems.append(f"{where}: {key} template cannot be filled: {exc!r}")
                    continue
                if key == "summary" and len(rendered) > MAX_SUMMARY:
                    problems.append(
                        f"{where}: summary can reach {len(rendered)} characters (max {MAX_SUMMARY})"
                    )
            for suggestion in variant.suggestions:
                for action in suggestion.actions:
                    if action.resource is None:
                        continue
                    try:
                        resource = fill_resource(
                            action.resource,
                            {"patient_ref": "Patient/example", "today": date.today().isoformat()},
                        )
                    except (KeyError, AttributeError, ValueError, IndexError) as exc:
                        problems.append(f"{where}: suggestion {suggestion.label!r}: {exc!r}")
                        continue
                    if not is_valid_fhir(resource):
                        problems.append(
                            f"{where}: suggestion {suggestion.label!r} is not a valid FHIR R4 "
                            f"{resource.get('resourceType')}"
                        )
    return problems


def check_cases(ruleset: RuleSet, cases: list[Case] | None = None) -> list[str]:
    """Every rule has cases expecting and forbidding it; no case names an unknown rule."""
    if cases is None:
        try:
            cases = load_cases(ruleset.root)
        except (ValueError, OSError) as exc:
            return [str(exc)]
    problems = [
        f"{path}:1: a case file must end in .yaml (a .yml or .json file here would never run)"
        for path in sorted(ruleset.root.glob("*/*/cases/*"))
        if path.suffix != ".yaml"
    ]
    for rule in ruleset.rules:
        mine = [c for c in cases if c.rule_id == rule.id]
        if not any(rule.id in c.expect for c in mine):
            problems.append(f"{rule.path}:1: no scenario case expects {rule.id} to fire")
        if not any(rule.id in c.forbid for c in mine):
            problems.append(f"{rule.path}:1: no scenario case forbids {rule.id} (must-not-fire)")
    known = {r.id for r in ruleset.rules}
    for case in cases:
        for rule_id in (*case.expect, *case.forbid):
            if rule_id not in known:
                problems.append(f"{case.path}:1: names unknown rule id {rule_id!r}")
    return problems


@dataclass
class Verdict:
    """What :func:`assess` found: the set and its compiled engine, or the problems."""

    ruleset: RuleSet | None
    engine: RuleEngine | None  # compiled; the caller installs or closes it
    problems: list[str] = field(default_factory=list)
    cases: int = 0  # scenario cases run

    @property
    def ok(self) -> bool:
        return not self.problems and self.engine is not None


async def _run_cases(cases: list[Case], registry: Registry) -> list[str]:
    problems = []
    for case in cases:
        outcome = await run_case(case, registry)
        problems += [f"{case.path}:1: {problem}" for problem in outcome.problems]
    return problems


def assess(root: Path) -> Verdict:
    """Judge the rule set at ``root``; runs in a thread of its own (it runs an event loop)."""
    try:
        ruleset, manifest = load_with_manifest(root)
    except RuleSetError as exc:
        return Verdict(None, None, exc.problems)
    problems = check_templates(ruleset) + check_wording(ruleset)
    cases: list[Case] = []
    if carries_cases(root, manifest):
        try:
            cases = load_cases(root)
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
        else:
            problems += check_cases(ruleset, cases)
    try:
        engine = RuleEngine(ruleset)
    except ServiceError as exc:
        return Verdict(ruleset, None, [*problems, f"{root}:1: {exc.message}"])
    verdict = Verdict(ruleset, engine, problems, len(cases))
    if cases and not problems:
        verdict.problems += asyncio.run(_run_cases(cases, Registry(ruleset, engine)))
    if verdict.problems:
        engine.close()
        verdict.engine = None
    return verdict


def check(root: Path) -> tuple[RuleSet | None, list[str]]:
    """All problems of the rule set at ``root`` (empty when it is good to deploy)."""
    verdict = assess(root)
    if verdict.engine is not None:
        verdict.engine.close()
    return verdict.ruleset, verdict.problems
