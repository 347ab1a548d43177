"""Every scenario case beside every rule, through the HTTP app, checked for spec conformance."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_hooks.fhir import bundle_resources
from service.app import create_app
from service.pipeline.registry import utc_today
from service.ruleset.check import check, check_cases
from service.ruleset.model import RuleSet
from service.ruleset.scenarios import Case, load_cases, roll_dates
from service.settings import PACKAGED_RULES_DIR
from tests.builders import SERVICE_FOR_HOOK
from tests.conformance import check_response
from tests.conftest import make_settings

CASES = load_cases(PACKAGED_RULES_DIR)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path_factory.mktemp("scenarios")))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule_id}/{c.path.stem}" for c in CASES])
def test_scenario(case: Case, http: TestClient) -> None:
    request = roll_dates(case.request, utc_today())
    service = case.service or SERVICE_FOR_HOOK[request["hook"]]
    response = http.post(f"/cds-services/{service}", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    fired = [card["source"]["topic"]["code"] for card in body["cards"]]
    for rule_id in case.expect:
        assert rule_id in fired, f"{case.path}: expected {rule_id}; fired {fired}"
    for rule_id in case.forbid:
        assert rule_id not in fired, f"{case.path}: {rule_id} must not fire; fired {fired}"
    # The orders an update may act on: the drafts, or (medication-refill) the refilled orders.
    acted_on = request["context"].get("draftOrders") or request["context"].get("medications")
    drafts = {
        str(r.get("id")) for r in bundle_resources(acted_on) if r.get("resourceType") == "MedicationRequest"
    }
    problems = check_response(body, patient_id=request["context"]["patientId"], draft_ids=drafts)
    assert problems == []


def test_every_rule_has_cases_that_expect_and_forbid_it(ruleset: RuleSet) -> None:
    assert check_cases(ruleset) == []


def test_packaged_rule_set_checks_clean() -> None:
    _, problems = check(PACKAGED_RULES_DIR)
    assert problems == []


def test_there_are_enough_scenarios_per_rule(ruleset: RuleSet) -> None:
    for rule in ruleset.rules:
        assert sum(c.rule_id == rule.id for c in CASES) >= 3, rule.id


def test_case_dates_roll_relative_to_today() -> None:
    rolled = roll_dates({"a": ["{{today-180d}}T10:00:00Z", "{{today}}", "{{today+2d}}"]}, date(2026, 3, 1))
    assert rolled == {"a": ["2025-09-02T10:00:00Z", "2026-03-01", "2026-03-03"]}


def test_a_case_file_with_another_extension_fails_the_rule_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, rules)
    stray = rules / "monitoring" / "vitamin-d" / "cases" / "forgotten.yml"
    stray.write_text("title: never run\n", encoding="utf-8")
    _, problems = check(rules)
    assert [p for p in problems if p.startswith(f"{stray}:")] != []


def test_the_conformance_check_wants_links_and_the_rule_page(http: TestClient) -> None:
    case = next(c for c in CASES if c.rule_id == "low-estradiol" and "low-estradiol" in c.expect)
    request = roll_dates(case.request, utc_today())
    body = http.post(f"/cds-services/{SERVICE_FOR_HOOK[request['hook']]}", json=request).json()
    card = body["cards"][0]
    card["links"] = [{"label": "a source", "url": "http://example.org/a", "type": "absolute"}]
    card["source"]["url"] = "/docs/rules/" + card["source"]["topic"]["code"]
    problems = check_response(body, patient_id=request["context"]["patientId"], draft_ids={"x"})
    assert any(".links[0] must be type absolute" in p for p in problems)
    assert any(".source.url must be the absolute URL" in p for p in problems)
    del card["links"]
    assert any(
        p.endswith(".links: a card links to its main source")
        for p in check_response(body, patient_id="x", draft_ids=set())
    )
