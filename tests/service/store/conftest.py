"""Fixtures for the store tests that go through HTTP: an app on `database_url` and the shared clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import Clock, make_settings


@pytest.fixture
def app_client(database_url: str, clock: Clock) -> Iterator[TestClient]:
    settings = make_settings(database_url=database_url, patient_hash_key="test-key")
    with TestClient(create_app(settings, now=clock)) as c:
        yield c
