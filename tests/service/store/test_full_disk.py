"""A store that cannot be written: a full SQLite database (``PRAGMA max_page_count``, which
makes SQLite answer SQLITE_FULL "database or disk is full"), a full spool, and a really full
filesystem (a small tmpfs, where the test may mount one). Readiness says so, and a call whose
cards cannot be recorded is a 503, never a 500 and never cards that were not recorded."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from service.app import create_app
from service.store.database import Store
from tests.builders import order_sign
from tests.conftest import make_settings

SIGN = "/cds-services/anastrozole-bone-order-sign"


def call(client: TestClient, pid: str) -> tuple[int, list[str], dict[str, Any]]:
    response = client.post(SIGN, json=order_sign(pid, e2=6.0))
    body = response.json()
    return response.status_code, [c["uuid"] for c in body.get("cards", [])], body


def freeze_size(store: Store) -> None:
    """Every new connection may not grow the file: SQLite answers SQLITE_FULL."""
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    def limit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    event.listen(store.engine, "connect", limit)
    store.engine.dispose()


def test_a_full_database_spools_and_a_full_spool_is_a_503_for_readyz_and_calls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, audit_spool_max_bytes=64 * 1024)
    answered: list[str] = []
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        registry = client.app.state.registry  # type: ignore[attr-defined]
        freeze_size(registry.store)
        status, body = 200, {}
        for i in range(300):
            status, uuids, body = call(client, f"full-{i}")
            if status != 200:
                break
            answered += uuids
            if i == 20:
                ready = client.get("/readyz")
                assert ready.status_code == 200 and ready.json()["store"] == "degraded, spooling"
        assert status == 503, "the spool never filled"
        assert body["issue"][0]["details"]["coding"][0]["code"] == "OG-503-SPOOL"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "spool" in ready.json()["reason"]
        assert call(client, "refused")[0] == 503
        spooled = set(registry.audit.known(answered))
    stored = Store(settings.database_url)
    try:
        in_database = set(stored.cards_by_uuid(answered))
    finally:
        stored.close()
    assert set(answered) == in_database | spooled  # every card given is recorded somewhere


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())
    return filler


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_filesystem_is_a_503_for_readyz_never_a_500_and_every_card_given_is_recorded(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "disk", "4m") as disk:
        settings = make_settings(disk)
        answered: list[str] = []
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            answered += call(client, "room")[1]
            assert client.get("/readyz").status_code == 200
            # Its records reach the database while there is room: else the writer may find the
            # disk full first, and readiness names the spool's ENOSPC instead of the free space.
            assert client.portal.call(client.app.state.registry.audit.flush, 10)  # type: ignore[union-attr,attr-defined]
            filler = fill(disk)
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "space" in ready.json()["reason"]
            statuses = []
            for i in range(20):
                status, uuids, _body = call(client, f"no-room-{i}")
                statuses.append(status)
                if status == 200:  # SQLite may still place them in its write-ahead log
                    answered += uuids
            assert set(statuses) <= {200, 503}  # never a 500
            filler.unlink()
            assert client.portal.call(client.app.state.registry.audit.flush, 10)  # type: ignore[union-attr,attr-defined]
            status, uuids, _body = call(client, "room-again")
            assert status == 200
            answered += uuids
        stored = Store(settings.database_url)
        try:
            assert set(stored.cards_by_uuid(answered)) == set(answered)
        finally:
            stored.close()
