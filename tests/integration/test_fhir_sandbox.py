"""Osteoguard against a real FHIR server (issue #3): the same cards with full prefetch, with
partial prefetch plus ``fhirServer``, and with no prefetch plus ``fhirServer``.

Every case of ``tests/fixtures/sandbox-cases.json`` (generated from the rule scenario cases by
``scripts/make_sandbox_seed.py``) has its patient seeded in the sandbox. See
``tests/integration/sandbox.py`` for how the sandbox is started, or chosen with
``FHIR_SANDBOX_URL`` / ``FHIR_SANDBOX_TOKEN``.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from service.ruleset.scenarios import roll_dates
from tests.integration import sandbox as sb

CASES = sb.load_cases()
CASE_IDS = [c["path"].removeprefix("rules/").replace("/cases/", "/").removesuffix(".yaml") for c in CASES]
PARTIAL_DROP = ("estradiol", "boneDensity", "vitaminD")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

by_case = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def fhir_authorization(token: str) -> dict[str, Any]:
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "osteoguard",
    }


def post(client: TestClient, case: dict[str, Any], request: dict[str, Any]) -> Any:
    """Post the case; its loopback fhirServer is listed first, as an operator lists a sandbox
    (OSTEOGUARD_FHIR_PRIVATE_SERVERS: fallback calls no loopback server it was not told of)."""
    if isinstance(request.get("fhirServer"), str):
        fetcher = client.app.state.registry.fetcher  # type: ignore[attr-defined]
        fetcher.listed = fetcher.listed | {request["fhirServer"].rstrip("/")}
    return client.post(f"/cds-services/{case['service']}", json=request)


def full_request(case: dict[str, Any], today: date) -> dict[str, Any]:
    return roll_dates(case["request"], today)


def partial_request(case: dict[str, Any], today: date, sandbox: sb.Sandbox) -> dict[str, Any]:
    request = full_request(case, today)
    for key in PARTIAL_DROP:
        del request["prefetch"][key]
    request["fhirServer"] = sandbox.base_url
    request["fhirAuthorization"] = fhir_authorization(sandbox.token)
    return request


def bare_request(case: dict[str, Any], today: date, fhir_server: str, token: str) -> dict[str, Any]:
    request = full_request(case, today)
    del request["prefetch"]
    request["fhirServer"] = fhir_server
    request["fhirAuthorization"] = fhir_authorization(token)
    return request


def _scrub(value: Any) -> Any:
    """``value`` without ``uuid`` members and with every UUID string replaced."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return UUID.sub("<uuid>", value)
    return value


def card_view(card: dict[str, Any]) -> dict[str, Any]:
    """What must be identical between the prefetch variants: everything but uuids."""
    return _scrub(
        {
            "indicator": card.get("indicator"),
            "summary": card.get("summary"),
            "detail": card.get("detail"),
            "topic": ((card.get("source") or {}).get("topic") or {}).get("code"),
            "suggestions": [
                {
                    "label": s.get("label"),
                    "actions": [
                        {
                            "type": a.get("type"),
                            "resource": a.get("resource"),
                            "resourceId": a.get("resourceId"),
                        }
                        for a in s.get("actions") or []
                    ],
                }
                for s in card.get("suggestions") or []
            ],
        }
    )


def cards(client: TestClient, case: dict[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
    response = post(client, case, request)
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    return [card_view(c) for c in response.json()["cards"]]


def about_anastrozole_case() -> dict[str, Any]:
    """A seeded case whose call is about anastrozole (so data is needed) and fires a card."""
    return next(c for c in CASES if c["expect"] and c["request"]["hook"] == "order-sign")


def test_seed_fixtures_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_sandbox_seed", sb.ROOT / "scripts" / "make_sandbox_seed.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    seed, doc, _ = generator.build()
    hint = "stale: run scripts/make_sandbox_seed.py"
    # Booleans: a diff of two 300 kB JSON texts helps nobody; the hint does.
    seed_current = sb.SEED_PATH.read_text(encoding="utf-8") == generator.dump(seed)
    cases_current = sb.CASES_PATH.read_text(encoding="utf-8") == generator.dump(doc)
    assert seed_current and cases_current, hint


@by_case
def test_seeded_case_still_fires_its_expected_rules(osteoguard: TestClient, today: date, case) -> None:
    fired = {c["topic"] for c in cards(osteoguard, case, full_request(case, today))}
    assert set(case["expect"]) <= fired
    assert not set(case["forbid"]) & fired


@by_case
def test_sandbox_answers_each_prefetch_query_with_the_case_resources(
    fhir_sandbox: sb.Sandbox, osteoguard: TestClient, today: date, case
) -> None:
    discovery = osteoguard.get("/cds-services").json()
    templates = next(s for s in discovery["services"] if s["id"] == case["service"])["prefetch"]
    prefetch = full_request(case, today)["prefetch"]
    with httpx.Client(timeout=10, trust_env=sb.trust_env(fhir_sandbox.base_url)) as client:
        for key, template in templates.items():
            query = template.replace("{{context.patientId}}", quote(case["patientId"], safe=""))
            got = sorted((r["resourceType"], r["id"]) for r in sb.search_all(client, fhir_sandbox, query))
            value = prefetch[key]
            want = sorted(
                (r["resourceType"], r["id"])
                for r in ([e["resource"] for e in value.get("entry") or []] if key != "patient" else [value])
            )
            assert got == want, f"{key}: {query}"


@by_case
def test_partial_prefetch_with_fhir_server_gives_the_same_cards(
    fhir_sandbox: sb.Sandbox, osteoguard: TestClient, today: date, case
) -> None:
    expected = cards(osteoguard, case, full_request(case, today))
    assert cards(osteoguard, case, partial_request(case, today, fhir_sandbox)) == expected


@by_case
def test_no_prefetch_with_fhir_server_gives_the_same_cards(
    fhir_sandbox: sb.Sandbox, osteoguard: TestClient, today: date, case
) -> None:
    expected = cards(osteoguard, case, full_request(case, today))
    request = bare_request(case, today, fhir_sandbox.base_url, fhir_sandbox.token)
    assert cards(osteoguard, case, request) == expected


def test_wrong_token_is_412_without_the_token(
    fhir_sandbox: sb.Sandbox, osteoguard: TestClient, today: date
) -> None:
    if not fhir_sandbox.token:
        pytest.skip("FHIR_SANDBOX_URL names a server without authentication (no FHIR_SANDBOX_TOKEN)")
    case = about_anastrozole_case()
    wrong = f"wrong-{secrets.token_urlsafe(24)}"
    request = bare_request(case, today, fhir_sandbox.base_url, wrong)
    response = post(osteoguard, case, request)
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    assert wrong not in response.text and fhir_sandbox.token not in response.text
    assert not any(wrong in v for v in response.headers.values())


def test_unreachable_fhir_server_is_412(osteoguard: TestClient, today: date) -> None:
    case = about_anastrozole_case()
    closed = f"http://127.0.0.1:{sb.free_port()}/fhir"
    request = bare_request(case, today, closed, secrets.token_urlsafe(24))
    response = post(osteoguard, case, request)
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
