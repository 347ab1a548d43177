"""What the HTTP server's limits (service/http/server.py) cost per request, and what a 100 MB
header does to the memory of a server with and without them.

    python bench/server_limits.py cost     # µs per request: uvicorn's httptools protocol vs ours
    python bench/server_limits.py header   # RSS of a real server before/after a 100 MB header
    python bench/server_limits.py e2e      # requests/s over real sockets (bench/loadgen.py), both classes

``cost`` drives each protocol class in-process on uvloop with a fake transport and a minimal
ASGI app (a keep-alive POST of 1.6 kB with its body in one read, as a CDS call arrives), in
alternating rounds; the best round of each is reported, so other load on the machine counts
as little as possible. ``header`` runs a real uvicorn server in a subprocess per class.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

REQUEST = (
    b"POST /cds-services/x HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: application/json\r\n"
    b"authorization: Bearer " + b"t" * 900 + b"\r\ncontent-length: 600\r\n\r\n" + b"{" + b" " * 598 + b"}"
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def one_round(cls: type, n: int) -> float:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, http=cls, lifespan="off", access_log=False, log_config=None)
    config.load()
    state = ServerState()
    protocol = cls(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    protocol.connection_made(FakeTransport())
    clock = time.perf_counter
    inside = 0.0  # time in data_received: parsing, our checks and callbacks, starting the task
    started = clock()
    for _ in range(n):
        began = clock()
        protocol.data_received(REQUEST)
        inside += clock() - began
        while state.tasks:
            await asyncio.sleep(0)
    elapsed = clock() - started
    protocol.connection_lost(None)
    return elapsed / n * 1e6, inside / n * 1e6


def cost(n: int = 20_000, rounds: int = 7) -> None:
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from service.http.server import ServerLimits, protocol_with

    ours = protocol_with(ServerLimits(32 * 1024, 10, 30, 1000))
    best = {"uvicorn": [float("inf")] * 2, "ours": [float("inf")] * 2}
    for _ in range(rounds):
        for name, cls in (("uvicorn", HttpToolsProtocol), ("ours", ours)):
            whole, inside = uvloop.run(one_round(cls, n))
            best[name] = [min(best[name][0], whole), min(best[name][1], inside)]
    (u_whole, u_in), (o_whole, o_in) = best["uvicorn"], best["ours"]
    print(f"µs per request, best of {rounds} rounds of {n}:")
    print(
        f"  whole request (with the app task): uvicorn {u_whole:.2f}, ours {o_whole:.2f}, "
        f"{o_whole - u_whole:+.2f}"
    )
    print(f"  in data_received (where ours adds): uvicorn {u_in:.2f}, ours {o_in:.2f}, {o_in - u_in:+.2f}")


SERVER = """
import socket, sys, uvicorn
from service.http.server import ServerLimits, protocol_with
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
http = protocol_with(ServerLimits(32 * 1024, 30, 30, 1000)) if sys.argv[1] == "ours" else "httptools"
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(16)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, http=http, lifespan="off", log_level="error")).run(sockets=[sock])
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def header() -> None:
    for kind in ("uvicorn", "ours"):
        proc = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as warm:  # the server is up and has answered
            warm.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            warm.recv(1000)
        before = rss_mb(proc.pid)
        sent = 0
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ")
            try:
                while sent < 100 * 1024 * 1024:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
                sock.sendall(b"\r\n\r\n")
                answer = sock.recv(100).split(b"\r\n")[0].decode()
            except OSError as exc:
                answer = f"connection cut ({type(exc).__name__})"
        after = rss_mb(proc.pid)
        proc.terminate()
        proc.wait(10)
        print(
            f"{kind}: 100 MB header: sent {sent / 2**20:.1f} MB in {time.monotonic() - started:.2f} s, "
            f"{answer}; RSS {before:.0f} -> {after:.0f} MB"
        )


def e2e(n: int = 20_000, rounds: int = 3) -> None:
    import json

    here = os.path.dirname(os.path.abspath(__file__))
    best = {"uvicorn": 0.0, "ours": 0.0}
    for _ in range(rounds):
        for kind in best:
            proc = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            job = {
                "host": "127.0.0.1",
                "port": port,
                "concurrency": 4,
                "warmup": 1000,
                "requests": [REQUEST.decode("latin-1")] * n,
            }
            out = subprocess.run(
                [sys.executable, os.path.join(here, "loadgen.py")],
                input=json.dumps(job),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            best[kind] = max(best[kind], json.loads(out)["rps"])
            proc.terminate()
            proc.wait(10)
    print(
        f"requests/s, best of {rounds} (minimal app, 4 keep-alive connections): "
        f"uvicorn {best['uvicorn']:.0f}, "
        f"ours {best['ours']:.0f}; µs per request {1e6 / best['uvicorn']:.1f} vs {1e6 / best['ours']:.1f}"
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    {"cost": cost, "header": header, "e2e": e2e}[sys.argv[1]]()
