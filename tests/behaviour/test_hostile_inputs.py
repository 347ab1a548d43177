"""A corpus of hostile and malformed requests (found in review): none may cause a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.builders import SERVICE_FOR_HOOK

CORPUS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "hostile").glob("*.json"))


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_hostile_request_is_answered_without_a_server_error(client: TestClient, path: Path) -> None:
    raw = path.read_bytes()
    hook = "order-sign"
    for candidate in SERVICE_FOR_HOOK:
        if f'"hook": "{candidate}"' in raw.decode("utf-8", "replace"):
            hook = candidate
    response = client.post(
        f"/cds-services/{SERVICE_FOR_HOOK[hook]}", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code in (200, 400, 412), response.text
    body = response.json()
    assert "cards" in body or body["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.text


def test_corpus_is_present() -> None:
    assert len(CORPUS) >= 25
