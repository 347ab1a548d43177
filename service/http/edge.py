"""What every HTTP exchange gets, in one pure ASGI layer.

* a request id (:mod:`service.requestid`): taken from ``X-Request-ID`` or made up, echoed
  back, and on every log line written meanwhile;
* the security headers (:mod:`service.security`);
* request count and latency by endpoint kind, service id and status (:mod:`service.metrics`);
* one access line per request (logger ``osteoguard.access``, level info) with the method,
  endpoint kind, service id, status, duration and whatever the endpoint noted with
  :func:`note_access` (a hook call: its card count and rule ids). Bounded labels, never the
  raw path or query string, which a client could fill with patient identifiers. uvicorn's
  own access log is off: one line per request, not two (each cost about 30 µs of a call);
* load shedding: at most ``max_in_flight`` hook calls in flight in this worker
  (``OSTEOGUARD_MAX_IN_FLIGHT``). Beyond it a hook call is answered at once, before its body
  is read: 503, ``Retry-After: 1`` and an ``OG-503-BUSY`` OperationOutcome, counted in
  ``osteoguard_shed_total`` and logged at most once per :data:`SHED_LOG_EVERY_S`, never per
  request. Only hook calls: probes, metrics, discovery, rule pages and feedback are cheap,
  and feedback must not be lost (an EHR does not always retry it). The same answer when the
  event loop lags by more than ``max_loop_lag_s`` (``OSTEOGUARD_MAX_LOOP_LAG_MS``): a hook call
  with its prefetch is one synchronous step of the loop, so a worker past its capacity has
  few calls in flight and its queue is in the loop and the socket buffers, where ASGI cannot
  count it. A timer every :data:`LAG_PROBE_S` notes how late it runs; that is about how long a
  call arriving now has waited, and shedding while it is long drains the queue. One step
  longer than the bound (a GC pause, a starved CPU) also sheds what arrives in the next
  :data:`LAG_PROBE_S`: those calls did wait that long, and are told to retry in a second;
* a client that has gone: once a hook call's body is read, a watcher task waits on
  ``receive()``; uvicorn answers it ``http.disconnect`` when the connection is lost, and the
  watcher cancels the call's task, so the pipeline's awaits (FHIR fallback, a thread-offloaded
  query) stop at once and the slot is free. Counted in ``osteoguard_client_gone_total``,
  status 499 in the request metrics. A cancellation lands at an await; the audit is queued
  synchronously after the last one, so a call leaves all its cards queued or none.

One layer, not one per concern: each layer costs a coroutine and a ``send`` wrapper on every
request, and three of them took about 23 µs of a hook call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import Overloaded, operation_outcome
from service.http.requestid import REQUEST_ID, request_id
from service.http.security import HEADERS
from service.settings import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_LOOP_LAG_MS

log = logging.getLogger("osteoguard.access")
shed_log = logging.getLogger("osteoguard")
RETRY_AFTER_S = 1
SHED_LOG_EVERY_S = 10.0
WATCH_AFTER_S = 0.002  # a hook call's disconnect is watched for from this long after its body
LAG_PROBE_S = 0.01
CLIENT_GONE_STATUS = 499  # nginx's "client closed request": no answer was sent
_NOTE: ContextVar[dict[str, Any] | None] = ContextVar("access_note", default=None)


def note_access(**fields: Any) -> None:
    """Add non-identifying fields to this request's access line."""
    note = _NOTE.get()
    if note is not None:
        note.update(fields)


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        service_ids: frozenset[str],
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_loop_lag_s: float = DEFAULT_MAX_LOOP_LAG_MS / 1000,
    ) -> None:
        self.app = app
        self.service_ids = service_ids
        self.max_in_flight = max_in_flight
        self.max_loop_lag_s = max_loop_lag_s
        self.in_flight = 0
        self.lag = 0.0  # seconds the lag probe last ran late
        self.lagging = False
        self._probing = False
        body = orjson.dumps(
            operation_outcome(
                Overloaded("this worker has more calls than it can answer in time; retry shortly")
            )
        )
        self._busy_body = body
        self._busy_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode()),
        ]
        self._shed_since_log = 0
        self._shed_logged_at = -SHED_LOG_EVERY_S
        metrics.IN_FLIGHT.set_function(lambda: self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        endpoint, service = metrics.endpoint_labels(scope["path"], self.service_ids)
        added = [*HEADERS, (b"x-request-id", rid.encode())]
        hook = endpoint == "hook"
        if not self._probing:
            self._probe(asyncio.get_running_loop(), None)
        if hook and (self.in_flight >= self.max_in_flight or self.lagging):
            try:
                await self._shed(send, added)
            finally:
                metrics.observe_request(endpoint, service, 503, time.perf_counter() - started)
            return
        token = REQUEST_ID.set(rid)
        note: dict[str, Any] = {}
        note_token = _NOTE.set(note)
        status = 500
        sent = False  # the whole answer has gone to the server

        async def send_with_headers(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *added]
            elif not message.get("more_body", False):
                sent = True
            await send(message)

        try:
            if hook:
                self.in_flight += 1
                try:
                    if await self._watched(scope, receive, send_with_headers, lambda: sent):
                        status = CLIENT_GONE_STATUS
                        metrics.CLIENT_GONE.inc()
                finally:
                    self.in_flight -= 1
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            metrics.observe_request(endpoint, service, status, seconds)
            if log.isEnabledFor(logging.INFO):
                fields = {"method": scope["method"], "endpoint": endpoint, "status": status}
                if service:
                    fields["service"] = service
                log.info(
                    "%s %s %d",
                    scope["method"],
                    endpoint,
                    status,
                    extra={**fields, "ms": round(seconds * 1000, 2), **note},
                )
            _NOTE.reset(note_token)
            REQUEST_ID.reset(token)

    def _probe(self, loop: asyncio.AbstractEventLoop, due: float | None) -> None:
        now = loop.time()
        self._probing = True
        self.lag = 0.0 if due is None else now - due
        self.lagging = self.lag > self.max_loop_lag_s
        loop.call_at(now + LAG_PROBE_S, self._probe, loop, now + LAG_PROBE_S)

    async def _shed(self, send: Send, added: list[tuple[bytes, bytes]]) -> None:
        """The 503 of a call over the bound, without reading its body (uvicorn discards it)."""
        metrics.SHED.inc()
        self._shed_since_log += 1
        now = time.monotonic()
        if now - self._shed_logged_at >= SHED_LOG_EVERY_S:
            shed_log.warning(
                "overloaded: hook calls refused (503): calls in flight or the loop's lag at their bound",
                extra={
                    "refused": self._shed_since_log,
                    "in_flight": self.in_flight,
                    "loop_lag_ms": round(self.lag * 1000, 1),
                },
            )
            self._shed_logged_at, self._shed_since_log = now, 0
        await send({"type": "http.response.start", "status": 503, "headers": [*self._busy_headers, *added]})
        await send({"type": "http.response.body", "body": self._busy_body})

    async def _watched(self, scope: Scope, receive: Receive, send: Send, sent: Callable[[], bool]) -> bool:
        """Run the app on a hook call, cancelled if the client disconnects before the answer
        is sent; True if it did (the cancellation is ours and absorbed here).

        The watcher task starts only once a call has run :data:`WATCH_AFTER_S` past its body:
        a task costs about 6 µs a call, a timer about 1 µs, and work that ends within a few
        milliseconds is not worth cancelling.
        """
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None
        timer: asyncio.TimerHandle | None = None
        gone = cancelled = body_read = False

        async def watch() -> None:
            nonlocal gone, cancelled
            message = await receive()  # uvicorn: on a lost connection, or once the answer is out
            if message["type"] == "http.disconnect" and not sent():
                gone = cancelled = True
                task.cancel()

        def start() -> asyncio.Task[None]:
            nonlocal watcher
            if watcher is None:
                watcher = loop.create_task(watch())
            return watcher

        async def receive_watched() -> Message:
            nonlocal gone, body_read, timer
            if body_read:  # the watcher owns receive() from here on
                await asyncio.wait((start(),))
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":  # gone before its body was in
                gone = True
                raise asyncio.CancelledError
            if not message.get("more_body", False):
                body_read = True
                timer = loop.call_later(WATCH_AFTER_S, start)
            return message

        try:
            await self.app(scope, receive_watched, send)
        except asyncio.CancelledError:
            if not gone:
                raise
            if cancelled:
                task.uncancel()
            if task.cancelling():
                raise  # also cancelled by someone else (shutdown): not ours to absorb
        finally:
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
        return gone
