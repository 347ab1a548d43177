"""Serial BMD facts (SPEC §3, bmd-decline): what may be compared, and what never is."""

from __future__ import annotations

from datetime import date
from typing import Any

from service.clinical.facts import PatientData
from service.clinical.record import PatientRecord
from service.clinical.trend import device_key, trend_facts
from service.ruleset.model import RuleSet
from tests.builders import obs

TODAY = date.today()
SPINE, HIP, HIP_LEFT, HIP_RIGHT, NECK, RADIUS, HEEL = (
    "24966-4",
    "38261-4",
    "46278-8",
    "46279-6",
    "24701-5",
    "24890-6",
    "38262-2",
)


def bmd(
    rid: str, code: str, value: float, days_ago: int, unit: str = "g/cm2", **extra: Any
) -> dict[str, Any]:
    res = obs(rid, "p1", code, value, unit, days_ago)
    res.setdefault("device", {"reference": "Device/dxa-1"})
    res.update(extra)
    return res


def facts(ruleset: RuleSet, *resources: dict[str, Any]) -> list[dict[str, Any]]:
    data = PatientData("p1", {"resourceType": "Patient", "id": "p1"}, list(resources), [], "order-sign")
    return [dict(f.fields) for f in trend_facts(PatientRecord(ruleset, data, TODAY))]


def test_no_results_is_one_fact_with_count_zero(ruleset: RuleSet) -> None:
    assert facts(ruleset) == [{"count": 0}]


def test_same_site_and_device_a_year_apart_is_compared(ruleset: RuleSet) -> None:
    [fact] = facts(ruleset, bmd("a", SPINE, 1.0, 500), bmd("b", SPINE, 0.93, 100))
    assert fact == {
        "count": 1,
        "site": "lumbar-spine",
        "side": "unstated",
        "days_apart": 400,
        "days_ago": 100,
        "change": -0.07,
        "change_pct": -7.0,
        "loss_pct": 7.0,
        "cross_calibrated": 0,
    }


def test_mg_per_cm2_is_normalised(ruleset: RuleSet) -> None:
    [fact] = facts(ruleset, bmd("a", SPINE, 1000, 500, unit="mg/cm2"), bmd("b", SPINE, 0.9, 100))
    assert fact["change"] == -0.1


def test_never_across_devices_sites_sides_or_heel(ruleset: RuleSet) -> None:
    assert facts(
        ruleset, bmd("a", SPINE, 1.0, 500), bmd("b", SPINE, 0.9, 10, device={"reference": "Device/x"})
    ) == [{"count": 0}]
    assert facts(ruleset, bmd("a", SPINE, 1.0, 500), bmd("b", HIP, 0.8, 10)) == [{"count": 0}]
    assert facts(ruleset, bmd("a", HIP_LEFT, 1.0, 500), bmd("b", HIP_RIGHT, 0.8, 10)) == [{"count": 0}]
    assert facts(ruleset, bmd("a", HEEL, 1.0, 500), bmd("b", HEEL, 0.8, 10)) == [{"count": 0}]


def test_side_comes_from_the_code_or_the_body_site(ruleset: RuleSet) -> None:
    left = {"text": "Left hip"}
    [fact] = facts(ruleset, bmd("a", HIP_LEFT, 1.0, 500), bmd("b", HIP, 0.9, 10, bodySite=left))
    assert fact["side"] == "left"
    both = {"text": "left and right hip"}
    assert facts(ruleset, bmd("a", HIP, 1.0, 500, bodySite=both), bmd("b", HIP, 0.9, 10, bodySite=both)) == [
        {"count": 0}
    ]


def test_unknown_device_is_not_compared_but_the_same_performer_is(ruleset: RuleSet) -> None:
    a, b = bmd("a", NECK, 1.0, 500), bmd("b", NECK, 0.9, 10)
    del a["device"], b["device"]
    assert facts(ruleset, a, b) == [{"count": 0}]
    a["performer"] = b["performer"] = [{"reference": "Organization/clinic"}]
    assert facts(ruleset, a, b)[0]["site"] == "femur"


def test_a_declared_cross_calibration_makes_two_devices_comparable(ruleset: RuleSet) -> None:
    old = {"identifier": {"system": "urn:osteoguard:example:dxa", "value": "hologic-discovery-1001"}}
    new = {"identifier": {"system": "urn:osteoguard:example:dxa", "value": "hologic-horizon-2002"}}
    assert device_key({"device": old}) == "urn:osteoguard:example:dxa|hologic-discovery-1001"
    [fact] = facts(ruleset, bmd("a", SPINE, 1.0, 500, device=old), bmd("b", SPINE, 0.9, 10, device=new))
    assert fact["cross_calibrated"] == 1


def test_the_newest_is_compared_with_the_latest_result_a_year_older(ruleset: RuleSet) -> None:
    [fact] = facts(
        ruleset,
        bmd("a", SPINE, 1.2, 900),
        bmd("b", SPINE, 1.0, 500),
        bmd("c", SPINE, 0.99, 300),
        bmd("d", SPINE, 0.95, 10),
    )
    assert (fact["days_apart"], fact["change"]) == (490, -0.05)
    assert facts(ruleset, bmd("a", SPINE, 1.0, 300), bmd("b", SPINE, 0.9, 10)) == [{"count": 0}]


def test_t_scores_and_unreadable_values_are_never_bmd(ruleset: RuleSet) -> None:
    assert facts(
        ruleset, bmd("a", "38267-1", -1.0, 500, unit="1"), bmd("b", "38267-1", -2.0, 10, unit="1")
    ) == [{"count": 0}]
    assert facts(ruleset, bmd("a", SPINE, -1.0, 500, unit="1"), bmd("b", SPINE, 0.9, 10)) == [{"count": 0}]


def test_an_increase_has_a_negative_loss_and_largest_loss_comes_first(ruleset: RuleSet) -> None:
    found = facts(
        ruleset,
        bmd("a", SPINE, 1.0, 500),
        bmd("b", SPINE, 1.1, 10),
        bmd("c", RADIUS, 0.7, 500),
        bmd("d", RADIUS, 0.6, 10),
    )
    assert [(f["site"], f["loss_pct"]) for f in found] == [("radius", 14.29), ("lumbar-spine", -10.0)]


def test_the_evidence_names_both_results_for_the_card_and_the_snooze(ruleset: RuleSet) -> None:
    data = PatientData(
        "p1",
        {"resourceType": "Patient", "id": "p1"},
        [bmd("a", SPINE, 1.0, 500), bmd("b", SPINE, 0.93, 100)],
        [],
        "order-sign",
    )
    [fact] = trend_facts(PatientRecord(ruleset, data, TODAY))
    evidence = fact.evidence
    assert (evidence["older"], evidence["newer"], evidence["change"], evidence["change_pct"]) == (
        "1.000 g/cm²",
        "0.930 g/cm²",
        "-0.070 g/cm²",
        "-7.0 %",
    )
    assert evidence["sources"] == "Observation/a, Observation/b"
    assert evidence["site"] == "Lumbar spine" and evidence["device"] == "the same DXA system (Device/dxa-1)"
