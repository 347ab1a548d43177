"""The ASGI application: ``create_app()``; the lifespan owns the rule set and the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
import httpx
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from cds_hooks.errors import ConfigurationError, TrustedClientsError
from cds_hooks.fhir_client import FhirFetcher
from cds_hooks.jwt import Verifier
from cds_hooks.keysets import KeyStore
from cds_hooks.trust import load_trusted_clients
from service.engine.adapter import RuleEngine
from service.errors import RuleSetError, StoreUnavailable
from service.http import handlers
from service.http.edge import Edge
from service.http.routes import ops_router, router
from service.http.ruledocs import docs_router
from service.logs import configure_logging, quiet_libraries
from service.metrics import RULESET, count_fhir_fetch
from service.pipeline.record import Recorder
from service.pipeline.registry import Registry, utc_now
from service.pipeline.services import SERVICES
from service.pipeline.warmup import warm_up
from service.ruleset.docs import docs_base
from service.ruleset.loader import load_ruleset
from service.ruleset.reload import RuleReloader
from service.settings import Settings, get_settings, patient_hash_key
from service.store.audit import AuditWriter
from service.store.database import Store
from service.store.snoozes import SnoozeCache
from service.store.tokens import SqliteTokenLedger, StoreTokenLedger, token_ledger

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


def check_configuration(settings: Settings) -> None:
    """What start-up needs, checked before the server starts, so that bad configuration is one
    line naming the setting (SPEC §1) instead of a failed lifespan: the trusted clients, the
    rule set, the patient-hash key and the store (which is migrated here, as at start-up)."""
    if settings.auth == "jwt":
        if settings.trusted_clients is None:
            raise TrustedClientsError(
                "OSTEOGUARD_TRUSTED_CLIENTS is not set, and OSTEOGUARD_AUTH=jwt needs it (the "
                "trusted-clients file; `osteoguard client keygen` makes an entry); "
                "OSTEOGUARD_AUTH=off only for local trials"
            )
        try:
            load_trusted_clients(settings.trusted_clients)
        except TrustedClientsError as exc:
            raise TrustedClientsError(f"OSTEOGUARD_TRUSTED_CLIENTS: {exc.message}") from None
    try:
        load_ruleset(settings.rules_dir)
    except RuleSetError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        first = exc.problems[0] if exc.problems else "invalid rule set"
        raise ConfigurationError(
            f"OSTEOGUARD_RULES_DIR={str(settings.rules_dir)!r}: {first}{more}; "
            f"`osteoguard rules check {settings.rules_dir}` lists every problem"
        ) from None
    store = Store(settings.database_url, patient_hash_key(settings))
    try:
        store.open()
    except StoreUnavailable as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "error"
        raise ConfigurationError(f"OSTEOGUARD_DATABASE_URL: {exc.message} ({cause})") from None
    finally:
        store.close()


def create_app(settings: Settings | None = None, now: Callable[[], datetime] = utc_now) -> FastAPI:
    """Build the app. The rule set is loaded (and must validate) when the lifespan starts."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        # A worker process of `serve --workers N` starts with no logging set up (spawned).
        configure_logging(settings.log_level)
    quiet_libraries()  # SPEC §9, also where the app is embedded without `osteoguard serve`

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
            app.state.verifier = Verifier(clients, KeyStore(http), ledger)
            log.info("JWT verification on", extra={"trusted_clients": sorted(clients)})
        housekeeping = asyncio.create_task(
            _forget_expired_tokens(ledger, now), name="osteoguard-housekeeping"
        )
        app.state.settings = settings
        pages = docs_base(settings.public_url)  # the rule pages, where a call names no base of its own
        app.state.registry = Registry(
            ruleset,
            engine,
            lambda: now().date(),
            fetcher=FhirFetcher(http, settings.fhir_timeout_s, on_outcome=count_fhir_fetch),
            recorder=Recorder(store, now, audit, snoozes),
            docs_base=pages,
        )
        await warm_up(Registry(ruleset, engine, lambda: now().date(), docs_base=pages))
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
        # No generated API pages: FastAPI's /docs, /redoc and /openapi.json would describe
        # routes that read raw JSON (so a schema of little use), unauthenticated even in jwt
        # mode. The CDS Hooks contract is discovery (GET /cds-services); /docs/rules are the
        # rule pages (service.http.ruledocs).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(router)
    app.include_router(ops_router)
    app.include_router(docs_router)  # public: the rule documentation holds no patient data
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

    handlers.install(app, SERVICE_IDS)
    return app
