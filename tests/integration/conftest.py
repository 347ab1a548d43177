"""Fixtures for the tests against a real FHIR server (see tests/integration/sandbox.py).

``fhir_sandbox`` is session-scoped: one sandbox for the whole run, started, seeded, and
always stopped. It fails (never skips) when the sandbox cannot be had, for example when
``.venv-fhir`` cannot be created because PyPI is unreachable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date
from typing import TypeVar

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.pipeline.registry import utc_today
from tests.conftest import make_settings
from tests.integration import sandbox as sb

T = TypeVar("T")
LOOPBACK = "127.0.0.1,localhost,::1"


@pytest.fixture(scope="session")
def today() -> date:
    """One ``today`` (UTC, as the service's clock) for seeding the sandbox and rolling the requests.

    Every variant of a case carries the same rolled data, so the card comparisons hold even
    if the service's own clock passes midnight during the run."""
    return utc_today()


@pytest.fixture(scope="session")
def fhir_sandbox(tmp_path_factory: pytest.TempPathFactory, today: date) -> Iterator[sb.Sandbox]:
    """(base_url, token) of a seeded FHIR sandbox."""
    remote = sb.from_environment()
    if remote is not None:
        _or_fail(lambda: sb.seed(remote, today), f"could not seed FHIR_SANDBOX_URL={remote.base_url}")
        yield remote
        return
    workdir = tmp_path_factory.mktemp("fhir-sandbox")
    local = _or_fail(lambda: sb.start_local(workdir), "could not start the FHIR sandbox")
    try:
        _or_fail(lambda: sb.seed(local, today), "could not seed the FHIR sandbox")
        yield local
    finally:
        sb.stop_local(workdir, local)


def _or_fail(step: Callable[[], T], what: str) -> T:
    """Run a sandbox step; a SandboxError fails the test with its message (never a skip)."""
    try:
        return step()
    except sb.SandboxError as exc:
        message = f"{what}: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def osteoguard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Osteoguard in-process (auth off), with its own clock."""
    # Explicit budget: session fixtures are built before tests/conftest.py clears OSTEOGUARD_*.
    settings = make_settings(tmp_path_factory.mktemp("osteoguard"), fhir_timeout_s=3.0)
    # The sandbox is on loopback; a CI proxy (HTTP_PROXY, honoured by httpx) must not carry it.
    no_proxy = ",".join(filter(None, (os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), LOOPBACK)))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NO_PROXY", no_proxy)
        env.setenv("no_proxy", no_proxy)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client
