"""Osteoguard against the floor (a bare FastAPI endpoint), in one run, on this machine.

    .venv/bin/pip install -e ".[bench]"     # matplotlib, for the chart
    .venv/bin/python bench/run.py            # about 2 minutes; writes bench/results.json and bench/chart.png

Both servers run as uvicorn (uvloop + httptools) on 127.0.0.1, one worker each unless said
otherwise; the load generator (bench/loadgen.py) runs in its own process. Osteoguard runs
with its defaults (log level info: one JSON access line per request, sent to /dev/null here). Requests:
- typical: order-select with full prefetch, 1 draft, 10 estradiol results, DXA T-score,
  vitamin D, a DXA two and a half years old, so one card (baseline-dexa) fires (about 5 KB);
- large: the same with 200 estradiol Observations.
A second reference, "floor + JWT", is the floor after PyJWT verifies each request's RS384
token and checks its jti: what authentication alone leaves of the floor.
Osteoguard runs with auth off, and with JWT on (RS384; every request carries its own
pre-signed token, because a token's jti is accepted once). Closed-loop runs sweep the number
of concurrent connections. Open-loop runs send at a fixed rate, which gives the p99 an EHR
waiting on us sees: at half the floor's best throughput (the issue's target point), and at
80 % and 50 % of Osteoguard's own best.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.requests import payload  # noqa: E402

PY = sys.executable
PATH = "/cds-services/anastrozole-bone-order-select"
CONCURRENCY = (1, 4, 16, 32)
REQUESTS = {"typical": 3000, "large": 600}
ISS = "https://bench-ehr.example.org"
TARGETS = ("floor", "floor + JWT", "osteoguard auth=off", "osteoguard auth=jwt", "osteoguard auth=jwt 2w")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw(port: int, body: bytes, token: str | None) -> str:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n").encode().decode("latin-1") + body.decode("latin-1")


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code in (
                    200,
                    404,
                ):
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def load(
    port: int, requests: list[str], concurrency: int, rate: float = 0, warmup: int = 100
) -> dict[str, Any]:
    job = json.dumps(
        {
            "host": "127.0.0.1",
            "port": port,
            "requests": requests,
            "concurrency": concurrency,
            "rate": rate,
            "warmup": warmup,
        }
    )
    out = subprocess.run(
        [PY, str(ROOT / "bench" / "loadgen.py")], input=job, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="osteoguard-bench-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench"}
    (work / "trusted.yaml").write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public]}}]}))
    bodies = {kind: payload(kind) for kind in REQUESTS}
    results: list[dict[str, Any]] = []

    def tokens(port: int, n: int) -> list[str]:
        now = int(time.time())
        aud = f"http://127.0.0.1:{port}{PATH}"
        return [
            jwt.encode(
                {"iss": ISS, "aud": aud, "iat": now, "exp": now + 1800, "jti": uuid.uuid4().hex},
                key,
                algorithm="RS384",
                headers={"kid": "bench"},
            )
            for _ in range(n)
        ]

    def og_env(port: int, auth: str) -> dict[str, str]:
        env = {
            **os.environ,
            "OSTEOGUARD_AUTH": auth,
            "OSTEOGUARD_DATABASE_URL": f"sqlite:///{work}/og-{port}.db",
            "OSTEOGUARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "OSTEOGUARD_RULES_RELOAD_S": "0",
        }
        if auth == "jwt":
            env["OSTEOGUARD_TRUSTED_CLIENTS"] = str(work / "trusted.yaml")
        return env

    def sweep(
        server: Server,
        target: str,
        auth_tokens: bool,
        workers: int = 1,
        levels: tuple[int, ...] = CONCURRENCY,
        kinds: tuple[str, ...] = tuple(REQUESTS),
    ) -> None:
        for kind in kinds:
            n = REQUESTS[kind]
            for c in levels:
                toks = tokens(server.port, n) if auth_tokens else [None] * n
                reqs = [raw(server.port, bodies[kind], t) for t in toks]
                r = load(server.port, reqs, c)
                assert set(r["statuses"]) == {"200"}, r["statuses"]
                results.append({"target": target, "kind": kind, "concurrency": c, "workers": workers, **r})
                print(
                    f"  {target:<22} {kind:<8} c={c:<3} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms",
                    flush=True,
                )

    def bare(app: str) -> Server:
        port = free_port()
        env = {
            **os.environ,
            "BENCH_JWK": json.dumps(public),
            "BENCH_AUDIENCE": f"http://127.0.0.1:{port}{PATH}",
        }
        argv = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
        return Server(app, argv, env, port)

    floor = bare("bench.floor:app")
    try:
        sweep(floor, "floor", False)
    finally:
        floor.stop()
    floor_jwt = bare("bench.floor:jwt_app")  # what JWT verification alone leaves of the floor
    try:
        sweep(floor_jwt, "floor + JWT", True, kinds=("typical",))
    finally:
        floor_jwt.stop()
    for auth in ("off", "jwt"):
        port = free_port()
        og = Server(
            f"osteoguard-{auth}",
            [PY, "-m", "service.cli", "serve", "--port", str(port)],
            og_env(port, auth),
            port,
        )
        try:
            sweep(og, f"osteoguard auth={auth}", auth == "jwt")
            if auth == "jwt":
                best_floor = best(results, "floor", "typical")["rps"]
                best_own = best(results, "osteoguard auth=jwt", "typical")["rps"]
                # The point (half the floor), then loads this one worker can carry.
                for label, rate in (
                    ("half the floor", best_floor / 2),
                    ("80% of its best", best_own * 0.8),
                    ("50% of its best", best_own * 0.5),
                ):
                    reqs = [raw(port, bodies["typical"], t) for t in tokens(port, int(rate * 4))]
                    r = load(port, reqs, 32, rate=rate)
                    results.append(
                        {
                            "target": "osteoguard auth=jwt",
                            "kind": "typical",
                            "open_loop_rate": rate,
                            "open_loop_label": label,
                            **r,
                        }
                    )
                    print(
                        f"  open loop at {rate:.0f} req/s ({label}): p50 {r['p50_ms']:.2f} ms  "
                        f"p99 {r['p99_ms']:.2f} ms  {r['statuses']}",
                        flush=True,
                    )
        finally:
            og.stop()
    port = free_port()
    og2 = Server(
        "osteoguard-2w",
        [PY, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"],
        og_env(port, "jwt"),
        port,
    )
    try:
        sweep(og2, "osteoguard auth=jwt 2w", True, workers=2, levels=(16, 32))
    finally:
        og2.stop()

    summary(results)
    meta = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    chart(results)


def best(results: list[dict[str, Any]], target: str, kind: str) -> dict[str, Any]:
    rows = [r for r in results if r["target"] == target and r["kind"] == kind and "open_loop_rate" not in r]
    return max(rows, key=lambda r: r["rps"])


def summary(results: list[dict[str, Any]]) -> None:
    print("\nopen loop, typical request, JWT on, one worker (latency counted from each request's send time)")
    print(f"{'offered load':<34}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for r in results:
        if "open_loop_rate" in r:
            label = f"{r['open_loop_rate']:.0f} req/s ({r['open_loop_label']})"
            print(f"{label:<34}{r['rps']:8.0f}{r['p50_ms']:10.2f}{r['p99_ms']:10.2f}")
    print("\nbest throughput per target (one uvicorn worker unless noted)")
    print(f"{'target':<26}{'request':<9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'vs floor':>10}")
    for kind in REQUESTS:
        floor = best(results, "floor", kind)
        for target in TARGETS:
            if not any(r["target"] == target and r["kind"] == kind for r in results):
                continue
            r = best(results, target, kind)
            print(
                f"{target:<26}{kind:<9}{r['rps']:8.0f}{r['p50_ms']:9.2f}{r['p99_ms']:9.2f}"
                f"{r['rps'] / floor['rps']:9.0%}"
            )


def chart(results: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in ("floor", "floor + JWT", "osteoguard auth=off", "osteoguard auth=jwt"):
        rows = sorted(
            (
                r
                for r in results
                if r["target"] == target and r["kind"] == "typical" and "open_loop_rate" not in r
            ),
            key=lambda r: r["concurrency"],
        )
        xs = [r["concurrency"] for r in rows]
        ax1.plot(xs, [r["rps"] for r in rows], marker="o", label=target)
        ax2.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=target)
    ax1.set(xlabel="concurrent connections", ylabel="requests/s", title="Throughput, typical request")
    ax2.set(xlabel="concurrent connections", ylabel="p99 latency (ms)", title="p99 latency, typical request")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "chart.png", dpi=110)
    print(f"chart: {ROOT / 'bench' / 'chart.png'}")


if __name__ == "__main__":
    main()
