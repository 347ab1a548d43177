"""Where the time of one typical hook call goes, measured in-process (no HTTP, no load).

    .venv/bin/python bench/breakdown.py                      # typical request, whole apps and steps
    .venv/bin/python bench/breakdown.py --kind large --steps  # the pipeline's steps only

Each part runs alone in a loop; the figure is the lowest of seven medians, because this kind
of machine has slow phases. Inside a loaded server every part takes longer (colder caches),
so the parts are for comparing with each other and with the floor's app, not for adding up.
JWT verification is measured by bench/jwt_verify.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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
from bench.requests import payload  # noqa: E402
from bench.run import PATH  # noqa: E402
from cds_hooks.models import to_json_dict  # noqa: E402
from service.app import create_app  # noqa: E402
from service.pipeline.registry import Call, Registry  # noqa: E402
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


async def steps(registry: Registry, service_id: str, body: bytes) -> list[tuple[str, float]]:
    """Each step of the service's own pipeline (service.pipeline.registry), timed alone.

    A step that needs a fresh call is timed with it, and the fresh call's own time taken off.
    """
    service = registry.look_up(service_id)
    parsed = orjson.loads(body)  # the steps read the payload, never change it

    def fresh() -> Call:
        return registry.validate(service, parsed)

    call = fresh()
    assert await registry.about_anastrozole(call)
    patient = await registry.gather(call)
    facts = registry.derive_facts(call, patient)
    firings = registry.evaluate(call, facts)
    cards = registry.build_cards(call, facts, firings)
    response = await registry.call(service_id, orjson.loads(body))

    async def about() -> None:
        await registry.about_anastrozole(fresh())

    async def gather() -> None:
        await registry.gather(call)

    async def record() -> None:
        await registry.record(call, list(cards))

    async def whole() -> None:
        await registry.call(service_id, orjson.loads(body))

    validate = measure(fresh)
    rows = [
        ("  JSON parsing (orjson)", measure(lambda: orjson.loads(body))),
        ("  validate", validate),
        ("  about anastrozole", await measure_async(about) - validate),
        ("  gather (prefetch)", await measure_async(gather)),
        ("  facts from FHIR", measure(lambda: registry.derive_facts(call, patient))),
        ("  the rules (durable_rules)", measure(lambda: registry.evaluate(call, facts))),
        ("  the card", measure(lambda: registry.build_cards(call, facts, firings))),
        ("  record (snoozes, audit queue)", await measure_async(record)),
        ("  response serialisation", measure(lambda: orjson.dumps(to_json_dict(response)))),
    ]
    return [
        ("pipeline: parse, registry.call", await measure_async(whole)),
        *rows,
        ("  sum of the steps", sum(micros for _, micros in rows)),
    ]


async def main() -> None:
    global ROUNDS, CALLS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("typical", "large"), default="typical")
    parser.add_argument("--steps", action="store_true", help="only the pipeline's steps, not the apps")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args()
    ROUNDS, CALLS = args.rounds, args.calls
    body = payload(args.kind)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # The loop here never idles between calls, so its lag probe would see the whole run as
        # one late step and shed every call: the lag bound is set out of reach.
        app = create_app(
            Settings(
                auth="off",
                rules_dir=PACKAGED_RULES_DIR,
                database_url=f"sqlite:///{tmp}/b.db",
                max_loop_lag_ms=60_000,
            )
        )
        async with app.router.lifespan_context(app):
            # The service logs one access line per call; to the terminal that would be timed too.
            devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(devnull)
            registry = app.state.registry
            if not args.steps:
                rows.append(("the floor's whole app", await measure_async(asgi_call(floor_app, body))))
                rows.append(("Osteoguard's whole app, auth off", await measure_async(asgi_call(app, body))))
            rows.extend(await steps(registry, "anastrozole-bone-order-select", body))
            assert registry.audit is not None
            await registry.audit.flush()
    for label, micros in rows:
        print(f"{label:<36}{micros:8.1f} µs")


if __name__ == "__main__":
    asyncio.run(main())
