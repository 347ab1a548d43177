"""Shared fixtures: the packaged rule set, an engine, a registry and an app client."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine.adapter import RuleEngine
from service.pipeline.registry import Registry
from service.ruleset.loader import load_ruleset
from service.ruleset.model import RuleSet
from service.settings import PACKAGED_RULES_DIR, Settings


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OSTEOGUARD_* from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("OSTEOGUARD_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def ruleset() -> RuleSet:
    return load_ruleset(PACKAGED_RULES_DIR)


@pytest.fixture(scope="session")
def engine(ruleset: RuleSet) -> Iterator[RuleEngine]:
    eng = RuleEngine(ruleset)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def registry(ruleset: RuleSet, engine: RuleEngine) -> Registry:
    return Registry(ruleset, engine)


def make_settings(tmp_path: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {"auth": "off", "rules_dir": PACKAGED_RULES_DIR}
    # Never the default ./osteoguard.db: a test must not write into the working tree.
    folder = tmp_path if tmp_path is not None else Path(tempfile.mkdtemp(prefix="osteoguard-test-"))
    values["database_url"] = f"sqlite:///{folder / 'osteoguard.db'}"
    # Beside the database, as by default; stated so that a test overriding the database with
    # PostgreSQL does not spool into the working directory (the checkout).
    values["audit_spool_dir"] = folder / "audit-spool"
    # Load shedding by the event loop's lag answers 503 when the machine is busy (a test run
    # beside others); only the shedding tests (tests/service/http/test_edge.py) want it.
    values["max_loop_lag_ms"] = 60_000
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path)), raise_server_exceptions=False) as c:
        yield c


POSTGRES_URL = os.environ.get("OSTEOGUARD_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, and a PostgreSQL database when one is available.

    `scripts/with-postgres scripts/test` provides the server; CI always does, so there a
    missing server fails instead of skipping.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("OSTEOGUARD_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("no PostgreSQL server: run `scripts/with-postgres scripts/test`")
    import uuid

    import psycopg

    name = f"og_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Clock:
    """An injectable clock for tests that need time to pass without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    """A clock for an app under test that starts now and moves only when told.

    Now, not a fixed date: the builders date results relative to today and the app reads its
    clock as today, so on a fixed date the results would drift into its future and be ignored."""
    return Clock()
