"""Per-client settings (SPEC §8) through HTTP, on SQLite and PostgreSQL: silent mode, rule
switches, defaults for auth-off calls and for every client, and start-up refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_hooks.errors import TrustedClientsError
from service.app import create_app
from tests.builders import order_sign
from tests.cds_hooks.test_jwt import EC_KEY, jwk, token
from tests.conftest import Clock, make_settings
from tests.service.pipeline.settings_helpers import app, audited, metric, settings_file

SIGN = "/cds-services/anastrozole-bone-order-sign"
SILENT_ISS, LOUD_ISS = "https://silent.example.org", "https://loud.example.org"


def rules(client: TestClient, request: dict[str, Any], **headers: str) -> list[str]:
    response = client.post(SIGN, json=request, headers=headers)
    assert response.status_code == 200, response.text
    return sorted(c["source"]["topic"]["code"] for c in response.json()["cards"])


def test_silent_answers_no_cards(tmp_path: Path, database_url: str, clock: Clock) -> None:
    with app(database_url, clock, settings_file(tmp_path, {"defaults": {"silent": True}})) as client:
        assert rules(client, order_sign("sil-1", e2=6.0)) == []


def test_silent_cards_are_audited_as_silent(tmp_path: Path, database_url: str, clock: Clock) -> None:
    with app(database_url, clock, settings_file(tmp_path, {"defaults": {"silent": True}})) as client:
        rules(client, order_sign("sil-2", e2=6.0))
    rows = audited(database_url)
    assert "low-estradiol" in {r["rule_id"] for r in rows}
    assert {r["disposition"] for r in rows} == {"silent"}


def test_silent_cards_are_counted_in_metrics(tmp_path: Path, database_url: str, clock: Clock) -> None:
    with app(database_url, clock, settings_file(tmp_path, {"defaults": {"silent": True}})) as client:
        labels = {"rule_id": "low-estradiol", "disposition": "silent"}
        before = metric(client, "osteoguard_cards_withheld_total", **labels)
        rules(client, order_sign("sil-3", e2=6.0))
        assert metric(client, "osteoguard_cards_withheld_total", **labels) == before + 1


def test_a_rule_switched_off_is_neither_shown_nor_audited(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    trusted = settings_file(tmp_path, {"defaults": {"rules": {"low-estradiol": False}}})
    with app(database_url, clock, trusted) as client:
        shown = rules(client, order_sign("off-1", e2=6.0, vitd=None))
    assert "low-estradiol" not in shown and shown  # the other rules still answer
    assert "low-estradiol" not in {r["rule_id"] for r in audited(database_url)}


def test_a_rule_switched_on_explicitly_still_fires(tmp_path: Path, database_url: str, clock: Clock) -> None:
    trusted = settings_file(tmp_path, {"defaults": {"rules": {"low-estradiol": True}}})
    with app(database_url, clock, trusted) as client:
        assert "low-estradiol" in rules(client, order_sign("on-1", e2=6.0))


def test_an_unknown_rule_id_refuses_to_start(tmp_path: Path, database_url: str, clock: Clock) -> None:
    trusted = settings_file(tmp_path, {"defaults": {"rules": {"vitamin-dee": False}}})
    with pytest.raises(TrustedClientsError) as caught, app(database_url, clock, trusted):
        pass
    assert "unknown rule id(s) vitamin-dee" in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_setting_refuses_to_start(tmp_path: Path, database_url: str, clock: Clock) -> None:
    trusted = settings_file(tmp_path, {"defaults": {"quiet": True}})
    with (
        pytest.raises(TrustedClientsError, match="unknown setting 'quiet'"),
        app(database_url, clock, trusted),
    ):
        pass


def two_clients(tmp_path: Path) -> Path:
    keys = {"keys": [jwk(EC_KEY, "ec-1")]}
    return settings_file(
        tmp_path,
        {
            "defaults": {"repeat_alerts": "show"},
            "clients": [
                {"iss": SILENT_ISS, "jwks": keys, "settings": {"silent": True}},
                {"iss": LOUD_ISS, "jwks": keys},
            ],
        },
    )


def test_each_client_is_served_with_its_own_settings(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        patient_hash_key="k",
        auth="jwt",
        public_url="http://testserver",  # jwt mode takes its audience from here
        trusted_clients=two_clients(tmp_path),
    )
    with TestClient(create_app(settings)) as client:
        quiet = rules(client, order_sign("cl-1", e2=6.0), authorization=f"Bearer {token(iss=SILENT_ISS)}")
        loud = rules(client, order_sign("cl-1", e2=6.0), authorization=f"Bearer {token(iss=LOUD_ISS)}")
    assert quiet == [] and "low-estradiol" in loud
    by_client = {(r["client_iss"], r["disposition"]) for r in audited(database_url)}
    assert by_client == {(SILENT_ISS, "silent"), (LOUD_ISS, "shown")}
