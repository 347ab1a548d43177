"""The HTTP/1.1 connection protocol: uvicorn's httptools protocol with resource limits.

uvicorn with httptools bounds neither the size of a request's headers nor the time a client
takes to send them or its body, and its ``limit_concurrency`` answers 503 per request rather
than bounding connections. :class:`LimitedHttpToolsProtocol` adds, per worker process
(settings in :mod:`service.settings`, rows in docs/security.md):

* header bytes: the bytes received for one request before its headers are complete (request
  line, headers, line ends) are counted as they arrive; past ``OSTEOGUARD_MAX_HEADER_BYTES``
  the connection gets a 431 and is closed, and the rest is never read. httptools buffers a
  header until it is complete, so counting in ``on_header`` would be too late. The non-body
  bytes of a chunked body (chunk sizes, extensions, trailers, which httptools buffers too)
  count against the same limit;
* a header deadline: ``OSTEOGUARD_HEADER_TIMEOUT_S`` from accept, or from the first byte of
  a later request on a kept-alive connection, until its headers are complete; then 408, close;
* a body deadline: ``OSTEOGUARD_BODY_TIMEOUT_S`` from the end of the headers until the whole
  body is in (in total, not per read); then 408, close. The body's size limit stays in
  :mod:`service.http.body`;
* a connection cap: beyond ``OSTEOGUARD_MAX_CONNECTIONS`` open connections a new one gets a
  503 with ``Retry-After`` and is closed at once.

Each cut-off is counted in ``osteoguard_limits_total{limit}`` and logged, at most one line per
kind every :data:`LOG_EVERY_S` seconds (with how many were cut off meanwhile), never with the
client's address or data. The answers are OperationOutcomes of the errors in
:mod:`service.errors`, rendered once at import.

Cost: a request that arrives in one read arms no timer (deadlines are armed only when a read
leaves headers or body incomplete), so the common path adds a few attribute checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import (
    HeaderFieldsTooLarge,
    RequestTimeout,
    ServiceError,
    TooManyConnections,
    operation_outcome,
)
from service.metrics import count_limit

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from service.settings import Settings

log = logging.getLogger("osteoguard.server")
LOG_EVERY_S = 10.0
RETRY_AFTER_S = 1

# What a connection is waiting for from the client.
_IDLE, _HEADERS, _BODY = 0, 1, 2


@dataclass(frozen=True)
class ServerLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            settings.max_header_bytes,
            settings.header_timeout_s,
            settings.body_timeout_s,
            settings.max_connections,
        )


def _answer(error: ServiceError, extra: bytes = b"") -> bytes:
    body = orjson.dumps(operation_outcome(error))
    return (
        f"HTTP/1.1 {error.status_code} {_PHRASES[error.status_code]}\r\n".encode()
        + b"content-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n".encode()
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
_TOO_LARGE = _answer(HeaderFieldsTooLarge("request line and headers over the size limit"))
_HEADER_TIMEOUT = _answer(RequestTimeout("request headers not received within the time limit"))
_BODY_TIMEOUT = _answer(RequestTimeout("request body not received within the time limit"))
_TOO_MANY = _answer(
    TooManyConnections("too many connections; retry shortly"), f"retry-after: {RETRY_AFTER_S}\r\n".encode()
)


class _Throttled:
    """A warning per kind at most every LOG_EVERY_S seconds, saying how many were cut off meanwhile."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, limit: str, message: str, **fields: Any) -> None:
        count_limit(limit)
        self._since[limit] = self._since.get(limit, 0) + 1
        now = time.monotonic()
        if now - self._last.get(limit, float("-inf")) >= LOG_EVERY_S:
            log.warning(message, extra={"limit": limit, "count": self._since[limit], **fields})
            self._last[limit] = now
            self._since[limit] = 0


_throttled = _Throttled()


_Base = HttpToolsProtocol  # called directly in the per-request callbacks: super() costs more


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits of the module docstring.

    ``limits`` is read from the settings at the first connection of each worker process; a
    subclass may set it (tests do, with :func:`protocol_with`).
    """

    limits: ClassVar[ServerLimits | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = type(self).limits
        if limits is None:
            from service.settings import get_settings

            limits = type(self).limits = ServerLimits.from_settings(get_settings())
        self._limits = limits
        self._phase = _HEADERS  # a new connection owes its first request's headers
        self._header_bytes = 0
        self._framing = 0  # bytes of the body phase that were not body (see data_received)
        self._headers_done = 0  # requests whose headers completed on this connection
        self._deadline: asyncio.TimerHandle | None = None

    # -- the connection -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            # Refused at once, before anything is read: a full worker spends nothing on it.
            self._phase = _IDLE
            _throttled.note(
                "connections",
                "connection refused: the worker holds its most connections (OSTEOGUARD_MAX_CONNECTIONS)",
                max_connections=self._limits.max_connections,
            )
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._deadline = self.loop.call_later(self._limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _BODY:
            # What is not body here is chunk framing and trailers, which httptools buffers
            # like headers: they count against the same limit (checked once parsed, so at
            # most one read past it).
            self._framing += len(data)
            _Base.data_received(self, data)
            if self._framing > self._limits.max_header_bytes and self._phase == _BODY:
                self._too_large()
                return
        else:
            self._phase = _HEADERS  # (from idle: a next request has begun)
            self._header_bytes += len(data)
            if self._header_bytes > self._limits.max_header_bytes:
                self._over_header_limit(data)
                return
            _Base.data_received(self, data)
        if self._phase != _IDLE and self._deadline is None and not self.transport.is_closing():
            self._arm()

    def _over_header_limit(self, data: bytes) -> None:
        # This read may hold the end of the headers and the start of a body: only the bytes
        # within the limit are parsed as headers; if the headers did not end in them, 431.
        fits = len(data) - (self._header_bytes - self._limits.max_header_bytes)
        done = self._headers_done
        super().data_received(data[:fits])
        if self.transport.is_closing():
            return
        if self._headers_done == done:
            self._too_large()
            return
        self.data_received(data[fits:])  # the headers ended in time; the count restarted there

    def _too_large(self) -> None:
        if self.transport.is_closing():
            return
        _throttled.note(
            "header_bytes",
            "request refused: headers (or chunk framing and trailers) over OSTEOGUARD_MAX_HEADER_BYTES",
            max_header_bytes=self._limits.max_header_bytes,
        )
        self._cut(_TOO_LARGE)

    # -- deadlines ------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._phase == _HEADERS:
            self._deadline = self.loop.call_later(self._limits.header_timeout_s, self._header_timeout)
        else:
            self._deadline = self.loop.call_later(self._limits.body_timeout_s, self._body_timeout)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_timeout(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        _throttled.note(
            "header_timeout",
            "connection closed: request headers not in within OSTEOGUARD_HEADER_TIMEOUT_S",
            header_timeout_s=self._limits.header_timeout_s,
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # a response is on its way: close once it is out
            return
        self._cut(_HEADER_TIMEOUT)

    def _body_timeout(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        _throttled.note(
            "body_timeout",
            "connection closed: request body not in within OSTEOGUARD_BODY_TIMEOUT_S",
            body_timeout_s=self._limits.body_timeout_s,
        )
        self._cut(_BODY_TIMEOUT)

    def _cut(self, answer: bytes) -> None:
        """Answer, when that answer would be the only response to the request, and close."""
        cycle = self.cycle
        if self._phase == _BODY:  # the cycle is this request's
            if cycle is not None and not cycle.response_started:
                # The app is waiting for the rest of the body: it is told the client has gone
                # (so it writes nothing), and the client gets the answer.
                cycle.disconnected = True
                cycle.message_event.set()
                self.transport.write(answer)
        elif cycle is None or cycle.response_complete:  # the cycle, if any, is a previous request's
            self.transport.write(answer)
        self._phase = _IDLE
        self.transport.close()

    # -- parser callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._phase = _HEADERS  # (also a pipelined request that begins mid-read)
        _Base.on_message_begin(self)

    def on_headers_complete(self) -> None:
        self._headers_done += 1
        self._header_bytes = 0
        self._framing = 0
        self._phase = _BODY
        if self._deadline is not None:
            self._disarm()
        _Base.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        self._framing -= len(body)
        if self._framing < 0:  # body that came in the read that ended the headers: not counted
            self._framing = 0
        _Base.on_body(self, body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        if self._deadline is not None:
            self._disarm()
        _Base.on_message_complete(self)


def protocol_with(limits: ServerLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with these limits instead of the settings' (for tests and benches)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
