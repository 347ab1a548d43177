"""HTTP routes: discovery, hook calls and health. Thin: all logic is in the registry."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from cds_hooks.models import to_json_dict
from service import metrics
from service.edge import note_access
from service.errors import BodyTooLarge, InvalidJson, UnknownService
from service.feedback import parse_batch, record_feedback
from service.registry import Registry
from service.store import StoreUnavailable

log = logging.getLogger("osteoguard.api")
router = APIRouter()


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


async def authenticate(request: Request) -> None:
    """Verify the CDS Hooks JWT when auth is on; ``aud`` must be this endpoint's URL."""
    verifier = request.app.state.verifier
    if verifier is None:
        return
    public_url = request.app.state.settings.public_url
    if public_url:
        audience = public_url.rstrip("/") + request.url.path
    else:
        audience = str(request.url.replace(query="", fragment=""))
    await verifier.verify(request.headers.get("authorization"), audience)


async def read_json(request: Request) -> Any:
    """The request body as JSON, refusing bodies over the configured limit before parsing."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc.msg}") from exc


@router.get("/cds-services")
async def discovery(request: Request) -> JsonResponse:
    await authenticate(request)
    return JsonResponse(to_json_dict(registry(request).discovery()))


@router.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> JsonResponse:
    await authenticate(request)
    payload = await read_json(request)
    response = await registry(request).call(service_id, payload)
    rules = [c.source.topic.code for c in response.cards if c.source.topic]
    for card in response.cards:
        metrics.count_card(card.source.topic.code if card.source.topic else "", card.indicator.value)
    note_access(cards=len(response.cards), rules=rules)  # counts and rule ids: never patient data
    return JsonResponse(to_json_dict(response))


@router.post("/cds-services/{service_id}/feedback")
async def call_feedback(service_id: str, request: Request) -> JsonResponse:
    await authenticate(request)
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


@router.get("/metrics")
async def metrics_endpoint() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/healthz")
async def healthz() -> JsonResponse:
    return JsonResponse({"status": "ok"})


@router.get("/readyz")
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
