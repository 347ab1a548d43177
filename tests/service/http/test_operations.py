"""Operating the service: rules hot-reload, /metrics, request ids."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import GIL_SWITCH_S, create_app
from service.settings import PACKAGED_RULES_DIR
from tests.builders import order_sign
from tests.conftest import make_settings

SIGN = "/cds-services/anastrozole-bone-order-sign"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, target, ignore=shutil.ignore_patterns("cases"))  # as mounted in k8s
    return target


@pytest.fixture
def client(tmp_path: Path, rules_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, rules_dir=rules_dir, rules_reload_s=0)
    with TestClient(create_app(settings)) as c:
        yield c


def fired(client: TestClient, e2: float) -> list[str]:
    body = client.post(SIGN, json=order_sign("ops-1", e2=e2)).json()
    return [c["source"]["topic"]["code"] for c in body["cards"]]


def reload(client: TestClient) -> bool:
    return bool(client.portal.call(client.app.state.reloader.check_once))  # type: ignore[attr-defined]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# ---- rules reload -----------------------------------------------------------------------------
def test_a_valid_changed_rule_set_is_picked_up_without_restart(client: TestClient, rules_dir: Path) -> None:
    assert "low-estradiol" not in fired(client, 11.0)
    edit(rules_dir / "dosing/low-estradiol/rule.yaml", "e2_low_pg_ml: 10 ", "e2_low_pg_ml: 12 ")
    edit(rules_dir / "ruleset.yaml", 'version: "2026.12.0"', 'version: "2026.12.1"')
    assert reload(client) is True
    assert "low-estradiol" in fired(client, 11.0)
    assert client.get("/readyz").json()["version"] == "2026.12.1"


def test_cards_after_a_reload_carry_the_new_override_reasons(client: TestClient, rules_dir: Path) -> None:
    # The card builder makes a rule set's override reasons once: a new rule set gets its own.
    def snooze_display() -> str:
        body = client.post(SIGN, json=order_sign("ops-1", e2=6.0)).json()
        (card,) = [c for c in body["cards"] if c["indicator"] == "warning"]
        return str(card["overrideReasons"][0]["display"])

    assert snooze_display() == "Not now: snooze this reminder for this patient for 90 days"
    edit(rules_dir / "ruleset.yaml", "Not now: snooze this reminder", "Later: snooze this reminder")
    assert reload(client)
    assert snooze_display() == "Later: snooze this reminder for this patient for 90 days"


def test_an_unchanged_folder_is_not_reloaded(client: TestClient) -> None:
    assert reload(client) is False


def test_a_broken_rule_file_never_replaces_the_working_set(
    client: TestClient, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (rules_dir / "dosing/low-estradiol/rule.yaml").write_text("title: [unclosed\n")
    assert reload(client) is False
    assert "low-estradiol" in fired(client, 6.0)  # still served by the old set
    assert client.get("/readyz").status_code == 200
    assert "changed rule set rejected" in caplog.text


def test_a_rule_set_that_loads_but_fails_its_checks_is_rejected(client: TestClient, rules_dir: Path) -> None:
    # Valid YAML and structure, but the summary would exceed 140 characters.
    edit(
        rules_dir / "monitoring/vitamin-d/rule.yaml",
        'summary: &never_summary "No 25-OH',
        'summary: &never_summary "' + "x" * 150 + " No 25-OH",
    )
    assert reload(client) is False


def test_after_a_rejected_set_a_fixed_one_loads(client: TestClient, rules_dir: Path) -> None:
    path = rules_dir / "dosing/low-estradiol/rule.yaml"
    good = path.read_text()
    path.write_text("not: [valid\n")
    assert reload(client) is False
    path.write_text(good.replace("e2_low_pg_ml: 10 ", "e2_low_pg_ml: 12 "))
    assert reload(client) is True and "low-estradiol" in fired(client, 11.0)


# ---- metrics ------------------------------------------------------------------------------------
def test_metrics_in_prometheus_format(client: TestClient) -> None:
    fired(client, 6.0)
    client.post("/cds-services/nope", json={})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'osteoguard_requests_total{endpoint="hook",service="anastrozole-bone-order-sign",status="200"}'
        in text
    )
    assert 'osteoguard_requests_total{endpoint="hook",service="unknown",status="404"}' in text
    assert (
        'osteoguard_request_seconds_bucket{endpoint="hook",le="0.005",service="anastrozole-bone-order-sign"}'
        in text
    )
    assert 'osteoguard_cards_total{indicator="warning",rule_id="low-estradiol"}' in text
    assert 'osteoguard_ruleset_info{name="anastrozole-bone",version="2026.12.0"} 1.0' in text


def test_metrics_carry_no_patient_data(client: TestClient) -> None:
    client.post(SIGN, json=order_sign("patient-secret-id", e2=6.0))
    assert "patient-secret-id" not in client.get("/metrics").text


# ---- request ids ----------------------------------------------------------------------------------
def test_every_answer_carries_a_request_id(client: TestClient) -> None:
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_a_safe_incoming_request_id_is_kept(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"x-request-id": "ehr-abc.123"}).headers["x-request-id"]
        == "ehr-abc.123"
    )


def test_an_unsafe_incoming_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/healthz", headers={"x-request-id": 'x" patient=John Smith'})
    assert response.headers["x-request-id"] != 'x" patient=John Smith'


def test_a_serving_process_hands_the_gil_over_every_millisecond(tmp_path: Path) -> None:
    # The audit writer's thread waits for the interpreter after each database call: at the
    # default 5 ms a busy loop made its batches overrun and spool (docs/speed.md).
    # The setting is process-wide: the app gives back what it found when it stops.
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        with TestClient(create_app(make_settings(tmp_path))):
            assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_S) == 0.001
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(before)
