"""The rule documentation over HTTP: public pages, 404 for unknown rules, and cards that link there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.ruleset.model import RuleSet
from tests.builders import order_sign
from tests.conftest import make_settings

SIGN = "/cds-services/anastrozole-bone-order-sign"


@pytest.fixture
def jwt_client(tmp_path: Path) -> Iterator[TestClient]:
    trusted = tmp_path / "trusted-clients.yaml"
    trusted.write_text(
        yaml.safe_dump({"clients": [{"iss": "https://ehr.example.org", "jwks": {"keys": []}}]})
    )
    with TestClient(
        create_app(
            make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url="http://testserver")
        )
    ) as c:
        yield c


def test_the_index_is_an_html_page(client: TestClient) -> None:
    response = client.get("/docs/rules")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.startswith("<!DOCTYPE html>")


def test_every_rule_has_a_page(client: TestClient, ruleset: RuleSet) -> None:
    for rule in ruleset.rules:
        response = client.get(f"/docs/rules/{rule.id}")
        assert response.status_code == 200, rule.id
        assert rule.title in response.text


def test_an_unknown_rule_is_a_404_operation_outcome(client: TestClient) -> None:
    response = client.get("/docs/rules/no-such-rule")
    assert response.status_code == 404
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "OG-404"


def test_the_pages_need_no_jwt_when_auth_is_on(jwt_client: TestClient) -> None:
    assert jwt_client.get("/docs/rules").status_code == 200
    assert jwt_client.get("/docs/rules/low-estradiol").status_code == 200


def test_the_cds_endpoints_still_need_a_jwt(jwt_client: TestClient) -> None:
    assert jwt_client.get("/cds-services").status_code == 401


def test_the_pages_carry_the_security_headers(client: TestClient) -> None:
    headers = client.get("/docs/rules/low-estradiol").headers
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["x-content-type-options"] == "nosniff"


def test_source_url_is_below_the_request_base_without_a_public_url(client: TestClient) -> None:
    cards = client.post(SIGN, json=order_sign("docs-1", e2=6.0)).json()["cards"]
    assert {c["source"]["url"] for c in cards} >= {"http://testserver/docs/rules/low-estradiol"}


def test_source_url_uses_the_public_url_when_set(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_url="https://bone.example.org/og")
    with TestClient(create_app(settings)) as c:
        cards = c.post(SIGN, json=order_sign("docs-2", e2=6.0)).json()["cards"]
    assert {c["source"]["url"] for c in cards} >= {"https://bone.example.org/og/docs/rules/low-estradiol"}


def test_every_cards_source_url_is_served(client: TestClient) -> None:
    cards = client.post(SIGN, json=order_sign("docs-3", e2=6.0, tscore=-3.1, dxa_days=900, vitd=None)).json()
    assert len(cards["cards"]) >= 4
    for card in cards["cards"]:
        page = client.get(urlsplit(card["source"]["url"]).path)
        assert page.status_code == 200 and card["source"]["topic"]["display"] in page.text


def test_page_requests_are_counted_under_one_bounded_label(client: TestClient) -> None:
    client.get("/docs/rules/no-such-rule-1")
    client.get("/docs/rules/low-estradiol")
    metrics = client.get("/metrics").text
    assert 'osteoguard_requests_total{endpoint="docs",service="",status="404"}' in metrics
    assert "no-such-rule-1" not in metrics
