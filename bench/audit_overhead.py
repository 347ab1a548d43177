"""Added latency of the card audit and snooze check on the hook path (in-process, ASGI).

Runs the same order-sign request (2 cards) through the app with the store on SQLite, on
PostgreSQL (if OSTEOGUARD_TEST_POSTGRES_URL is set, e.g. under scripts/with-postgres), and
through the same pipeline with no store, and prints the median and p90 per call.

    .venv/bin/python bench/audit_overhead.py
    scripts/with-postgres .venv/bin/python bench/audit_overhead.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.requests import request  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import PACKAGED_RULES_DIR, Settings  # noqa: E402

CALLS = 400
URL = "/cds-services/anastrozole-bone-order-select"


async def measure(database_url: str, with_store: bool) -> list[float]:
    app = create_app(Settings(auth="off", rules_dir=PACKAGED_RULES_DIR, database_url=database_url))
    times: list[float] = []
    async with app.router.lifespan_context(app):
        registry = app.state.registry
        if not with_store:
            registry.recorder = None  # same pipeline, no snooze lookup and no audit
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            body = request("typical")
            for i in range(CALLS + 50):
                start = time.perf_counter()
                response = await http.post(URL, json=body)
                elapsed = time.perf_counter() - start
                assert response.status_code == 200 and len(response.json()["cards"]) == 1
                if i >= 50:  # warm-up
                    times.append(elapsed)
            if registry.audit is not None:
                await registry.audit.flush()
    return times


def summary(label: str, times: list[float]) -> float:
    median = statistics.median(times) * 1000
    p90 = sorted(times)[int(len(times) * 0.9)] * 1000
    print(f"{label:<28} median {median:6.3f} ms   p90 {p90:6.3f} ms")
    return median


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{tmp}/bench.db"
        base = summary("no store", asyncio.run(measure(sqlite_url, with_store=False)))
        sqlite = summary("SQLite (audit + snooze)", asyncio.run(measure(sqlite_url, with_store=True)))
        print(f"  added by the store on SQLite: {sqlite - base:+.3f} ms (median)")
    pg = os.environ.get("OSTEOGUARD_TEST_POSTGRES_URL")
    if pg:
        postgres = summary("PostgreSQL (audit + snooze)", asyncio.run(measure(pg, with_store=True)))
        print(f"  added by the store on PostgreSQL: {postgres - base:+.3f} ms (median)")


if __name__ == "__main__":
    main()
