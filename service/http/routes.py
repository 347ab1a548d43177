"""HTTP routes: discovery, hook calls and health. Thin: all logic is in the registry.

The CDS Hooks endpoints (:data:`cds_routes`) are plain Starlette routes, each built by
:func:`cds_route`, which puts the JWT check in front of it. FastAPI's request and dependency
machinery (solving the signature, a dependency, an exit stack) does nothing these endpoints
need (they read the raw JSON body) and took about 100-170 µs of a hook call (in-process, the
pipeline stubbed: 270-360 -> 140-260 µs). Their errors go through the same exception handlers
(:mod:`service.http.handlers`). The probes and metrics stay FastAPI routes
(:data:`ops_router`); the rule documentation pages have their own router
(:mod:`service.http.ruledocs`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.routing import Route

from cds_hooks.feedback import parse_batch
from cds_hooks.models import to_json_dict
from cds_hooks.trust import DEFAULT_SETTINGS
from service import metrics
from service.errors import StoreUnavailable, UnknownCard, UnknownService
from service.http.auth import authenticate
from service.http.body import JsonResponse, read_json
from service.http.edge import note_access
from service.http.ruledocs import request_docs_base
from service.pipeline.registry import Registry
from service.store.database import CardRecord, SnoozeRecord
from service.store.feedback import record_feedback

log = logging.getLogger("osteoguard.api")
# Operational endpoints: probes and metrics, never authenticated (kept off the ingress).
ops_router = APIRouter()
# Before a 404 for an unknown card, the database is asked again once this long after the
# audit's age bound: another replica may have issued it a moment ago (its record reaches the
# database within the bound, unless that replica is spooling).
RECHECK_MARGIN_S = 0.1


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


Endpoint = Callable[[Request], Awaitable[Response]]


def cds_route(path: str, endpoint: Endpoint, method: str) -> Route:
    """A CDS Hooks endpoint: a Starlette route whose caller's JWT is verified first."""

    @functools.wraps(endpoint)
    async def authenticated(request: Request) -> Response:
        await authenticate(request)
        return await endpoint(request)

    route = Route(path, authenticated, methods=[method])
    route.methods = {method}  # Starlette adds HEAD to a GET route; the CDS routes never had it
    return route


async def discovery(request: Request) -> Response:
    return JsonResponse(to_json_dict(registry(request).discovery()))


async def call_service(request: Request) -> Response:
    service_id: str = request.path_params["service_id"]
    payload = await read_json(request)
    iss = getattr(request.state, "client_iss", None)
    trust = getattr(request.app.state, "trust", None)
    settings = trust.settings_for(iss) if trust is not None else DEFAULT_SETTINGS
    response = await registry(request).call(
        service_id, payload, docs_base=request_docs_base(request), client_iss=iss, settings=settings
    )
    rules = [c.source.topic.code for c in response.cards if c.source.topic]
    for card in response.cards:
        metrics.count_card(card.source.topic.code if card.source.topic else "", card.indicator.value)
    note_access(cards=len(response.cards), rules=rules)  # counts and rule ids: never patient data
    return JsonResponse(to_json_dict(response))


async def call_feedback(request: Request) -> Response:
    service_id: str = request.path_params["service_id"]
    reg = registry(request)
    if service_id not in reg.services:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    if reg.store is None:
        raise StoreUnavailable("feedback cannot be stored: no store is configured")
    arrived = time.monotonic()
    batch = parse_batch(await read_json(request))
    audit = reg.audit
    uuids = [e.card for e in batch.feedback]
    store = reg.store

    def record(not_yet_stored: dict[str, CardRecord]) -> tuple[int, int, list[SnoozeRecord]]:
        return record_feedback(store, reg.ruleset, service_id, batch, reg.now(), not_yet_stored)

    def known() -> dict[str, CardRecord]:
        # Cards this process issued are found in its memory or spool if not yet in the database.
        return audit.known(uuids) if audit is not None else {}

    if audit is not None:
        # Cards issued a moment ago reach the database first, where the database takes them.
        await audit.flush(timeout_s=audit.max_age_s)
    try:
        new, duplicates, snoozed = await anyio.to_thread.run_sync(record, known())
    except UnknownCard:
        if audit is None:
            raise
        await asyncio.sleep(max(0.0, arrived + audit.max_age_s + RECHECK_MARGIN_S - time.monotonic()))
        new, duplicates, snoozed = await anyio.to_thread.run_sync(record, known())
    if reg.snoozes is not None:
        reg.snoozes.add(snoozed)  # this replica honours the snooze at once
    log.info("feedback stored", extra={"service": service_id, "new": new, "duplicates": duplicates})
    return JsonResponse({"stored": new, "duplicates": duplicates})


# The CDS Hooks endpoints: discovery, the services and feedback, each behind the JWT check.
cds_routes = [
    cds_route("/cds-services", discovery, "GET"),
    cds_route("/cds-services/{service_id}", call_service, "POST"),
    cds_route("/cds-services/{service_id}/feedback", call_feedback, "POST"),
]


@ops_router.get("/metrics")
async def metrics_endpoint() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@ops_router.get("/healthz")
async def healthz() -> JsonResponse:
    return JsonResponse({"status": "ok"})


@ops_router.get("/readyz")
async def readyz(request: Request) -> JsonResponse:
    """Ready when the rules are loaded and every card can be made durable: in the database,
    or, while it is away, in the audit spool (``store: degraded, spooling``). Not ready when
    the spool is full or cannot be written, or when calls need the database itself (JWT ids
    kept in PostgreSQL) and it does not answer."""
    reg = registry(request)
    store_state = "ok"
    if reg.store is not None:
        try:
            await anyio.to_thread.run_sync(reg.store.ping)
            reachable = True
        except Exception:
            reachable = False
        durable, state = reg.audit.health() if reg.audit is not None else (reachable, "ok")
        if not reachable and (reg.audit is None or getattr(request.app.state, "calls_need_database", False)):
            durable, state = False, "store unreachable"
        if not durable:
            log.warning("readiness: %s", state)
            return JsonResponse({"status": "unavailable", "reason": state}, status_code=503)
        store_state = state if reachable else "degraded, spooling"
    return JsonResponse(
        {"status": "ready", "ruleset": reg.ruleset.name, "version": reg.ruleset.version, "store": store_state}
    )
