"""Where the time of one typical hook call goes, measured in-process (no HTTP, no load).

    .venv/bin/python bench/breakdown.py

Each part runs alone in a loop; the figure is the lowest of seven medians, because this kind
of machine has slow phases. Inside a loaded server every part takes longer (colder caches),
so the parts are for comparing with each other and with the floor's app, not for adding up.
JWT verification is measured by bench/jwt_verify.py.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import app as floor_app  # noqa: E402
from bench.run import PATH, payload  # noqa: E402
from cds_hooks.models import CdsRequest, to_json_dict  # noqa: E402
from service.cards import CardBuilder  # noqa: E402
from service.facts import FactBuilder, PatientData  # noqa: E402
from service.fhir import bundle_resources  # noqa: E402
from service.hooks import parse_context  # noqa: E402
from service.main import create_app  # noqa: E402
from service.prefetch import PREFETCH_KEYS  # noqa: E402
from service.settings import PACKAGED_RULES_DIR, Settings  # noqa: E402

ROUNDS, CALLS = 7, 1500


def measure(fn: Callable[[], Any]) -> float:
    for _ in range(200):
        fn()
    medians = []
    for _ in range(ROUNDS):
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return min(medians) * 1e6


async def measure_async(fn: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(200):
        await fn()
    medians = []
    for _ in range(ROUNDS):
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            await fn()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return min(medians) * 1e6


def asgi_call(app: Any, body: bytes) -> Callable[[], Awaitable[None]]:
    """One POST of ``body`` straight into an ASGI app, as uvicorn would hand it over."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app({**scope, "state": {}}, receive, send)
        assert status == [200], status

    return call


async def main() -> None:
    body = payload("typical")
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            Settings(auth="off", rules_dir=PACKAGED_RULES_DIR, database_url=f"sqlite:///{tmp}/b.db")
        )
        async with app.router.lifespan_context(app):
            registry = app.state.registry
            rows.append(("the floor's whole app", await measure_async(asgi_call(floor_app, body))))
            rows.append(("Osteoguard's whole app, auth off", await measure_async(asgi_call(app, body))))
            service = "anastrozole-bone-order-select"
            rows.append(("  JSON parsing (orjson)", measure(lambda: orjson.loads(body))))
            request = CdsRequest.model_validate(orjson.loads(body))
            ctx = parse_context(request.hook, request.context)
            prefetch = request.prefetch or {}
            data = PatientData(
                patient_id=ctx.patient_id,
                patient=prefetch["patient"],
                resources=[r for key in PREFETCH_KEYS[1:] for r in bundle_resources(prefetch[key])],
                drafts=ctx.drafts,
                hook=request.hook,
                anastrozole_drafts=list(ctx.drafts),
            )
            today = registry.today()
            facts = FactBuilder(registry.ruleset, today).build(data)
            firings = registry.engine.evaluate(facts)

            def facts_once() -> Any:  # a new builder per call, as the service makes one
                return FactBuilder(registry.ruleset, today).build(data)

            rows.append(("  facts from FHIR", measure(facts_once)))
            rows.append(("  the rules (durable_rules)", measure(lambda: registry.engine.evaluate(facts))))

            def card() -> Any:
                return CardBuilder(registry.ruleset, today).build(
                    firings, patient_id=ctx.patient_id, sex="male", drafts=list(ctx.drafts)
                )

            rows.append(("  the card", measure(card)))
            response = await registry.call(service, orjson.loads(body))
            rows.append(("  response serialisation", measure(lambda: orjson.dumps(to_json_dict(response)))))
            with_store = await measure_async(lambda: registry.call(service, orjson.loads(body)))
            store, registry.store = registry.store, None
            without = await measure_async(lambda: registry.call(service, orjson.loads(body)))
            registry.store = store
            rows.append(("  snooze check and audit queue", with_store - without))
            await registry.audit.flush()
    for label, micros in rows:
        print(f"{label:<36}{micros:8.1f} µs")


if __name__ == "__main__":
    asyncio.run(main())
