"""Shared fixtures: the packaged rule set, an engine, a registry and an app client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.engine import RuleEngine
from service.main import create_app
from service.registry import Registry
from service.ruleset import RuleSet, load_ruleset
from service.settings import PACKAGED_RULES_DIR, Settings


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OSTEOGUARD_* from the developer's shell leaks into a test."""
    import os

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
    if tmp_path is not None:
        values["database_url"] = f"sqlite:///{tmp_path / 'osteoguard.db'}"
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path)), raise_server_exceptions=False) as c:
        yield c
