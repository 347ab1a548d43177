"""The safety gate's reading of renal function, calcium and vitamin D (SPEC §3)."""

from __future__ import annotations

from datetime import date
from typing import Any

from service.clinical.facts import FactBuilder, PatientData
from service.ruleset.model import RuleSet
from tests.builders import obs

TODAY = date.today()


def safety(ruleset: RuleSet, *resources: dict[str, Any]) -> dict[str, Any]:
    data = PatientData("g1", {"resourceType": "Patient", "id": "g1"}, list(resources), [], "order-sign")
    facts = FactBuilder(ruleset, TODAY).build(data)
    fact = next(f for f in facts if f.kind == "safety")
    return {**fact.fields, "_evidence": fact.evidence}


def test_a_newer_unreadable_egfr_makes_renal_function_unknown(ruleset: RuleSet) -> None:
    newer = obs("egfr-new", "g1", "98979-8", 20, "mL/min/1.73m^2", 10)  # a unit we cannot read
    found = safety(ruleset, obs("egfr-old", "g1", "98979-8", 80, "mL/min/{1.73_m2}", 100), newer)
    assert found["renal_known"] == 0
    assert "Observation/egfr-new" in found["_evidence"]["renal"]


def test_an_older_unreadable_egfr_does_not_matter(ruleset: RuleSet) -> None:
    older = obs("egfr-old", "g1", "98979-8", 20, "mL/min/1.73m^2", 100)
    found = safety(ruleset, older, obs("egfr-new", "g1", "98979-8", 80, "mL/min/{1.73_m2}", 10))
    assert found["renal_known"] == 1 and found["renal_low"] == 0


def test_an_implausible_albumin_does_not_correct_a_low_calcium(ruleset: RuleSet) -> None:
    found = safety(
        ruleset,
        obs("ca", "g1", "17861-6", 6.5, "mg/dL", 10),
        obs("alb", "g1", "1751-7", 0.35, "g/dL", 10),
    )
    assert found["calcium_known"] == 1 and found["calcium_low"] == 1


def test_a_censored_egfr_above_the_threshold_is_known_safe(ruleset: RuleSet) -> None:
    egfr = obs("egfr", "g1", "98979-8", 60, "mL/min/{1.73_m2}", 10, comparator=">")
    found = safety(ruleset, egfr)
    assert found["renal_known"] == 1 and found["renal_low"] == 0 and found["renal_severe"] == 0


def test_a_censored_egfr_below_the_caution_line_is_known_severe(ruleset: RuleSet) -> None:
    found = safety(ruleset, obs("egfr", "g1", "98979-8", 15, "mL/min/{1.73_m2}", 10, comparator="<"))
    assert found["renal_known"] == 1 and found["renal_low"] == 1 and found["renal_severe"] == 1
    assert found["_evidence"]["renal_short"] == "eGFR <15 mL/min/1.73 m2"


def test_creatinine_clearance_is_named_as_such(ruleset: RuleSet) -> None:
    found = safety(ruleset, obs("crcl", "g1", "35591-7", 33, "mL/min", 10))
    assert found["_evidence"]["renal_short"] == "creatinine clearance 33 mL/min"
