"""CORS for browser-based CDS clients, with a trace of what it refuses.

Starlette's CORSMiddleware answers a preflight from an origin it does not allow with a bare
400, and the browser reports only "blocked by CORS policy". :class:`LoggedCORS` also writes a
log line (the origin, the endpoint kind and the method asked for: no patient data, no path
values) and counts it in ``osteoguard_cors_preflight_refused_total{endpoint}``, so an
integrator can see why (the fix: add the origin to ``OSTEOGUARD_CORS_ORIGINS``).
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from service.metrics import CORS_REFUSED, endpoint_labels

log = logging.getLogger("osteoguard.cors")
MAX_ORIGIN = 200  # logged up to this length


class LoggedCORS(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin and "access-control-request-method" in headers and not self.is_allowed_origin(origin):
                endpoint, _ = endpoint_labels(scope.get("path", "/"), frozenset())
                CORS_REFUSED.labels(endpoint).inc()
                log.warning(
                    "CORS preflight refused: origin not allowed (add it to OSTEOGUARD_CORS_ORIGINS)",
                    extra={
                        "origin": origin[:MAX_ORIGIN],
                        "endpoint": endpoint,
                        "requested_method": headers["access-control-request-method"][:20],
                    },
                )
        await super().__call__(scope, receive, send)
