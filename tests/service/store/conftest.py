"""Fixtures for the store tests that go through HTTP: a fixed clock and an app on `database_url`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import Clock, make_settings


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))


@pytest.fixture
def app_client(database_url: str, clock: Clock) -> Iterator[TestClient]:
    settings = make_settings(database_url=database_url, patient_hash_key="test-key")
    with TestClient(create_app(settings, now=clock)) as c:
        yield c
