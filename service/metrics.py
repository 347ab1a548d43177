"""Prometheus metrics (``GET /metrics``). Labels never carry patient data.

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty writable folder so
the workers' numbers are added up (prometheus-client multiprocess mode); otherwise each
scrape sees the worker that answered it.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("osteoguard_requests_total", "HTTP requests answered", ["endpoint", "service", "status"])
LATENCY = Histogram(
    "osteoguard_request_seconds",
    "Time to answer an HTTP request",
    ["endpoint", "service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CARDS = Counter("osteoguard_cards_total", "Cards returned", ["rule_id", "indicator"])
FHIR_FETCHES = Counter("osteoguard_fhir_fetches_total", "FHIR-server fallback queries", ["key", "outcome"])
JWT_REJECTIONS = Counter(
    "osteoguard_jwt_rejections_total", "Requests refused by JWT verification", ["reason"]
)
RULESET = Info("osteoguard_ruleset", "The rule set being served")
RULESET_RELOADS = Counter("osteoguard_ruleset_reloads_total", "Rule-set reload attempts", ["outcome"])


def render() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def reason_label(reason: str) -> str:
    """A bounded label for a JWT rejection reason (the first words, no values)."""
    return reason.split(" (")[0].split(":")[0][:40]


class Instrument:
    """Pure ASGI middleware: request count and latency by endpoint kind, service id and status."""

    def __init__(self, app: ASGIApp, service_ids: frozenset[str]) -> None:
        self.app = app
        self.service_ids = service_ids

    def _labels(self, path: str) -> tuple[str, str]:
        parts = path.strip("/").split("/")
        if parts[0] != "cds-services":
            return (parts[0] if parts[0] in ("healthz", "readyz", "metrics") else "other"), ""
        if len(parts) == 1:
            return "discovery", ""
        service = parts[1] if parts[1] in self.service_ids else "unknown"
        return ("feedback" if len(parts) == 3 and parts[2] == "feedback" else "hook"), service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint, service = self._labels(scope["path"])
        status = 500
        started = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            LATENCY.labels(endpoint, service).observe(time.perf_counter() - started)
            REQUESTS.labels(endpoint, service, str(status)).inc()
