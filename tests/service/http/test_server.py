"""The HTTP server's limits, against a real uvicorn server on 127.0.0.1 and raw sockets.

The server runs our protocol class (small limits) in a thread; its socket is bound and
listening before the thread starts, so a connect never races the server's start-up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from service.http import server as server_module
from service.http.server import LimitedHttpToolsProtocol, ServerLimits, protocol_with
from tests.conftest import make_settings

LIMITS = ServerLimits(max_header_bytes=8 * 1024, header_timeout_s=0.3, body_timeout_s=0.3, max_connections=50)


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """A minimal ASGI app: reads the whole body and answers its length."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.6)  # an app that takes longer than the header deadline
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


class Running:
    def __init__(self, limits: ServerLimits) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            echo_length,
            http=protocol_with(limits),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # The throttle is per process: each test starts with a line allowed.
    monkeypatch.setattr(server_module, "_throttled", server_module._Throttled())


def serve(limits: ServerLimits = LIMITS) -> Iterator[Running]:
    running = Running(limits)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server(fresh_log: None) -> Iterator[Running]:
    yield from serve()


def cut_offs(limit: str) -> float:
    return REGISTRY.get_sample_value("osteoguard_limits_total", {"limit": limit}) or 0.0


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (by content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed(sock: socket.socket) -> bool:
    """True when the server has closed the connection (EOF or reset), waiting up to 3 s."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def get(sock: socket.socket, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    return read_response(sock)


def trickle_until_answered(
    sock: socket.socket, byte: bytes = b"a", pace_s: float = 0.05
) -> tuple[bytes, float]:
    """Send one byte, wait up to ``pace_s`` for the server to answer, again; what it answered and when."""
    started = time.monotonic()
    while time.monotonic() - started < 5:
        try:
            sock.sendall(byte)
        except (BrokenPipeError, ConnectionResetError):
            return b"", time.monotonic() - started
        sock.settimeout(pace_s)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return b"", time.monotonic() - started
        sock.settimeout(3)
        return answer, time.monotonic() - started
    raise AssertionError("the server never cut the trickle off")


def test_headers_over_the_limit_get_431_and_the_connection_is_closed(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    before = cut_offs("header_bytes")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 9 * 1024)
        status, headers, body = read_response(sock)
        assert status == 431 and headers["connection"] == "close"
        assert b'"OG-431"' in body and b"OperationOutcome" in body
        assert closed(sock)
    assert cut_offs("header_bytes") == before + 1
    lines = [r for r in caplog.records if r.name == "osteoguard.server"]
    assert [getattr(r, "limit", None) for r in lines] == ["header_bytes"]
    assert "127.0.0.1" not in caplog.text and "x-big" not in caplog.text


def test_a_100_mb_header_is_not_read_past_the_limit(server: Running) -> None:
    # Four 100 MB headers took the RSS from 109 to 534 MB: the server must stop reading.
    sent = 0
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ")
        with pytest.raises(OSError):  # noqa: PT012 - the send loop is what is refused
            while sent < 100_000_000:
                sock.sendall(b"a" * 65536)
                sent += 65536
    assert sent < 16_000_000  # socket buffers, not the 100 MB


def test_headers_within_the_limit_with_a_large_body_in_the_same_read_are_served(server: Running) -> None:
    # The body arrives with the headers in one read of far more than the header limit.
    with server.connect() as sock:
        padding = b"x-pad: " + b"p" * 7000 + b"\r\n"
        body = b"b" * 200_000
        sock.sendall(
            b"POST / HTTP/1.1\r\nhost: x\r\n" + padding + b"content-length: %d\r\n\r\n" % len(body) + body
        )
        assert read_response(sock)[::2] == (200, b"200000")
        assert get(sock, b"again")[::2] == (200, b"5")  # and the connection is still usable


def test_a_slow_loris_is_closed_at_the_header_deadline_while_a_normal_caller_is_served(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    before = cut_offs("header_timeout")
    with server.connect() as loris, server.connect() as caller:
        loris.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")
        assert get(caller, b"hello")[::2] == (200, b"5")
        answer, elapsed = trickle_until_answered(loris)
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"OG-408"' in answer
        assert closed(loris)
        assert 0.25 <= elapsed < 1.0
        assert get(caller, b"hi")[::2] == (200, b"2")  # kept alive, still served
    assert cut_offs("header_timeout") == before + 1
    assert any(getattr(r, "limit", None) == "header_timeout" for r in caplog.records)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(server: Running) -> None:
    with server.connect() as sock:
        started = time.monotonic()
        status, _, _ = read_response(sock)
        assert status == 408 and closed(sock)
        assert 0.25 <= time.monotonic() - started < 1.0


def test_a_kept_alive_connection_trickling_its_next_request_is_cut_at_the_header_deadline(
    server: Running,
) -> None:
    with server.connect() as sock:
        assert get(sock)[0] == 200
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        answer, elapsed = trickle_until_answered(sock)
        assert answer.startswith(b"HTTP/1.1 408 ") and 0.25 <= elapsed < 1.0


def test_a_next_request_trickled_during_a_response_closes_the_connection_after_that_response(
    server: Running,
) -> None:
    with server.connect() as sock:
        # A pipelined request whose headers never end, while the first is still in the app:
        # the first still gets its answer, then the connection is closed (no 408 after it).
        sock.sendall(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhiGET / HTTP/1.1\r\nx-a: ")
        status, headers, body = read_response(sock)
        assert (status, body) == (200, b"2") and headers["connection"] == "close"
        assert closed(sock)


def test_limits_come_from_the_settings_by_default() -> None:
    settings = make_settings(max_header_bytes=4096, header_timeout_s=1.5, body_timeout_s=7, max_connections=9)
    assert ServerLimits.from_settings(settings) == ServerLimits(4096, 1.5, 7, 9)
    assert LimitedHttpToolsProtocol.limits is None  # read at each worker's first connection
    assert protocol_with(LIMITS).limits == LIMITS


@pytest.fixture
def slow_header_server(fresh_log: None) -> Iterator[Running]:
    yield from serve(replace(LIMITS, header_timeout_s=5))


def test_a_body_trickle_is_cut_at_the_body_deadline(slow_header_server: Running) -> None:
    before = cut_offs("body_timeout")
    with slow_header_server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        answer, elapsed = trickle_until_answered(sock, b"{")
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer
        assert closed(sock)
        assert 0.25 <= elapsed < 1.0  # the header deadline (5 s) is not what cut it
    assert cut_offs("body_timeout") == before + 1


@pytest.fixture
def capped_server(fresh_log: None) -> Iterator[Running]:
    yield from serve(replace(LIMITS, header_timeout_s=5, max_connections=3))


def test_beyond_the_connection_cap_a_new_connection_is_refused_while_existing_ones_are_served(
    capped_server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "osteoguard.server")
    before = cut_offs("connections")
    held = [capped_server.connect() for _ in range(3)]
    try:
        for sock in held:
            assert get(sock)[0] == 200  # each is accepted and kept alive
        for _ in range(2):
            with capped_server.connect() as extra:
                status, headers, body = read_response(extra)
                assert status == 503 and headers["retry-after"] == "1" and b"OG-503-CONN" in body
                assert closed(extra)
        for sock in held:
            assert get(sock, b"xy")[::2] == (200, b"2")
    finally:
        for sock in held:
            sock.close()
    assert cut_offs("connections") == before + 2
    lines = [r for r in caplog.records if getattr(r, "limit", None) == "connections"]
    assert len(lines) == 1  # throttled: one line for a burst of refusals


def test_chunk_trailers_over_the_header_limit_are_not_buffered(slow_header_server: Running) -> None:
    # httptools buffers trailers like headers: a 48 MB trailer grew the RSS by 50 MB.
    sent = 0
    with slow_header_server.connect() as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: "
        )
        with pytest.raises(OSError):  # noqa: PT012 - the send loop is what is refused
            while sent < 100_000_000:
                sock.sendall(b"a" * 65536)
                sent += 65536
    assert sent < 16_000_000


def test_a_chunked_body_in_small_chunks_is_served(slow_header_server: Running) -> None:
    with slow_header_server.connect() as sock:
        chunks = b"".join(b"%x\r\n%s\r\n" % (1000, b"c" * 1000) for _ in range(200))
        sock.sendall(
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        assert read_response(sock)[::2] == (200, b"200000")
