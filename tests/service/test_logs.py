"""SPEC §9: no log line, ours or a library's, carries a patient id, a name or a token, at debug
or info, on every path that sees them: start-up, the FHIR-server fallback (httpx logs request
URLs at info), JWT failures and feedback."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_hooks.client import make_key, sign_token
from service.app import create_app
from service.logs import QUIET_LIBRARIES, configure_logging
from tests.builders import order_sign
from tests.conftest import make_settings

PATIENT = "pat-4711-SECRET"
FAMILY, GIVEN = "Quarkowski", "Zebulon"
FHIR_TOKEN = "fhir-access-SECRET-token"
BASE = "https://ehr.example.org/fhir"
ISS = "https://ehr.example.org"
HOST = "http://testserver"
SIGN = "/cds-services/anastrozole-bone-order-sign"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The service's real logging set-up at debug, written to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in QUIET_LIBRARIES}
    configure_logging("debug")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    root.handlers[:], level, libraries = saved
    root.setLevel(level)
    for name, lib_level in libraries.items():
        logging.getLogger(name).setLevel(lib_level)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    (tmp_path / "clients.yaml").write_text(make_key(ISS, path).trusted_clients_yaml())
    return path


def request_without_prefetch() -> dict[str, Any]:
    req = order_sign(PATIENT, e2=6.0)
    prefetch = req.pop("prefetch")
    prefetch["patient"]["name"] = [{"family": FAMILY, "given": [GIVEN]}]
    req["fhirServer"] = BASE
    req["fhirAuthorization"] = {
        "access_token": FHIR_TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "osteoguard",
    }
    return {"request": req, "prefetch": prefetch}


def fhir_answers(prefetch: dict[str, Any]) -> None:
    """The FHIR server: each query answered with the key's bundle, found by its resource type and code."""

    def answer(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if "/Patient/" in url:
            return httpx.Response(200, json=prefetch["patient"])
        for value in prefetch.values():
            resources = [e["resource"] for e in value.get("entry", [])] if isinstance(value, dict) else []
            concepts = [r.get("code") or r.get("medicationCodeableConcept") or {} for r in resources]
            codes = {c["code"] for concept in concepts for c in concept.get("coding", [])}
            if codes and any(f"%7C{code}" in url for code in codes):
                return httpx.Response(200, json=value)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})

    respx.get(url__startswith=BASE).mock(side_effect=answer)


@respx.mock
def test_no_log_line_carries_a_patient_id_name_or_token(
    tmp_path: Path, key: Path, log_lines: io.StringIO
) -> None:
    settings = make_settings(tmp_path, auth="jwt", public_url=HOST, trusted_clients=tmp_path / "clients.yaml")
    call = request_without_prefetch()
    fhir_answers(call["prefetch"])
    secrets_sent: list[str] = [PATIENT, FAMILY, GIVEN, FHIR_TOKEN]
    with TestClient(create_app(settings)) as client:

        def bearer(aud: str) -> dict[str, str]:
            token = sign_token(key, aud)
            secrets_sent.append(token)
            return {"authorization": f"Bearer {token}"}

        # the FHIR-server fallback: every key fetched, with the patient in every query
        answered = client.post(SIGN, json=call["request"], headers=bearer(HOST + SIGN))
        assert answered.status_code == 200, answered.text
        cards = answered.json()["cards"]
        assert "low-estradiol" in [c["source"]["topic"]["code"] for c in cards]
        # JWT failures: a wrong audience, a replay, a forged token, a query string with the patient
        wrong = bearer("http://localhost/cds-services")
        assert client.get("/cds-services", headers=wrong).status_code == 401
        replayed = bearer(HOST + SIGN)
        client.post(SIGN, json=call["request"], headers=replayed)
        assert client.post(SIGN, json=call["request"], headers=replayed).status_code == 401
        assert (
            client.get(
                f"/cds-services?patient={PATIENT}", headers={"authorization": "Bearer x.y.z"}
            ).status_code
            == 401
        )
        # feedback, with a comment naming the patient
        feedback = {
            "feedback": [
                {
                    "card": cards[0]["uuid"],
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-28T10:00:00Z",
                    "overrideReason": {
                        "reason": {"system": "urn:osteoguard:override-reason", "code": "snooze-90d"},
                        "userComment": f"{GIVEN} {FAMILY} ({PATIENT}) declined",
                    },
                }
            ]
        }
        stored = client.post(f"{SIGN}/feedback", json=feedback, headers=bearer(HOST + SIGN + "/feedback"))
        assert stored.status_code == 200, stored.text
        # a FHIR server that refuses: the 412 path
        respx.routes.clear()
        respx.get(url__startswith=BASE).mock(return_value=httpx.Response(403))
        assert client.post(SIGN, json=call["request"], headers=bearer(HOST + SIGN)).status_code == 412
    text = log_lines.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert {"FHIR fetch", "feedback stored"} <= {r["message"] for r in records}  # the paths ran
    assert any(r["message"].startswith("request refused: aud") for r in records)
    assert not [
        r for r in records if r["logger"].split(".")[0] in QUIET_LIBRARIES and r["level"] in ("debug", "info")
    ]
    for secret in secrets_sent:
        assert secret not in text
    assert not re.search(r"patient=|Patient/", text)


def test_library_loggers_are_held_at_warning_whatever_the_level(log_lines: io.StringIO) -> None:
    for name in ("httpx", "httpcore", "alembic", "sqlalchemy.engine", "uvicorn.access"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert logging.getLogger("osteoguard").isEnabledFor(logging.DEBUG)
