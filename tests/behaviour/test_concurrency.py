"""Hundreds of concurrent hook calls for different patients, each must get its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from service.app import create_app
from tests.builders import SERVICE_FOR_HOOK, order_sign, patient_view
from tests.conftest import make_settings

N_REQUESTS = 400


def scenario(n: int) -> tuple[dict[str, Any], set[str]]:
    """A request for patient n and the rule ids it must produce, varied over n."""
    pid = f"conc-{n}"
    sex = ("male", "female", None)[n % 3]
    low = n % 2 == 0
    old_dxa = n % 5 == 0
    no_vitd = n % 7 == 0
    tscore = -2.7 if n % 11 == 0 else -0.5
    build = patient_view if n % 4 == 0 else order_sign
    req = build(
        pid,
        gender=sex,
        e2=7.0 if low else 30.0,
        dxa_days=900 if old_dxa else 100,
        vitd=None if no_vitd else 40.0,
        tscore=tscore,
    )
    expected = set()
    if low and sex == "male":
        expected.add("low-estradiol")
    if old_dxa:
        expected.add("baseline-dexa")
    if no_vitd:
        expected.add("vitamin-d")
    if tscore <= -2.5:
        expected.add("osteoporosis-antiresorptive")
    return req, expected


async def _run_all() -> list[tuple[int, set[str], set[str], int]]:
    # All 400 calls are in flight at once, on a loop that lags under that load: shedding is
    # not what this test is about (tests/service/http/test_edge.py is), so it is out of reach.
    app = create_app(make_settings(max_in_flight=N_REQUESTS, max_loop_lag_ms=60_000))
    results: list[tuple[int, set[str], set[str], int]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def one(n: int) -> None:
                req, expected = scenario(n)
                response = await http.post(f"/cds-services/{SERVICE_FOR_HOOK[req['hook']]}", json=req)
                cards = response.json().get("cards", [])
                got = {c["source"]["topic"]["code"] for c in cards}
                # Every patient-specific reference in a card must be this patient's.
                for card in cards:
                    for suggestion in card.get("suggestions", []):
                        for action in suggestion["actions"]:
                            ref = action.get("resource", {}).get("subject", {}).get("reference")
                            assert ref in (None, f"Patient/{req['context']['patientId']}")
                results.append((n, expected, got, response.status_code))

            await asyncio.gather(*(one(n) for n in range(N_REQUESTS)))
    return results


def test_concurrent_requests_for_different_patients_get_their_own_cards() -> None:
    results = asyncio.run(_run_all())
    assert len(results) == N_REQUESTS
    wrong = [(n, exp, got) for n, exp, got, status in results if status != 200 or exp != got]
    assert wrong == []
