"""HTTP routes: discovery, hook calls and health. Thin: all logic is in the registry.

The rule documentation pages have their own router (:mod:`service.http.ruledocs`).
"""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cds_hooks.feedback import parse_batch
from cds_hooks.models import to_json_dict
from cds_hooks.trust import DEFAULT_SETTINGS
from service import metrics
from service.errors import StoreUnavailable, UnknownService
from service.http.auth import authenticate
from service.http.body import JsonResponse, read_json
from service.http.edge import note_access
from service.http.ruledocs import request_docs_base
from service.pipeline.registry import Registry
from service.store.feedback import record_feedback

log = logging.getLogger("osteoguard.api")
# The CDS Hooks endpoints: discovery, the services and feedback, each behind the JWT check.
router = APIRouter(dependencies=[Depends(authenticate)])
# Operational endpoints: probes and metrics, never authenticated (kept off the ingress).
ops_router = APIRouter()


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


@router.get("/cds-services")
async def discovery(request: Request) -> JsonResponse:
    return JsonResponse(to_json_dict(registry(request).discovery()))


@router.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> JsonResponse:
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


@router.post("/cds-services/{service_id}/feedback")
async def call_feedback(service_id: str, request: Request) -> JsonResponse:
    reg = registry(request)
    if service_id not in reg.services:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    if reg.store is None:
        raise StoreUnavailable("feedback cannot be stored: no store is configured")
    batch = parse_batch(await read_json(request))
    if reg.audit is not None:
        await reg.audit.flush()  # cards issued a moment ago are in the audit before we look
    new, duplicates, snoozed = await anyio.to_thread.run_sync(
        record_feedback, reg.store, reg.ruleset, service_id, batch, reg.now()
    )
    if reg.snoozes is not None:
        reg.snoozes.add(snoozed)  # this replica honours the snooze at once
    log.info("feedback stored", extra={"service": service_id, "new": new, "duplicates": duplicates})
    return JsonResponse({"stored": new, "duplicates": duplicates})


@ops_router.get("/metrics")
async def metrics_endpoint() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@ops_router.get("/healthz")
async def healthz() -> JsonResponse:
    return JsonResponse({"status": "ok"})


@ops_router.get("/readyz")
async def readyz(request: Request) -> JsonResponse:
    """Ready when the rules are loaded and the store answers."""
    reg = registry(request)
    if reg.store is not None:
        try:
            await anyio.to_thread.run_sync(reg.store.ping)
        except Exception:
            log.warning("readiness: store unreachable")
            return JsonResponse({"status": "unavailable", "reason": "store unreachable"}, status_code=503)
    return JsonResponse({"status": "ready", "ruleset": reg.ruleset.name, "version": reg.ruleset.version})
