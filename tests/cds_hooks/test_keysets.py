"""JWK Set fetches are bounded: one total deadline and a byte cap, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from cds_hooks.errors import AuthError
from cds_hooks.keysets import KeyStore


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is handled by ``serve(conn, stop)``."""

    def __init__(self, serve: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks.json"
        self.sent = 0
        self.serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                self.serve(conn, self.stop)
            except OSError:
                pass  # the client hung up: what we want

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[RawServer]:
    # Headers at once, then one byte of body every 50 ms, for ever: each read is quick, so only
    # a total deadline ends it.
    def serve(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        while not stop.wait(0.05):
            conn.sendall(b" ")

    server = RawServer(serve)
    yield server
    server.close()


def big_server(declare_length: bool) -> RawServer:
    body = json.dumps({"keys": [], "pad": "x" * 8_000_000}).encode()

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        if declare_length:
            conn.sendall(head + f"content-length: {len(body)}\r\n\r\n".encode())
            for i in range(0, len(body), 65536):
                conn.sendall(body[i : i + 65536])
                server.sent += 65536
            return
        conn.sendall(head + b"transfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 65536):
            chunk = body[i : i + 65536]
            conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            server.sent += len(chunk)
        conn.sendall(b"0\r\n\r\n")

    server = RawServer(serve)
    return server


async def fetch(store: KeyStore, url: str) -> None:
    await store.key(url, "any")


def test_a_trickling_jwks_is_cut_at_one_total_deadline(trickle: RawServer) -> None:
    async def scenario() -> float:
        async with httpx.AsyncClient() as http:
            store = KeyStore(http, deadline_s=0.5)
            started = time.monotonic()
            with pytest.raises(AuthError) as refused:
                await fetch(store, trickle.url)
            assert "TimeoutError" in refused.value.reason
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.5  # per-read timeouts would have let it run for 83 min


@pytest.mark.parametrize("declare_length", [True, False])
def test_a_jwks_over_the_byte_cap_is_refused_before_it_is_all_read(declare_length: bool) -> None:
    server = big_server(declare_length)

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            store = KeyStore(http, max_bytes=256 * 1024)
            with pytest.raises(AuthError) as refused:
                await fetch(store, server.url)
            assert "TooLarge" in refused.value.reason

    try:
        asyncio.run(scenario())
    finally:
        server.close()
    assert server.sent < 8_000_000  # we hung up long before the 8 MB were sent


def test_a_small_jwks_within_the_limits_is_used() -> None:
    from tests.cds_hooks.test_jwt import JwksServer

    keys = JwksServer()

    async def scenario() -> str:
        async with httpx.AsyncClient() as http:
            store = KeyStore(http, deadline_s=2, max_bytes=64 * 1024)
            return str((await store.key(keys.url, "ec-1")).key_id)

    try:
        assert asyncio.run(scenario()) == "ec-1"
    finally:
        keys.stop()
