"""`osteoguard feedback report` and `osteoguard db upgrade`, on both stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import main
from service.pipeline.registry import utc_today
from service.ruleset.model import RuleSet
from service.settings import get_settings
from service.store.database import Store
from service.store.report import build_report, reason_displays, render_table
from tests.builders import order_sign
from tests.conftest import Clock, make_settings
from tests.service.store.test_feedback import FEEDBACK, SIGN, entry, issue, snooze_entry

HL7 = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"


@pytest.fixture
def populated(database_url: str, clock: Clock) -> str:
    """Three patients' cards with accepted, snoozed and declined feedback."""
    settings = make_settings(database_url=database_url, patient_hash_key="k")
    with TestClient(create_app(settings, now=clock)) as client:
        a = issue(client, "rep-1", e2=6.0, dxa_days=900)
        b = issue(client, "rep-2", e2=6.0)
        c = issue(client, "rep-3", e2=6.0)
        declined = {
            "reason": {
                "system": "urn:osteoguard:override-reason",
                "code": "patient-declined",
                "display": "Patient declined",
            }
        }
        client.post(FEEDBACK, json={"feedback": [entry(a["low-estradiol"]), entry(a["baseline-dexa"])]})
        client.post(FEEDBACK, json={"feedback": [snooze_entry(b["low-estradiol"])]})
        client.post(
            FEEDBACK, json={"feedback": [entry(c["low-estradiol"], "overridden", overrideReason=declined)]}
        )
    return database_url


def test_report_counts_per_rule(populated: str) -> None:
    store = Store(populated)
    store.open()
    try:
        report = {r.rule_id: r.as_json() for r in build_report(store)}
    finally:
        store.close()
    assert report["low-estradiol"] == {
        "rule_id": "low-estradiol",
        "issued": 3,
        "silent": 0,
        "suppressed": 0,
        "accepted": 1,
        "overridden": 2,
        "acceptance_rate": 0.3333,
        "override_reasons": {"Not now": 1, "Patient declined": 1},
    }
    assert report["baseline-dexa"]["accepted"] == 1 and report["baseline-dexa"]["issued"] == 1


def test_report_since_excludes_older_cards(populated: str) -> None:
    store = Store(populated)
    store.open()
    try:
        assert build_report(store, datetime.now(UTC) + timedelta(days=1)) == []
    finally:
        store.close()


def test_report_table_lists_every_rule(populated: str) -> None:
    store = Store(populated)
    store.open()
    try:
        table = render_table(build_report(store))
    finally:
        store.close()
    lines = table.splitlines()
    assert lines[0].split()[:7] == [
        "rule",
        "issued",
        "silent",
        "suppressed",
        "accepted",
        "overridden",
        "accept",
    ]
    assert any(line.startswith("low-estradiol") and "33%" in line for line in lines)


def test_cli_report_json_and_table(
    populated: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", populated)
    monkeypatch.setenv("OSTEOGUARD_PATIENT_HASH_KEY", "k")
    get_settings.cache_clear()
    assert main(["feedback", "report", "--json"]) == 0
    assert {r["rule_id"] for r in json.loads(capsys.readouterr().out)} >= {"low-estradiol", "baseline-dexa"}
    tomorrow = (utc_today() + timedelta(days=1)).isoformat()
    assert main(["feedback", "report", "--since", tomorrow]) == 0
    assert capsys.readouterr().out.strip() == "No cards issued in this period."
    get_settings.cache_clear()


def test_cli_db_upgrade_is_idempotent(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", database_url)
    get_settings.cache_clear()
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "upgrade"]) == 0
    get_settings.cache_clear()


@pytest.fixture
def silent_and_coded(database_url: str, tmp_path: Path, clock: Clock) -> str:
    """One client in silent mode; one shown card overridden with only a system and a code,
    as the CDS Hooks sandbox sends it, once with ours and once with the HL7 code."""
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text(yaml.safe_dump({"defaults": {"silent": True}}))
    settings = make_settings(database_url=database_url, patient_hash_key="k", trusted_clients=quiet)
    with TestClient(create_app(settings, now=clock)) as client:
        assert client.post(SIGN, json=order_sign("sr-1", e2=6.0, vitd=None)).json() == {"cards": []}
        client.post(SIGN, json=order_sign("sr-2", e2=6.0))
    settings = make_settings(database_url=database_url, patient_hash_key="k")
    with TestClient(create_app(settings, now=clock)) as client:
        a = issue(client, "sr-3", e2=6.0)
        b = issue(client, "sr-4", e2=6.0)
        ours = {"reason": {"system": "urn:osteoguard:override-reason", "code": "already-addressed"}}
        hl7 = {"reason": {"system": HL7, "code": "patient-refuses"}}
        client.post(
            FEEDBACK, json={"feedback": [entry(a["low-estradiol"], "overridden", overrideReason=ours)]}
        )
        client.post(
            FEEDBACK, json={"feedback": [entry(b["low-estradiol"], "overridden", overrideReason=hl7)]}
        )
    return database_url


def report_of(url: str, ruleset: RuleSet) -> dict[str, dict[str, Any]]:
    store = Store(url)
    store.open()
    try:
        return {r.rule_id: r.as_json() for r in build_report(store, displays=reason_displays(ruleset))}
    finally:
        store.close()


def test_report_counts_silent_cards_beside_shown_ones(silent_and_coded: str, ruleset: RuleSet) -> None:
    report = report_of(silent_and_coded, ruleset)
    assert (report["low-estradiol"]["issued"], report["low-estradiol"]["silent"]) == (2, 2)
    assert (report["vitamin-d"]["issued"], report["vitamin-d"]["silent"]) == (0, 1)


def test_report_shows_the_display_of_a_reason_sent_as_a_code_only(
    silent_and_coded: str, ruleset: RuleSet
) -> None:
    reasons = report_of(silent_and_coded, ruleset)["low-estradiol"]["override_reasons"]
    assert reasons == {
        "Already addressed (done elsewhere or scheduled)": 1,
        "Patient refuses/declines (no context given)*": 1,
    }


def test_report_table_has_the_silent_column(silent_and_coded: str, ruleset: RuleSet) -> None:
    store = Store(silent_and_coded)
    store.open()
    try:
        table = render_table(build_report(store, displays=reason_displays(ruleset)))
    finally:
        store.close()
    (vitamin,) = [line.split() for line in table.splitlines() if line.startswith("vitamin-d")]
    assert vitamin[1:4] == ["0", "1", "0"]
