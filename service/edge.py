"""What every HTTP exchange gets, in one pure ASGI layer.

* a request id (:mod:`service.requestid`): taken from ``X-Request-ID`` or made up, echoed
  back, and on every log line written meanwhile;
* the security headers (:mod:`service.security`);
* request count and latency by endpoint kind, service id and status (:mod:`service.metrics`).

One layer, not one per concern: each layer costs a coroutine and a ``send`` wrapper on every
request, and three of them took about 23 µs of a hook call (bench/README in the speed section).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.requestid import REQUEST_ID, request_id
from service.security import HEADERS


class Edge:
    def __init__(self, app: ASGIApp, service_ids: frozenset[str]) -> None:
        self.app = app
        self.service_ids = service_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        endpoint, service = metrics.endpoint_labels(scope["path"], self.service_ids)
        added = [*HEADERS, (b"x-request-id", rid.encode())]
        status = 500
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            metrics.observe_request(endpoint, service, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)
