"""The ASGI application: ``create_app()``; the lifespan owns the rule set and the engine."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import anyio
import httpx
from fastapi import FastAPI

from cds_hooks.errors import ConfigurationError, TrustedClientsError
from cds_hooks.fhir_client import FhirFetcher
from cds_hooks.jwt import Verifier
from cds_hooks.keysets import KeyStore
from cds_hooks.trust import TrustFile, load_trust_file, unknown_rule_ids
from service.engine.adapter import RuleEngine
from service.errors import RuleSetError, StoreUnavailable
from service.http import handlers
from service.http.cors import LoggedCORS
from service.http.edge import Edge
from service.http.routes import cds_routes, ops_router
from service.http.ruledocs import docs_router
from service.logs import configure_logging, quiet_libraries
from service.metrics import (
    RULESET,
    count_fhir_fetch,
    count_fhir_too_large,
    count_not_offered,
    count_withheld,
)
from service.pipeline.record import Recorder
from service.pipeline.registry import Registry, utc_now
from service.pipeline.services import SERVICES
from service.pipeline.warmup import warm_up
from service.ruleset.docs import docs_base
from service.ruleset.loader import load_ruleset
from service.ruleset.model import RuleSet
from service.ruleset.reload import RuleReloader
from service.settings import Settings, audit_spool_dir, check_serving, get_settings, patient_hash_key
from service.store.audit import AuditWriter
from service.store.database import Store
from service.store.snoozes import SnoozeCache
from service.store.spool import Spool
from service.store.tokens import SqliteTokenLedger, StoreTokenLedger, token_ledger

log = logging.getLogger("osteoguard")
SERVICE_IDS = frozenset(s.id for s in SERVICES)
GIL_SWITCH_S = 0.001  # sys.setswitchinterval for a serving process: see the lifespan


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


def load_trust(settings: Settings, ruleset: RuleSet) -> TrustFile:
    """The trusted-clients file with its per-client settings (SPEC §1, §8), checked against the
    rule set; with auth off it is optional and only its ``defaults:`` matter."""
    trust = TrustFile({})
    if settings.auth == "jwt":
        if settings.trusted_clients is None:
            raise TrustedClientsError(
                "OSTEOGUARD_TRUSTED_CLIENTS is not set, and OSTEOGUARD_AUTH=jwt needs it (the "
                "trusted-clients file; `osteoguard client keygen` makes an entry); "
                "OSTEOGUARD_AUTH=off only for local trials"
            )
        trust = load_trust_file(settings.trusted_clients)
    elif settings.trusted_clients is not None:  # its `defaults:` apply to every call
        trust = load_trust_file(settings.trusted_clients, require_clients=False)
    unknown = unknown_rule_ids(trust, {rule.id for rule in ruleset.rules})
    if unknown:
        raise TrustedClientsError(
            f"{settings.trusted_clients}: settings switch unknown rule id(s) {', '.join(unknown)} "
            f"(rule set {ruleset.name} {ruleset.version} has: {', '.join(r.id for r in ruleset.rules)})"
        )
    return trust


def check_configuration(settings: Settings) -> None:
    """What start-up needs, checked before the server starts, so that bad configuration is one
    line naming the setting (SPEC §1) instead of a failed lifespan: the rule set, the trusted
    clients and their settings, the patient-hash key and the store (migrated here, as at
    start-up)."""
    try:
        ruleset = load_ruleset(settings.rules_dir)
    except RuleSetError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        first = exc.problems[0] if exc.problems else "invalid rule set"
        raise ConfigurationError(
            f"OSTEOGUARD_RULES_DIR={str(settings.rules_dir)!r}: {first}{more}; "
            f"`osteoguard rules check {settings.rules_dir}` lists every problem"
        ) from None
    try:
        load_trust(settings, ruleset)
    except TrustedClientsError as exc:
        if settings.trusted_clients is None:
            raise
        raise TrustedClientsError(f"OSTEOGUARD_TRUSTED_CLIENTS: {exc.message}") from None
    store = Store(settings.database_url, patient_hash_key(settings))
    try:
        store.open()
    except StoreUnavailable as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "error"
        raise ConfigurationError(f"OSTEOGUARD_DATABASE_URL: {exc.message} ({cause})") from None
    finally:
        store.close()
    check_spool_dir(audit_spool_dir(settings))


def check_spool_dir(folder: Path) -> None:
    """The audit spool's folder can be made and written (or start-up refuses, naming it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"OSTEOGUARD_AUDIT_SPOOL_DIR={str(folder)!r}: cannot be written ({type(exc).__name__})"
        ) from None


def create_app(settings: Settings | None = None, now: Callable[[], datetime] = utc_now) -> FastAPI:
    """Build the app. The rule set is loaded (and must validate) when the lifespan starts."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        # A worker process of `serve --workers N` starts with no logging set up (spawned).
        configure_logging(settings.log_level)
    quiet_libraries()  # SPEC §9, also where the app is embedded without `osteoguard serve`

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_serving(settings)
        if settings.auth == "off":
            log.warning(
                "OSTEOGUARD_AUTH=off: CDS calls are NOT authenticated. Never expose this to a network."
            )
        ruleset = load_ruleset(settings.rules_dir)
        trust = load_trust(settings, ruleset)
        clients = trust.clients if settings.auth == "jwt" else None
        app.state.trust = trust
        store = Store(settings.database_url, patient_hash_key(settings))
        await anyio.to_thread.run_sync(store.open)  # applies migrations
        engine = RuleEngine(ruleset)
        http = new_http_client(settings.fhir_timeout_s)
        spool = Spool(audit_spool_dir(settings), settings.audit_spool_max_bytes)
        audit = AuditWriter(store, spool, settings.audit_max_age_ms / 1000)
        await audit.start()  # adopts (and so replays) spools left by processes that died
        snoozes = SnoozeCache(store, now, settings.snooze_refresh_s)
        await snoozes.start()
        app.state.verifier = None
        ledger = token_ledger(store)
        # Calls need the main database itself (not just somewhere durable for their cards)
        # when JWT ids are kept there: then an unreachable database makes the service unready.
        app.state.calls_need_database = clients is not None and isinstance(ledger, StoreTokenLedger)
        if clients is not None:
            keys = KeyStore(http, deadline_s=settings.jwks_deadline_s, max_bytes=settings.jwks_max_bytes)
            app.state.verifier = Verifier(clients, keys, ledger)
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
            fetcher=FhirFetcher(
                http,
                settings.fhir_timeout_s,
                on_outcome=count_fhir_fetch,
                listed=settings.fhir_private_server_set,
                max_bytes=settings.fhir_max_bytes,
                on_too_large=count_fhir_too_large,
            ),
            recorder=Recorder(store, now, audit, snoozes, on_withheld=count_withheld),
            docs_base=pages,
            on_not_offered=count_not_offered,
        )
        await warm_up(Registry(ruleset, engine, lambda: now().date(), docs_base=pages))
        reloader = RuleReloader(app.state.registry, settings.rules_dir, settings.rules_reload_s)
        reloader.start()
        app.state.reloader = reloader
        RULESET.info({"name": ruleset.name, "version": ruleset.version})
        log.info("rule set %s %s loaded (%d rules)", ruleset.name, ruleset.version, len(ruleset.rules))
        # The audit writer's thread takes the GIL back after each database call; with the
        # default 5 ms switch interval a busy event loop made it wait up to 5 ms each time, so
        # under full load a fifth of the batches overran their budget and were spooled (fsync,
        # then a second write), and p99 at 8 connections was 85-92 ms. At 1 ms: no batch
        # spooled, p99 14-20 ms, 649 -> 680 requests/s (docs/speed.md). Process-wide, so it is
        # given back when the app stops (a test process runs many apps).
        switch_before = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            yield
        finally:
            sys.setswitchinterval(switch_before)
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
        # FastAPI's own OpenTelemetry off: its spans and exception logs would carry paths and
        # foreign exception messages (SPEC §9), our metrics are Prometheus (service.metrics),
        # and asking the global providers whether it is on cost about 3 µs a request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.router.routes.extend(cds_routes)  # plain Starlette routes (service.http.routes)
    app.include_router(ops_router)
    app.include_router(docs_router)  # public: the rule documentation holds no patient data
    app.add_middleware(
        Edge,
        service_ids=SERVICE_IDS,
        max_in_flight=settings.max_in_flight,
        max_loop_lag_s=settings.max_loop_lag_ms / 1000,
    )
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            LoggedCORS,  # CORSMiddleware that logs and counts preflights it refuses
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,  # bearer tokens, never cookies; and never with a wildcard
            max_age=600,
        )

    handlers.install(app, SERVICE_IDS)
    return app
