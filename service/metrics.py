"""Prometheus metrics (``GET /metrics``). Labels never carry patient data.

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty writable folder so
the workers' numbers are added up (prometheus-client multiprocess mode); otherwise each
scrape sees the worker that answered it.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
)

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
SUGGESTIONS_NOT_OFFERED = Counter(
    "osteoguard_suggestions_not_offered_total",
    "Suggestions a card could not offer (the card's detail says why)",
    ["rule_id", "reason"],
)
CARDS_WITHHELD = Counter(
    "osteoguard_cards_withheld_total",
    "Cards evaluated and audited but not shown: silent (per-client setting) or suppressed (repeat)",
    ["rule_id", "disposition"],
)
CORS_REFUSED = Counter(
    "osteoguard_cors_preflight_refused_total", "CORS preflights refused: origin not allowed", ["endpoint"]
)
LIMITS = Counter(
    "osteoguard_limits_total",
    "Connections, requests and FHIR calls cut off by a resource limit (docs/security.md)",
    ["limit"],
)
SHED = Counter(
    "osteoguard_shed_total", "Hook calls answered 503 at once: this worker's calls in flight at their bound"
)
CLIENT_GONE = Counter(
    "osteoguard_client_gone_total", "Hook calls whose client disconnected before the answer: work cancelled"
)
# Read when scraped (no cost per request). Per worker: with PROMETHEUS_MULTIPROC_DIR a scrape
# shows none (the multiprocess collector reads only the workers' files).
IN_FLIGHT = Gauge("osteoguard_hook_calls_in_flight", "Hook calls being worked on by this worker")
AUDIT_SPOOL_RECORDS = Gauge(
    "osteoguard_audit_spool_records",
    "Card records in the local audit spool, not yet in the database",
    multiprocess_mode="livesum",
)
AUDIT_SPOOL_BYTES = Gauge(
    "osteoguard_audit_spool_bytes", "Size of the local audit spool files", multiprocess_mode="livesum"
)
AUDIT_SPOOLED = Counter(
    "osteoguard_audit_spooled_total", "Card records written to the local spool (database away or slow)"
)
AUDIT_REPLAYED = Counter(
    "osteoguard_audit_replayed_total", "Card records written from the local spool to the database"
)
AUDIT_QUARANTINED = Counter(
    "osteoguard_audit_quarantined_total",
    "Card records the database refused on their own (kept in the spool folder's quarantine file)",
)
RULESET = Info("osteoguard_ruleset", "The rule set being served")
RULESET_RELOADS = Counter("osteoguard_ruleset_reloads_total", "Rule-set reload attempts", ["outcome"])


def render() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


_LEADING_WORDS = re.compile(r"^[A-Za-z ]*")


def reason_label(reason: str) -> str:
    """A bounded label for a JWT rejection reason: its leading words, never a value a client
    sent (``algorithm 'HS256' is not accepted`` counts as ``algorithm``)."""
    return _LEADING_WORDS.match(reason).group(0).strip()[:40] or "other"  # type: ignore[union-attr]


def count_jwt_rejection(reason: str) -> None:
    """Count one request refused by JWT verification."""
    JWT_REJECTIONS.labels(reason_label(reason)).inc()


def count_not_offered(rule_id: str, reason: str) -> None:
    """Count one suggestion a card could not offer (reason: a fixed label, never client data)."""
    SUGGESTIONS_NOT_OFFERED.labels(rule_id, reason).inc()


def count_withheld(rule_id: str, disposition: str) -> None:
    """Count one card not shown: ``silent`` or ``suppressed``."""
    CARDS_WITHHELD.labels(rule_id, disposition).inc()


def count_limit(limit: str) -> None:
    """Count one cut-off: ``header_bytes``, ``header_timeout``, ``body_timeout``,
    ``connections`` or ``fhir_bytes``."""
    LIMITS.labels(limit).inc()


def count_fhir_too_large() -> None:
    """Count one call whose FHIR answers ran over ``OSTEOGUARD_FHIR_MAX_BYTES``."""
    count_limit("fhir_bytes")


def count_fhir_fetch(key: str, ok: bool) -> None:
    """Count one FHIR-server fallback query (one prefetch key of one request)."""
    FHIR_FETCHES.labels(key, "ok" if ok else "failed").inc()


def endpoint_labels(path: str, service_ids: frozenset[str]) -> tuple[str, str]:
    """(endpoint kind, service id) of a request path; unknown paths and ids share one label."""
    parts = path.strip("/").split("/")
    if parts[0] != "cds-services":
        return (parts[0] if parts[0] in ("healthz", "readyz", "metrics", "docs") else "other"), ""
    if len(parts) == 1:
        return "discovery", ""
    service = parts[1] if parts[1] in service_ids else "unknown"
    return ("feedback" if len(parts) == 3 and parts[2] == "feedback" else "hook"), service


@functools.lru_cache(maxsize=256)
def _children(endpoint: str, service: str, status: str) -> tuple[Any, Any]:
    # The label sets are bounded (see endpoint_labels); labels() takes a lock on every call.
    return LATENCY.labels(endpoint, service), REQUESTS.labels(endpoint, service, status)


@functools.lru_cache(maxsize=256)
def _card_counter(rule_id: str, indicator: str) -> Any:
    return CARDS.labels(rule_id, indicator)


def count_card(rule_id: str, indicator: str) -> None:
    """Count one card returned to a client (not cards evaluated offline or at warm-up)."""
    _card_counter(rule_id, indicator).inc()


def observe_request(endpoint: str, service: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    latency, requests = _children(endpoint, service, str(status))
    latency.observe(seconds)
    requests.inc()
