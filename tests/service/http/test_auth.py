"""The JWT check in front of every CDS Hooks route (service.http.routes.cds_route)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from tests.builders import order_sign
from tests.conftest import make_settings

SIGN = "/cds-services/anastrozole-bone-order-sign"


@pytest.fixture
def jwt_client(tmp_path: Path) -> Iterator[TestClient]:
    trusted = tmp_path / "trusted-clients.yaml"
    trusted.write_text(
        yaml.safe_dump({"clients": [{"iss": "https://ehr.example.org", "jwks": {"keys": []}}]})
    )
    settings = make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url="http://testserver")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/cds-services", None),
        ("POST", SIGN, order_sign("p1")),
        ("POST", f"{SIGN}/feedback", {"feedback": []}),
    ],
)
def test_every_cds_route_refuses_a_call_without_a_token(
    jwt_client: TestClient, method: str, path: str, body: object
) -> None:
    response = jwt_client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["resourceType"] == "OperationOutcome"
