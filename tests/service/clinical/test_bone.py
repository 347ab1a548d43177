"""Bone density: central sites, the latest DXA visit, and which results decide."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from service.clinical.facts import FactBuilder, PatientData
from service.ruleset.model import RuleSet
from tests.builders import obs

TODAY = date.today()


def bone(ruleset: RuleSet, *resources: dict[str, Any]) -> dict[str, Any]:
    data = PatientData("b1", {"resourceType": "Patient", "id": "b1"}, list(resources), [], "order-sign")
    return dict(FactBuilder(ruleset, TODAY).bone(data).fields)


def test_one_visit_spanning_midnight_utc_is_one_dxa_day(ruleset: RuleSet) -> None:
    visit = (TODAY - timedelta(days=30)).isoformat()
    spine = obs("spine", "b1", "38267-1", -2.6, "{T-score}", 30)
    spine["effectiveDateTime"] = f"{visit}T15:00:00-08:00"
    hip = obs("hip", "b1", "38264-8", -1.2, "{T-score}", 30)
    hip["effectiveDateTime"] = f"{visit}T18:00:00-08:00"  # the next day in UTC
    assert bone(ruleset, spine, hip)["tscore"] == -2.6


def test_a_radius_total_result_is_not_the_one_third_radius(ruleset: RuleSet) -> None:
    forearm = obs("fa", "b1", "38265-5", -3.0, "{T-score}", 30)
    forearm["bodySite"] = {"text": "Radius Total"}
    assert "tscore" not in bone(ruleset, forearm)


def test_a_radius_33_percent_result_is_central(ruleset: RuleSet) -> None:
    forearm = obs("fa", "b1", "38265-5", -3.0, "{T-score}", 30)
    forearm["bodySite"] = {"text": "Radius 33%"}
    assert bone(ruleset, forearm)["tscore"] == -3.0
