"""`osteoguard serve` as a real process on 127.0.0.1: starts, answers, logs JSON, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.builders import order_sign


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serving(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    """`osteoguard serve` on a free loopback port, once its startup line is out (no sleeping)."""
    port = free_port()
    environment = {
        **os.environ,
        "OSTEOGUARD_AUTH": "off",
        "OSTEOGUARD_DATABASE_URL": f"sqlite:///{tmp_path}/og.db",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "Uvicorn running on" in line or proc.poll() is not None:
            break
    return proc, port, lines


def test_serve_answers_hooks_over_http(tmp_path: Path) -> None:
    proc, port, lines = start_serving(tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
            response = http.post(
                "/cds-services/anastrozole-bone-order-sign", json=order_sign("srv-1", e2=7.0)
            )
            assert response.status_code == 200
            assert "low-estradiol" in [c["source"]["topic"]["code"] for c in response.json()["cards"]]
            assert "server" not in response.headers  # no banner with versions
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        lines.extend(rest.splitlines())
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the exit status is -SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert any("Application shutdown complete" in line for line in lines)
    records = [json.loads(line) for line in lines if line.strip().startswith("{")]
    assert any("NOT authenticated" in r["message"] for r in records)
    access = [r for r in records if r["logger"] == "osteoguard.access"]
    assert [r["endpoint"] for r in access] == ["healthz", "hook"]  # one line per request
    hook = access[1]
    assert hook["message"] == "POST hook 200" and hook["service"] == "anastrozole-bone-order-sign"
    assert hook["rules"] == ["low-estradiol"] and hook["cards"] == 1 and hook["ms"] > 0
    assert len(hook["request_id"]) == 32  # every line of a request carries its id
    assert not any(r["logger"] == "uvicorn.access" for r in records)
    assert "srv-1" not in "\n".join(lines)  # no patient identifiers in logs


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    arrived, release = threading.Event(), threading.Event()
    estradiol = json.dumps({"resourceType": "Bundle", "type": "searchset"}).encode()

    class HeldFhirServer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            arrived.set()
            release.wait(20)  # the answer is held until the test has sent SIGTERM
            self.send_response(200)
            self.send_header("content-type", "application/fhir+json")
            self.send_header("content-length", str(len(estradiol)))
            self.end_headers()
            self.wfile.write(estradiol)

        def log_message(self, *args: object) -> None:
            pass

    fhir = ThreadingHTTPServer(("127.0.0.1", 0), HeldFhirServer)
    threading.Thread(target=fhir.serve_forever, daemon=True).start()
    fhir_base = f"http://127.0.0.1:{fhir.server_address[1]}/fhir"
    proc, port, _ = start_serving(
        tmp_path,
        OSTEOGUARD_FHIR_TIMEOUT_S="20",
        OSTEOGUARD_FHIR_PRIVATE_SERVERS=fhir_base,
        NO_PROXY="127.0.0.1,localhost",
    )
    result: dict[str, object] = {}
    try:
        request = order_sign("drain-1", e2=7.0)
        del request["prefetch"]["estradiol"]
        request["fhirServer"] = fhir_base

        def call() -> None:
            with httpx.Client(timeout=30, trust_env=False) as http:
                response = http.post(
                    f"http://127.0.0.1:{port}/cds-services/anastrozole-bone-order-sign", json=request
                )
                result["status"] = response.status_code

        caller = threading.Thread(target=call)
        caller.start()
        assert arrived.wait(20), "the fallback query never reached the FHIR server"
        proc.send_signal(signal.SIGTERM)  # shutdown starts while the request is in flight
        release.set()
        caller.join(30)
        _, rest = proc.communicate(timeout=30)
    finally:
        release.set()
        fhir.shutdown()
        fhir.server_close()
        if proc.poll() is None:
            proc.kill()
    assert result.get("status") == 200
    assert "Application shutdown complete" in rest


def listening(proc: subprocess.Popen[str], port: int) -> socket.socket:
    """A connection to the server, once a worker listens (with workers, the parent's "running"
    line comes before any worker listens); between tries, wait on the server's own output."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=20)
        except ConnectionRefusedError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            if select.select([proc.stderr], [], [], 0.05)[0]:
                proc.stderr.readline()


def test_serve_runs_the_limited_protocol_in_every_worker(tmp_path: Path) -> None:
    # Two workers import the protocol class by name: each answers an oversized header with
    # 431 (plain uvicorn would read it whole) and still serves normal calls.
    proc, port, _ = start_serving(tmp_path, "--workers", "2", OSTEOGUARD_MAX_HEADER_BYTES="4096")
    try:
        for _ in range(4):  # the kernel spreads connections over the workers
            with listening(proc, port) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000)
                assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
            with httpx.Client(timeout=20, trust_env=False) as http:
                assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
