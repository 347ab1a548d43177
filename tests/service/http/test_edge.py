"""The edge layer's load shedding and its cancelling of work for a client that has gone.

Calls are held in flight by a test double of the pipeline's record step that waits on an
event (no sleeps): the cards are built, the call is about to be audited and answered.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from cds_hooks.models import Card
from service.app import create_app
from service.http.edge import LAG_PROBE_S, Edge
from service.pipeline.record import Issued
from service.pipeline.registry import Call, Registry
from tests.builders import order_sign
from tests.conftest import make_settings
from tests.service.test_serve import start_serving

HOOK = "/cds-services/anastrozole-bone-order-sign"
WAIT_S = 10  # an upper bound for what should take milliseconds: a hang fails, it never flakes
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # as uvicorn runs the app


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Held:
    """The record step, held until released; notes each call that arrives and each cancelled."""

    def __init__(self, registry: Registry) -> None:
        self.real = registry.record
        self.release = anyio.Event()
        self.arrived: asyncio.Queue[None] = asyncio.Queue()
        self.cancelled = anyio.Event()
        registry.record = self.record  # type: ignore[method-assign]

    async def record(self, call: Call, cards: list[Issued]) -> list[Card]:
        self.arrived.put_nowait(None)
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        return await self.real(call, cards)

    async def wait_for(self, calls: int) -> None:
        with anyio.fail_after(WAIT_S):
            for _ in range(calls):
                await self.arrived.get()


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[FastAPI, Held, httpx.AsyncClient]]:
    app = create_app(make_settings(tmp_path, **settings))
    # On code without a bound, a held call holds every call: fail, never hang.
    with anyio.fail_after(WAIT_S):
        async with app.router.lifespan_context(app):
            held = Held(app.state.registry)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield app, held, http


def low_e2_call(pid: str) -> dict[str, Any]:
    return order_sign(pid, e2=7.0)  # fires low-estradiol


async def post(http: httpx.AsyncClient, pid: str) -> httpx.Response:
    return await http.post(HOOK, json=low_e2_call(pid))


async def test_beyond_the_bound_a_hook_call_gets_a_fast_503_while_the_admitted_complete(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, max_in_flight=2) as (_, held, http):
        shed_before = sample("osteoguard_shed_total")
        answers: dict[str, httpx.Response] = {}

        async def call(pid: str) -> None:
            answers[pid] = await http.post(HOOK, json=low_e2_call(pid))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "edge-1")
            tg.start_soon(call, "edge-2")
            await held.wait_for(2)
            refused = await http.post(HOOK, json=low_e2_call("edge-3"))
            assert held.arrived.empty()  # the third call never reached the pipeline
            held.release.set()

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["x-request-id"]
    assert refused.headers["x-content-type-options"] == "nosniff"  # the edge's headers as ever
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "throttled"
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "OG-503-BUSY"
    assert sample("osteoguard_shed_total") == shed_before + 1
    for pid in ("edge-1", "edge-2"):
        assert answers[pid].status_code == 200
        assert "low-estradiol" in [c["source"]["topic"]["code"] for c in answers[pid].json()["cards"]]


async def test_the_503_is_not_logged_per_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(tmp_path, max_in_flight=1) as (_, held, http):
        async with anyio.create_task_group() as tg:
            tg.start_soon(post, http, "edge-log-1")
            await held.wait_for(1)
            caplog.clear()
            for n in range(5):
                assert (await http.post(HOOK, json=low_e2_call(f"edge-log-{n + 2}"))).status_code == 503
            held.release.set()
    shed_lines = [r for r in caplog.records if "503" in r.getMessage() or r.name == "osteoguard.access"]
    assert len(shed_lines) <= 1  # at most one warning for the whole burst


async def test_ops_endpoints_discovery_and_feedback_are_not_shed(tmp_path: Path) -> None:
    async with serving(tmp_path, max_in_flight=1) as (_, held, http):
        async with anyio.create_task_group() as tg:
            tg.start_soon(post, http, "edge-ops")
            await held.wait_for(1)
            assert (await http.post(HOOK, json=low_e2_call("edge-ops-2"))).status_code == 503
            for path in ("/healthz", "/readyz", "/metrics", "/cds-services"):
                assert (await http.get(path)).status_code == 200, path
            feedback = await http.post(f"{HOOK}/feedback", json={"feedback": []})
            assert feedback.status_code != 503
            held.release.set()


async def asgi_call(
    app: FastAPI, body: bytes | None, gone: anyio.Event, sent: list[dict[str, Any]]
) -> Callable[[], Awaitable[None]]:
    """One hook call straight into the ASGI app, whose client disconnects when ``gone`` is set
    (as uvicorn tells it: ``receive()`` answers ``http.disconnect``); ``body`` None: the client
    is gone before its body arrives."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": HOOK,
        "raw_path": HOOK.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    chunks = [body] if body is not None else []

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app(scope, receive, send)

    return run


async def test_a_client_that_disconnects_mid_call_has_its_work_cancelled_and_its_slot_freed(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, max_in_flight=1) as (app, held, http):
        gone_before = sample("osteoguard_client_gone_total")
        gone = anyio.Event()
        sent: list[dict[str, Any]] = []
        run = await asgi_call(app, orjson.dumps(low_e2_call("edge-gone")), gone, sent)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await held.wait_for(1)
            assert sample("osteoguard_hook_calls_in_flight") == 1
            gone.set()
            with anyio.fail_after(WAIT_S):
                await held.cancelled.wait()  # the held step saw the cancellation
        assert sent == []  # nothing was answered to nobody
        assert sample("osteoguard_hook_calls_in_flight") == 0
        assert sample("osteoguard_client_gone_total") == gone_before + 1
        assert (
            sample(
                "osteoguard_requests_total",
                endpoint="hook",
                service="anastrozole-bone-order-sign",
                status="499",
            )
            >= 1
        )

        # The slot is free: with a bound of one, the next call is admitted and answered.
        held.release.set()
        assert (await http.post(HOOK, json=low_e2_call("edge-next"))).status_code == 200
        registry = app.state.registry
        await registry.audit.flush()
        issued = registry.store.report_rows(None)["issued"]
        assert sum(count for _, _, count in issued) == 1  # the next call's card; none for the gone one


async def test_a_client_gone_before_its_body_is_in_gets_no_answer_and_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path) as (app, held, _):
        gone = anyio.Event()
        gone.set()
        sent: list[dict[str, Any]] = []
        run = await asgi_call(app, None, gone, sent)
        with anyio.fail_after(WAIT_S):
            await run()
        assert sent == []
        assert held.arrived.empty()
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        assert sample("osteoguard_hook_calls_in_flight") == 0


async def test_a_cancellation_that_is_not_the_clients_goes_on_up(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, held, _):
        sent: list[dict[str, Any]] = []
        run = await asgi_call(app, orjson.dumps(low_e2_call("edge-shutdown")), anyio.Event(), sent)
        task = asyncio.get_running_loop().create_task(run())
        await held.wait_for(1)
        task.cancel()  # as a server shutting down cancels what is still running
        with pytest.raises(asyncio.CancelledError):
            await task
        assert held.cancelled.is_set()
        assert sample("osteoguard_hook_calls_in_flight") == 0


class HangingFhirServer:
    """A FHIR server on 127.0.0.1 that never answers: it notes each query that arrives, and
    when every connection it accepted has been closed by the other side."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.asked = threading.Event()
        self.hung_up = threading.Event()
        self._open = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._open += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        conn.settimeout(WAIT_S * 3)
        with conn:
            try:
                while data := conn.recv(65536):
                    if b"\r\n\r\n" in data:
                        self.asked.set()
            except OSError:
                return  # a timeout: never hung up
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self.hung_up.set()

    def close(self) -> None:
        self.sock.close()


def test_a_client_closing_its_socket_mid_call_stops_the_servers_work(tmp_path: Path) -> None:
    """End to end: `osteoguard serve` on 127.0.0.1; a call whose data must be fetched from a
    FHIR server that never answers; the client closes its socket while the fetch waits. The
    fetch is cancelled (the FHIR server sees its connections closed long before Osteoguard's
    30 s FHIR timeout) and the slot is free."""
    fhir = HangingFhirServer()
    proc, port, lines = start_serving(
        tmp_path, OSTEOGUARD_FHIR_PRIVATE_SERVERS=fhir.base, OSTEOGUARD_FHIR_TIMEOUT_S="30"
    )
    try:
        assert proc.poll() is None, "".join(lines)
        request = order_sign("edge-e2e")
        del request["prefetch"]
        request["fhirServer"] = fhir.base
        request["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300}
        body = orjson.dumps(request)
        head = (
            f"POST {HOOK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as client:
            client.sendall(head + body)
            assert fhir.asked.wait(WAIT_S), "the call never reached the FHIR server"
        hung_up = fhir.hung_up.wait(WAIT_S)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_S).text
        assert hung_up, "the FHIR fetch went on after the client had gone"
        assert "osteoguard_client_gone_total 1.0" in metrics
        assert "osteoguard_hook_calls_in_flight 0.0" in metrics
    finally:
        fhir.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def edge_of(app: FastAPI) -> Edge:
    layer: Any = app.middleware_stack
    while not isinstance(layer, Edge):
        layer = layer.app
    return layer


async def test_while_the_event_loop_lags_hook_calls_are_shed_and_ops_answered(tmp_path: Path) -> None:
    """A call with its prefetch is one synchronous step of the loop, so past capacity the queue
    is in the loop, not in flight: the loop's lag is the other bound."""
    async with serving(tmp_path, max_loop_lag_ms=5) as (app, held, http):
        held.release.set()
        assert (await post(http, "edge-lag-1")).status_code == 200
        edge = edge_of(app)
        busy = True

        async def backlog() -> None:
            while busy:  # every turn of the loop holds a 20 ms step, as a queue of calls does
                time.sleep(0.02)
                await asyncio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(backlog)
            while not edge.lagging:
                await asyncio.sleep(0)
            refused = await post(http, "edge-lag-2")
            assert (await http.get("/healthz")).status_code == 200
            busy = False
        assert refused.status_code == 503
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "OG-503-BUSY"
        while edge.lagging:  # the loop keeps up again
            await asyncio.sleep(LAG_PROBE_S)
        assert (await post(http, "edge-lag-3")).status_code == 200
