"""The store going away under a running service: a PostgreSQL server of the test's own,
really stopped and started again (the session's shared server is never touched).

With JWT on, every call writes its ``jti`` to the store: while the server is away a call must
be a fast 503 the EHR may retry, never a 500, and ``/readyz`` must say so. Without JWT, calls
go on while the server is away: their card records wait in the audit spool, and every one is
in the database once it is back.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.store.database import Store
from tests.builders import order_sign
from tests.cds_hooks.test_jwt import BASE, SIGN, JwksServer, clients_file, token
from tests.conftest import make_settings

BINDIRS = sorted(d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(f"{d}/initdb", os.X_OK))
OUTAGE_S = 4.5  # how long the no-loss test keeps PostgreSQL stopped while calls go on
FAST_S = 3.0  # a 503 while the store is away comes in well under this (connect timeout: 2 s)


class OwnPostgres:
    """A throw-away PostgreSQL server on 127.0.0.1 that the test may stop and start."""

    def __init__(self) -> None:
        self.bindir = BINDIRS[-1]
        self.workdir = Path(tempfile.mkdtemp(prefix="og-outage-pg."))
        self.workdir.chmod(0o755)
        self.run_as: list[str] = []
        if os.getuid() == 0:  # initdb refuses root; Debian's package makes the postgres user
            shutil.chown(self.workdir, "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", f"{self.workdir}/data", "-U", "osteoguard", "-A", "trust", "--no-sync")
        self.url = f"postgresql://osteoguard@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.run_as, f"{self.bindir}/{tool}", *args], check=True, capture_output=True, timeout=60
        )

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.workdir} -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            f"{self.workdir}/data",
            "-l",
            f"{self.workdir}/log",
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", f"{self.workdir}/data", "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if not BINDIRS:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing in CI")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    server = OwnPostgres()
    yield server
    server.remove()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def signed_call(client: TestClient) -> tuple[int, float]:
    started = time.monotonic()
    response = client.post(SIGN, json=order_sign("outage-1"), headers={"authorization": f"Bearer {token()}"})
    return response.status_code, time.monotonic() - started


def test_jwt_calls_are_a_fast_503_while_postgresql_is_stopped_and_recover_after(
    tmp_path: Path, own_postgres: OwnPostgres, jwks_server: JwksServer
) -> None:
    trusted = clients_file(tmp_path, {"jwks_url": jwks_server.url})
    settings = make_settings(
        tmp_path, auth="jwt", trusted_clients=trusted, public_url=BASE, database_url=own_postgres.url
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert signed_call(client)[0] == 200
        assert client.get("/readyz").status_code == 200
        own_postgres.stop()
        for _ in range(3):
            status, seconds = signed_call(client)
            assert status == 503 and seconds < FAST_S
        assert client.get("/readyz").status_code == 503
        own_postgres.start()
        assert signed_call(client)[0] == 200
        assert client.get("/readyz").status_code == 200


def card_uuids(client: TestClient, pid: str) -> list[str]:
    response = client.post(SIGN, json=order_sign(pid, e2=6.0))
    assert response.status_code == 200, response.text
    return [card["uuid"] for card in response.json()["cards"]]


def test_no_card_record_is_lost_while_postgresql_is_stopped_and_every_one_is_written_after(
    tmp_path: Path, own_postgres: OwnPostgres
) -> None:
    settings = make_settings(tmp_path, database_url=own_postgres.url, audit_spool_dir=tmp_path / "spool")
    issued: list[str] = []
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        audit = client.app.state.registry.audit  # type: ignore[attr-defined]
        issued += card_uuids(client, "before")
        own_postgres.stop()
        outage_started = time.monotonic()
        i = 0
        # Longer than the old writer's retries (about 4.3 s, then it dropped the batch).
        while time.monotonic() - outage_started < OUTAGE_S:
            issued += card_uuids(client, f"during-{i}")  # every call answered, with its cards
            i += 1
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"] == "degraded, spooling"
        assert len(audit.spool.records) > 0
        own_postgres.start()
        assert client.portal.call(audit.drained, 15)  # type: ignore[union-attr]
        assert client.get("/readyz").json()["store"] == "ok"
    store = Store(own_postgres.url)
    try:
        assert set(store.cards_by_uuid(issued)) == set(issued)
    finally:
        store.close()
