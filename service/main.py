"""The ASGI application: ``create_app()``; the lifespan owns the rule set and the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from service.api import JsonResponse, router
from service.audit import AuditWriter
from service.auth import AuthError, KeyStore, TrustedClientsError, Verifier, load_trusted_clients
from service.edge import Edge
from service.engine import RuleEngine
from service.errors import (
    OsteoguardError,
    RequestError,
    UnknownService,
    operation_outcome,
)
from service.fhir_client import FhirFetcher
from service.metrics import RULESET, endpoint_labels
from service.registry import SERVICES, Registry, utc_now
from service.reload import RuleReloader
from service.ruleset import load_ruleset
from service.settings import Settings, get_settings, patient_hash_key
from service.snoozes import SnoozeCache
from service.store import Store
from service.tokens import SqliteTokenLedger, StoreTokenLedger, token_ledger
from service.warmup import warm_up

log = logging.getLogger("osteoguard")
SERVICE_IDS = frozenset(s.id for s in SERVICES)


def new_http_client(timeout_s: float) -> httpx.AsyncClient:
    """The one pooled client for FHIR-server fallback. Redirects are not followed, so the
    bearer token only ever goes to the fhirServer the EHR named."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
        headers={"User-Agent": "osteoguard"},
    )


async def _forget_expired_tokens(
    ledger: SqliteTokenLedger | StoreTokenLedger, now: Callable[[], datetime]
) -> None:
    # Waits first: nothing expires at start-up, and a purge in flight while the app shuts down
    # would hold a database connection past the store's close.
    while True:
        await asyncio.sleep(600)
        try:
            await anyio.to_thread.run_sync(ledger.forget_expired, now())
        except Exception as exc:  # housekeeping only; the next round tries again
            log.warning("token housekeeping failed", extra={"error": type(exc).__name__})


def _error_response(error: OsteoguardError) -> JsonResponse:
    return JsonResponse(operation_outcome(error), status_code=error.status_code)


def create_app(settings: Settings | None = None, now: Callable[[], datetime] = utc_now) -> FastAPI:
    """Build the app. The rule set is loaded (and must validate) when the lifespan starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = None
        if settings.auth == "jwt":
            if settings.trusted_clients is None:
                raise TrustedClientsError(
                    "OSTEOGUARD_AUTH=jwt needs OSTEOGUARD_TRUSTED_CLIENTS (the trusted-clients file); "
                    "set OSTEOGUARD_AUTH=off only for local testing"
                )
            clients = load_trusted_clients(settings.trusted_clients)
        else:
            log.warning(
                "OSTEOGUARD_AUTH=off: CDS calls are NOT authenticated. Never expose this to a network."
            )
        ruleset = load_ruleset(settings.rules_dir)
        store = Store(settings.database_url, patient_hash_key(settings))
        await anyio.to_thread.run_sync(store.open)  # applies migrations
        engine = RuleEngine(ruleset)
        http = new_http_client(settings.fhir_timeout_s)
        audit = AuditWriter(store)
        audit.start()
        snoozes = SnoozeCache(store, now, settings.snooze_refresh_s)
        await snoozes.start()
        app.state.verifier = None
        ledger = token_ledger(store)
        if clients is not None:

            async def remember_jti(iss: str, jti: str, expires_at: datetime) -> None:
                if not await ledger.remember(iss, jti, expires_at):
                    raise AuthError("replayed jti", iss=iss, jti=jti)

            app.state.verifier = Verifier(clients, KeyStore(http), remember_jti)
            log.info("JWT verification on", extra={"trusted_clients": sorted(clients)})
        housekeeping = asyncio.create_task(
            _forget_expired_tokens(ledger, now), name="osteoguard-housekeeping"
        )
        app.state.settings = settings
        app.state.registry = Registry(
            ruleset,
            engine,
            lambda: now().date(),
            FhirFetcher(http, settings.fhir_timeout_s),
            store,
            audit,
            now,
            snoozes,
        )
        await warm_up(Registry(ruleset, engine, lambda: now().date()))
        reloader = RuleReloader(app.state.registry, settings.rules_dir, settings.rules_reload_s)
        reloader.start()
        app.state.reloader = reloader
        RULESET.info({"name": ruleset.name, "version": ruleset.version})
        log.info("rule set %s %s loaded (%d rules)", ruleset.name, ruleset.version, len(ruleset.rules))
        try:
            yield
        finally:
            await reloader.stop()
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)
            await snoozes.stop()
            await audit.stop()  # every queued card record is written before we exit
            await http.aclose()
            app.state.registry.engine.close()
            ledger.close()
            store.close()

    app = FastAPI(
        title="Osteoguard",
        summary="CDS Hooks 2.0 service: bone health when anastrozole is prescribed",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(router)
    app.add_middleware(Edge, service_ids=SERVICE_IDS)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,  # bearer tokens, never cookies; and never with a wildcard
            max_age=600,
        )

    @app.exception_handler(AuthError)
    async def on_auth_error(request: Request, exc: AuthError) -> JsonResponse:
        # The reason is for operators; the caller learns nothing about why.
        log.warning(
            "request refused: %s",
            exc.reason,
            # The endpoint kind, not the raw path: a client can put anything in a path.
            extra={
                "iss": exc.iss,
                "jti": exc.jti,
                "endpoint": endpoint_labels(request.url.path, SERVICE_IDS)[0],
            },
        )
        response = _error_response(exc)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(OsteoguardError)
    async def on_error(request: Request, exc: OsteoguardError) -> JsonResponse:
        if exc.status_code >= 500:
            log.error("request failed: %s (%s)", exc.error_code, type(exc.__cause__).__name__)
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        if exc.status_code == 404:
            return _error_response(UnknownService(f"no resource at {request.url.path}"))
        error = RequestError(str(exc.detail))
        error.status_code = exc.status_code
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JsonResponse:
        return _error_response(RequestError("invalid request"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JsonResponse:
        # The type only: messages of foreign exceptions can echo request content.
        log.error("unexpected error: %s", type(exc).__name__)
        return _error_response(OsteoguardError("internal error; the request was not evaluated"))

    return app
