"""Helpers for the per-client settings tests: an app on `database_url` with a settings file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.store.database import Store, cards
from tests.conftest import Clock, make_settings


def settings_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "trusted-clients.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextmanager
def app(database_url: str, clock: Clock, trusted: Path, **overrides: Any) -> Iterator[TestClient]:
    settings = make_settings(
        database_url=database_url, patient_hash_key="test-key", trusted_clients=trusted, **overrides
    )
    with TestClient(create_app(settings, now=clock)) as client:
        yield client


def audited(database_url: str) -> list[dict[str, Any]]:
    """Every card row, oldest first: rule id, hook and disposition."""
    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(cards.c.rule_id, cards.c.hook, cards.c.disposition, cards.c.client_iss).order_by(
                    cards.c.issued_at, cards.c.rule_id
                )
            )
            return [dict(r._mapping) for r in rows]
    finally:
        store.close()


def metric(client: TestClient, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
