"""A CORS preflight from an origin that is not allowed: refused, logged (no patient data) and
counted, so an integrator can see why the browser refuses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import make_settings
from tests.service.pipeline.settings_helpers import metric

ALLOWED = "https://sandbox.cds-hooks.org"
PATH = "/cds-services/anastrozole-bone-order-sign"


@pytest.fixture
def cors_client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, cors_origins=ALLOWED))) as c:
        yield c


def preflight(client: TestClient, origin: str) -> int:
    headers = {"origin": origin, "access-control-request-method": "POST"}
    return client.options(PATH, headers=headers).status_code


def test_an_allowed_origin_passes_the_preflight(cors_client: TestClient) -> None:
    assert preflight(cors_client, ALLOWED) == 200


def test_a_refused_preflight_is_counted(cors_client: TestClient) -> None:
    before = metric(cors_client, "osteoguard_cors_preflight_refused_total", endpoint="hook")
    assert preflight(cors_client, "https://elsewhere.example") == 400
    assert metric(cors_client, "osteoguard_cors_preflight_refused_total", endpoint="hook") == before + 1


def test_a_refused_preflight_is_logged_with_the_origin(
    cors_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="osteoguard.cors"):
        preflight(cors_client, "https://elsewhere.example")
    (record,) = [r for r in caplog.records if r.name == "osteoguard.cors"]
    assert "origin not allowed" in record.getMessage()
    assert record.origin == "https://elsewhere.example" and record.endpoint == "hook"  # type: ignore[attr-defined]


def test_an_allowed_preflight_is_not_logged(
    cors_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="osteoguard.cors"):
        preflight(cors_client, ALLOWED)
    assert not [r for r in caplog.records if r.name == "osteoguard.cors"]
