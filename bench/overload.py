"""Capacity per worker, and what one worker does at twice it (load shedding, issue 13).

    .venv/bin/python bench/overload.py                 # auth off and JWT RS384, 3 rounds, ~4 min
    .venv/bin/python bench/overload.py --rounds 1 --auth off --code /path/to/old/checkout

One Osteoguard worker (``osteoguard serve``, uvloop + httptools) on 127.0.0.1, the typical
request (bench/requests.py), the load generator (bench/loadgen.py) in its own process, open
loop, 256 connections, callers that give up after 1 s (they close the connection and open
another). For each round:

1. the knee: rates rising by 100/s until the p99 of the 200s passes 100 ms or a caller times
   out (or more than 1 % are shed); the knee is the last rate that held;
2. twice the knee for 5 s: the share answered 200 and their p99, the share shed (503) and
   their p99, timeouts;
3. after the load stops: how long the worker keeps burning CPU (until 200 ms pass with under
   10 ms of CPU), and the hook calls in flight by /metrics at that point.

``--code`` runs the server from another checkout (e.g. the code before shedding) to compare.
The machine is shared: figures are noisy, hence the rounds and the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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

from bench import loadgen  # noqa: E402
from bench.requests import payload  # noqa: E402

PY = sys.executable
PATH = "/cds-services/anastrozole-bone-order-select"
ISS = "https://bench-ehr.example.org"
CONNECTIONS = 256
TIMEOUT_S = 1.0
P99_LIMIT_MS = 100.0
STEP_SECONDS = 3.0
OVERLOAD_SECONDS = 5.0
TICK = os.sysconf("SC_CLK_TCK")


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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class Target:
    def __init__(self, code: Path, auth: str, work: Path, key: Any, extra: dict[str, str]) -> None:
        self.port, self.auth, self.key = free_port(), auth, key
        env = {
            **os.environ,
            **extra,
            "PYTHONPATH": str(code),
            "OSTEOGUARD_AUTH": auth,
            "OSTEOGUARD_DATABASE_URL": f"sqlite:///{work}/og-{self.port}.db",
            "OSTEOGUARD_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "OSTEOGUARD_RULES_RELOAD_S": "0",
            "OSTEOGUARD_LOG_LEVEL": "warning",
        }
        if auth == "jwt":
            env["OSTEOGUARD_TRUSTED_CLIENTS"] = str(work / "trusted.yaml")
        argv = [PY, "-m", "service.cli", "serve", "--port", str(self.port)]
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=env, cwd=code, stdout=quiet, stderr=quiet)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1, trust_env=False)
                if health.status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("osteoguard did not start")

    def requests(self, n: int) -> list[str]:
        body = payload("typical")
        if self.auth != "jwt":
            return [raw(self.port, body, None)] * n
        now = int(time.time())
        aud = f"http://127.0.0.1:{self.port}{PATH}"
        return [
            raw(
                self.port,
                body,
                jwt.encode(
                    {"iss": ISS, "aud": aud, "iat": now, "exp": now + 1800, "jti": uuid.uuid4().hex},
                    self.key,
                    algorithm="RS384",
                    headers={"kid": "bench"},
                ),
            )
            for _ in range(n)
        ]

    def load(self, rate: float, seconds: float) -> dict[str, Any]:
        n = int(rate * seconds)
        job = {
            "host": "127.0.0.1",
            "port": self.port,
            "requests": self.requests(n),
            "concurrency": CONNECTIONS,
            "rate": rate,
            "warmup": min(200, n // 10),
            "timeout": TIMEOUT_S,
        }
        return loadgen.run(job)

    def drain(self) -> dict[str, Any]:
        """From the moment the load stops: seconds until the worker is idle, and its calls in flight."""
        stopped = time.perf_counter()
        window: list[tuple[float, float]] = []
        while True:
            now = time.perf_counter()
            window.append((now, cpu_seconds(self.proc.pid)))
            window = [w for w in window if now - w[0] <= 0.2]
            if now - stopped >= 0.2 and window[-1][1] - window[0][1] < 0.01 and now - window[0][0] >= 0.19:
                idle_after = window[0][0] - stopped
                break
            if now - stopped > 60:
                idle_after = float("inf")
                break
            time.sleep(0.01)
        metrics = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5, trust_env=False).text
        found = re.search(r"^osteoguard_hook_calls_in_flight (\S+)$", metrics, re.M)
        return {"idle_after_s": round(idle_after, 3), "in_flight": float(found.group(1)) if found else None}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def ok_share(r: dict[str, Any]) -> float:
    total = sum(r["statuses"].values())
    return r["statuses"].get("200", 0) / total if total else 0.0


def held(r: dict[str, Any]) -> bool:
    return "timeout" not in r["statuses"] and r["p99_ok_ms"] < P99_LIMIT_MS and ok_share(r) >= 0.99


def knee(target: Target, start: int, step: int) -> int:
    rate, last = start, 0
    while True:
        r = target.load(rate, STEP_SECONDS)
        print(
            f"    {rate:5d}/s  200s {ok_share(r):6.1%}  p99(200) {r['p99_ok_ms']:7.1f} ms  {r['statuses']}",
            flush=True,
        )
        if not held(r):
            return last
        last, rate = rate, rate + step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--auth", choices=("off", "jwt", "both"), default="both")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout the server runs from")
    parser.add_argument("--start", type=int, default=100, help="first rate of the knee search (requests/s)")
    parser.add_argument("--step", type=int, default=100, help="rate step of the knee search (requests/s)")
    parser.add_argument("--knee", type=int, default=0, help="skip the search: use this knee")
    parser.add_argument("--set", action="append", default=[], help="VAR=VALUE for the server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="osteoguard-overload-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench"}
    (work / "trusted.yaml").write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public]}}]}))
    print(
        f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"{date.today()}, server code from {args.code}"
    )
    results: list[dict[str, Any]] = []
    for auth in ("off", "jwt") if args.auth == "both" else (args.auth,):
        for n in range(args.rounds):
            target = Target(args.code, auth, work, key, dict(v.split("=", 1) for v in args.set))
            try:
                print(f"  auth={auth} round {n + 1}: knee search", flush=True)
                k = args.knee or knee(target, args.start, args.step)
                if not k:
                    print(f"  auth={auth}: not even {args.start}/s held; try a lower --start")
                    continue
                over = target.load(2 * k, OVERLOAD_SECONDS)
                after = target.drain()
                statuses = over["statuses"]
                total = sum(statuses.values())
                row = {
                    "auth": auth,
                    "round": n + 1,
                    "knee_rps": k,
                    "overload_rps": 2 * k,
                    "ok_share": statuses.get("200", 0) / total,
                    "shed_share": statuses.get("503", 0) / total,
                    "timeouts": statuses.get("timeout", 0),
                    "p99_ok_ms": over["p99_ok_ms"],
                    "p99_all_ms": over["p99_ms"],
                    **after,
                }
                results.append(row)
                print(
                    f"  auth={auth} knee {k}/s; at {2 * k}/s: 200 {row['ok_share']:.1%} "
                    f"(p99 {row['p99_ok_ms']:.1f} ms), 503 {row['shed_share']:.1%}, "
                    f"timeouts {row['timeouts']}, p99 of all {row['p99_all_ms']:.1f} ms; idle "
                    f"{after['idle_after_s']} s after the load stopped, in flight then {after['in_flight']}",
                    flush=True,
                )
            finally:
                target.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
