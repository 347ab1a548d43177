"""Osteoguard against the floor, interleaved in one run on this machine (issue 17's measurement).

    apt-get install -y wrk                           # the closed-loop load generator (Debian/Ubuntu)
    .venv/bin/pip install -e ".[bench]"              # matplotlib, for the chart
    .venv/bin/python bench/run.py                    # the default: about 4 minutes
    .venv/bin/python bench/run.py --quick            # 3 rounds x 5 s: about 2 minutes
    .venv/bin/python bench/run.py --full             # adds sweeps, open-loop rates, a loadgen check
    .venv/bin/python bench/run.py --docs             # also refresh docs/speed.md and the README line

The default is the issue's measurement. Three servers run side by side, each one uvicorn
worker (uvloop + httptools) on 127.0.0.1: the floor (bench/floor.py, a bare FastAPI endpoint
that parses the JSON and returns a fixed card), Osteoguard with auth off, and Osteoguard with
auth on (a trusted client with an RS384 key, RSA 2048, and an ES384 key, P-384). Osteoguard
runs with its defaults (log level info: one JSON access line per request, sent to /dev/null).
Each round measures, one after the other, the floor, Osteoguard auth off, Osteoguard RS384,
Osteoguard ES384 (typical request) and Osteoguard auth off with the large request, each with
`wrk -t1 -c8` for the round's length, so the machine's drift hits all of them alike. JWT
requests each carry their own pre-signed token (a jti is accepted once).

Requests (bench/requests.py): typical, an order-select call of about 5 KB with 10 estradiol
results that fires one card; large, the same with 200 estradiol results.

What it prints and writes (bench/results.json, bench/chart.png, bench/last-run.md):
- per round and over rounds (median, min, max): requests/s of each, and each Osteoguard
  figure over the same round's floor (the issue's target: auth off >= 0.4);
- CPU per request: the server process's CPU time (/proc/<pid>/stat, all its threads) over a
  measurement, divided by the requests answered; the load generator's is reported apart;
- large / typical (the issue's target: >= 0.5);
- p99 latency at half of Osteoguard's own capacity (half the median auth-off requests/s),
  open loop: requests sent at that fixed rate by bench/loadgen.py, latency counted from each
  request's planned send time (the issue's target: < 10 ms); the same for RS384.

wrk 4 is closed loop only (wrk2, which adds a fixed rate, is not packaged in Debian), hence
the Python load generator for the open-loop runs. Without wrk (or with --loadgen python) the
closed loop uses bench/loadgen.py too, and says so: a Python client takes three to four times
wrk's CPU per request, CPU the server does not get on a 2-core machine, so its figures are not
comparable with wrk's. `--compare-loadgens` measures both at c=8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.requests import payload  # noqa: E402

PY = sys.executable
PATH = "/cds-services/anastrozole-bone-order-select"
ISS = "https://bench-ehr.example.org"
CONCURRENCY = 8  # the wrk -t1 -c8
OPEN_LOOP_CONNECTIONS = 64  # enough that a request is never held back by the client
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO, TARGET_LARGE, TARGET_P99_MS = 0.4, 0.5, 10.0
VERSIONS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "orjson",
    "PyJWT",
    "cryptography",
    "durable_rules",
    "fhir.resources",
    "SQLAlchemy",
    "osteoguard",
)


# How every bare app is served: one uvicorn worker as Osteoguard serves, without access lines.
UVICORN_FLAGS = ["--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools"]
UVICORN_FLAGS += ["--log-level", "warning", "--no-access-log"]


def store_path(work: Path, port: int) -> Path:
    """The SQLite store of the benchmarked Osteoguard on ``port``."""
    return work / f"og-{port}.db"


def osteoguard_env(auth: str, work: Path, port: int) -> dict[str, str]:
    """The environment of a benchmarked `osteoguard serve`: its defaults, its own SQLite store
    (:func:`store_path`), no rule-set polling."""
    return {
        **os.environ,
        "OSTEOGUARD_AUTH": auth,
        "OSTEOGUARD_DATABASE_URL": f"sqlite:///{store_path(work, port)}",
        "OSTEOGUARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OSTEOGUARD_RULES_RELOAD_S": "0",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all threads) and of its live children, from /proc."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except FileNotFoundError:  # the thread ended meanwhile
                continue
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode} at start")
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code
                if status in (200, 404):
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@dataclass
class Target:
    name: str
    server: Server
    kind: str = "typical"
    alg: str | None = None  # None: no token
    last_rps: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.keys = {
            "RS384": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "bench-rs"),
            "ES384": (ec.generate_private_key(ec.SECP384R1()), "bench-es"),
        }
        self.bodies = {kind: payload(kind) for kind in ("typical", "large")}
        for kind, body in self.bodies.items():
            (work / f"{kind}.json").write_bytes(body)
        jwks = [
            {**json.loads(RSAAlgorithm.to_jwk(self.keys["RS384"][0].public_key())), "kid": "bench-rs"},
            {**json.loads(ECAlgorithm.to_jwk(self.keys["ES384"][0].public_key())), "kid": "bench-es"},
        ]
        self.public_rs = jwks[0]
        (work / "trusted.yaml").write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": jwks}}]}))
        self.wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
        if args.loadgen == "wrk" and not self.wrk:
            raise SystemExit("wrk is not installed: apt-get install -y wrk (or --loadgen python)")
        self.servers: list[Server] = []

    # servers

    def osteoguard(
        self, auth: str, workers: int = 1, launcher: list[str] | None = None, name: str = ""
    ) -> Server:
        """`osteoguard serve` with its defaults; ``launcher`` replaces ``python -m service.cli``
        (bench/ceiling.py serves through bench/parts.py, which takes no --workers)."""
        port = free_port()
        env = osteoguard_env(auth, self.work, port)
        if auth == "jwt":
            env["OSTEOGUARD_TRUSTED_CLIENTS"] = str(self.work / "trusted.yaml")
        argv = [*(launcher or [PY, "-m", "service.cli"]), "serve", "--port", str(port)]
        if workers != 1:
            argv += ["--workers", str(workers)]
        return self.start(Server(name or f"osteoguard auth={auth} {workers}w", argv, env, port))

    def bare(self, app: str) -> Server:
        port = free_port()
        env = {
            **os.environ,
            "BENCH_JWK": json.dumps(self.public_rs),
            "BENCH_AUDIENCE": f"http://127.0.0.1:{port}{PATH}",
        }
        argv = [PY, "-m", "uvicorn", app, *UVICORN_FLAGS, "--port", str(port)]
        return self.start(Server(app, argv, env, port))

    def start(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()

    # requests

    def tokens(self, alg: str, server: Server, n: int) -> list[str]:
        key, kid = self.keys[alg]
        now = int(time.time())
        return [
            jwt.encode(
                {"iss": ISS, "aud": server.url, "iat": now, "exp": now + 1800, "jti": uuid.uuid4().hex},
                key,
                algorithm=alg,
                headers={"kid": kid},
            )
            for _ in range(n)
        ]

    def raw(self, server: Server, kind: str, token: str | None) -> str:
        body = self.bodies[kind]
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        return head + "\r\n" + body.decode("latin-1")

    # measurements

    def closed(
        self, target: Target, seconds: float, concurrency: int = CONCURRENCY, loadgen: str | None = None
    ) -> dict[str, Any]:
        """One closed-loop measurement; with tokens, measured again with more if they ran out."""
        loadgen = loadgen or ("wrk" if self.wrk else "python")
        estimate = max(target.last_rps, 500.0)
        for _attempt in range(3):
            n = int(estimate * seconds * 1.3) + 200 if target.alg else 0
            toks = self.tokens(target.alg, target.server, n) if target.alg else []
            cpu0, client0, wall0 = cpu_seconds(target.server.proc.pid), children_cpu(), time.perf_counter()
            if loadgen == "wrk":
                r = self.run_wrk(target, seconds, concurrency, toks)
            else:
                r = self.run_loadgen(target, seconds, concurrency, toks)
            cpu = cpu_seconds(target.server.proc.pid) - cpu0
            client = children_cpu() - client0
            if r["non2xx"] == 0 or not target.alg:
                break
            # The tokens ran out (replays answered 401, which are quick, so this overshoots).
            estimate = max(estimate * 2, r["rps"])
        if r["errors"]:
            raise RuntimeError(f"{target.name}: {r['non2xx']} non-2xx, {r['errors']} socket errors")
        if r["non2xx"]:
            # Load shedding (503 OG-503-BUSY) answers fast: counting those would flatter us.
            print(f"  ({target.name}: {r['non2xx']} answers were not 2xx; req/s counts the 2xx only)")
            r["rps"] = (r["requests"] - r["non2xx"]) / r["seconds"]
        r.update(
            target=target.name,
            kind=target.kind,
            concurrency=concurrency,
            loadgen=loadgen,
            wall_s=time.perf_counter() - wall0,
            server_cpu_ms_per_req=cpu / r["requests"] * 1000,
            server_cpu_share=cpu / r["seconds"],
            client_cpu_ms_per_req=client / r["requests"] * 1000,
        )
        target.last_rps = r["rps"]
        return r

    def run_wrk(self, target: Target, seconds: float, concurrency: int, toks: list[str]) -> dict[str, Any]:
        assert self.wrk
        argv = [self.wrk, "-t1", f"-c{concurrency}", f"-d{round(seconds)}s", "--timeout", "10s"]
        argv += [
            "-s",
            str(ROOT / "bench" / "wrk.lua"),
            target.server.url,
            "--",
            str(self.work / f"{target.kind}.json"),
        ]
        if toks:
            token_file = self.work / "tokens.txt"
            token_file.write_text("\n".join(toks) + "\n")
            argv.append(str(token_file))
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(
                f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )
        out = done.stdout
        line = next(x for x in out.splitlines() if x.startswith("JSON "))
        w = json.loads(line[5:])
        secs = w["duration_us"] / 1e6
        return {
            "requests": w["requests"],
            "seconds": secs,
            "rps": w["requests"] / secs,
            "p50_ms": w["p50_us"] / 1000,
            "p90_ms": w["p90_us"] / 1000,
            "p99_ms": w["p99_us"] / 1000,
            "max_ms": w["max_us"] / 1000,
            "non2xx": w["non2xx"],
            "errors": w["connect"] + w["read"] + w["write"] + w["timeout"],
        }

    def run_loadgen(
        self,
        target: Target,
        seconds: float,
        concurrency: int,
        toks: list[str],
        rate: float = 0,
        warmup: int = 0,
    ) -> dict[str, Any]:
        if rate:  # open loop: every request once, at its planned time
            requests = [self.raw(target.server, target.kind, t) for t in toks] or [
                self.raw(target.server, target.kind, None)
            ] * int(rate * seconds)
            job: dict[str, Any] = {"requests": requests, "rate": rate, "warmup": warmup}
        else:
            requests = [self.raw(target.server, target.kind, t) for t in toks] or [
                self.raw(target.server, target.kind, None)
            ]
            job = {"requests": requests, "duration": seconds}
        job.update(host="127.0.0.1", port=target.server.port, concurrency=concurrency)
        r = loadgen.run(job)
        r["non2xx"] = sum(v for k, v in r.pop("statuses").items() if not k.startswith("2"))
        r["errors"] = 0
        return r

    def open_loop(self, target: Target, rate: float, seconds: float) -> dict[str, Any]:
        warm = int(rate)  # the first second is not counted
        n = int(rate * (seconds + 1))
        toks = self.tokens(target.alg, target.server, n) if target.alg else []
        cpu0 = cpu_seconds(target.server.proc.pid)
        r = self.run_loadgen(target, seconds + 1, OPEN_LOOP_CONNECTIONS, toks, rate=rate, warmup=warm)
        cpu = cpu_seconds(target.server.proc.pid) - cpu0
        if r["non2xx"]:
            print(f"  ({target.name} open loop: {r['non2xx']} answers were not 2xx)")
        r.update(
            target=target.name,
            kind=target.kind,
            rate=rate,
            loadgen="python",
            server_cpu_ms_per_req=cpu / r["requests"] * 1000,
        )
        return r


def median_min_max(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(s: dict[str, float], digits: int = 2, pct: bool = False) -> str:
    if pct:
        return f"{s['median']:.0%} ({s['min']:.0%}-{s['max']:.0%})"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    wrk = shutil.which("wrk")
    wrk_version = "not installed"
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
        wrk_version = out.split(" [", 1)[0].strip()
    virt = (
        subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
        if shutil.which("systemd-detect-virt")
        else "unknown"
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores"
        + (f", {virt} guest" if virt not in ("", "none", "unknown") else ""),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {**versions, "wrk": wrk_version},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds x 5 s (about 2 minutes)")
    parser.add_argument(
        "--full", action="store_true", help="also sweeps, open-loop rates, floor+JWT, 2 workers"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=None, help="length of one measurement (default 10)")
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto", help="closed-loop client"
    )
    parser.add_argument(
        "--compare-loadgens", action="store_true", help="wrk and loadgen.py at c=8, interleaved"
    )
    parser.add_argument("--docs", action="store_true", help="refresh docs/speed.md and the README line")
    parser.add_argument(
        "--refresh-docs",
        action="store_true",
        help="no run: rewrite last-run.md, the chart and the docs from bench/results.json",
    )
    parser.add_argument("--note", default="", help="a sentence about this run, for the docs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where results.json etc. go")
    args = parser.parse_args()
    if args.refresh_docs:
        report = json.loads((args.out / "results.json").read_text())
        if args.note:
            report["meta"]["note"] = args.note
            (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
        markdown = print_summary(report)
        (args.out / "last-run.md").write_text(markdown)
        chart(report, args.out / "chart.png")
        refresh_docs(markdown, report)
        return
    seconds = args.seconds or (5 if args.quick else 10)
    if args.rounds < 3:
        print("note: fewer than 3 rounds is not the issue's measurement", flush=True)

    started = time.perf_counter()
    meta = machine()
    meta["note"] = args.note
    meta["load_average_before"] = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="osteoguard-bench-"))
    bench = Bench(args, work)
    closed_loadgen = "wrk" if bench.wrk else "python"
    print(
        f"{meta['date']}  {meta['cpu_model']}, {meta['machine']}, Python {meta['python']}, "
        f"commit {meta['git_commit'][:10]}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in meta['load_average_before'])}")
    if closed_loadgen == "python":
        print(
            "WARNING: wrk not found (apt-get install -y wrk): the closed loop uses bench/loadgen.py, "
            "whose figures are not comparable with wrk's"
        )
    print(
        f"{args.rounds} rounds x {seconds:g} s per measurement, closed loop {closed_loadgen} "
        f"-c{CONCURRENCY} (one connection thread), one worker each\n",
        flush=True,
    )
    report: dict[str, Any] = {"meta": meta, "settings": {}, "rounds": [], "open_loop": [], "extra": {}}
    try:
        floor = bench.bare("bench.floor:app")
        og_off = bench.osteoguard("off")
        og_jwt = bench.osteoguard("jwt")
        targets = [
            Target("floor", floor),
            Target("osteoguard auth off", og_off),
            Target("osteoguard RS384", og_jwt, alg="RS384"),
            Target("osteoguard ES384", og_jwt, alg="ES384"),
            Target("osteoguard auth off, large", og_off, kind="large"),
        ]
        print("warm-up (2 s each, not counted)", flush=True)
        for t in targets:
            bench.closed(t, 2.0)
        for i in range(1, args.rounds + 1):
            row: dict[str, Any] = {"round": i, "load_average": os.getloadavg(), "results": {}}
            for t in targets:
                r = bench.closed(t, seconds)
                row["results"][t.name] = r
            report["rounds"].append(row)
            print_round(row)
        summary = summarise(report["rounds"], [t.name for t in targets])
        report["summary"] = summary

        half = summary["osteoguard auth off"]["rps"]["median"] / 2
        print(
            f"\nopen loop at half of Osteoguard's capacity ({half:.0f} req/s), {seconds:g} s each", flush=True
        )
        for t in (targets[1], targets[2]):
            r = bench.open_loop(t, half, seconds)
            report["open_loop"].append(r)
            print(
                f"  {t.name:<22} sent {r['rps']:6.0f} req/s  p50 {r['p50_ms']:6.2f} ms"
                f"  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:6.1f} ms",
                flush=True,
            )

        if args.compare_loadgens or args.full:
            report["extra"]["loadgens"] = compare_loadgens(bench, targets[0], targets[1], seconds)
        if args.full:
            report["extra"].update(full(bench, targets, seconds, half))
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    meta["load_average_after"] = os.getloadavg()
    meta["duration_s"] = round(time.perf_counter() - started)
    report["settings"] = {
        "rounds": args.rounds,
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        "closed_loop": f"wrk -t1 -c{CONCURRENCY}"
        if closed_loadgen == "wrk"
        else f"bench/loadgen.py c={CONCURRENCY}",
        "open_loop": f"bench/loadgen.py, {OPEN_LOOP_CONNECTIONS} connections, fixed rate",
        "request_bytes": {k: len(v) for k, v in bench.bodies.items()},
        "jwt_keys": {"RS384": "RSA 2048", "ES384": "P-384"},
    }
    markdown = print_summary(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "last-run.md").write_text(markdown)
    chart(report, args.out / "chart.png")
    if args.docs:
        refresh_docs(markdown, report)
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'last-run.md'}; took {meta['duration_s']} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in meta['load_average_after'])}")


def print_round(row: dict[str, Any]) -> None:
    res = row["results"]
    floor = res["floor"]["rps"]
    print(f"round {row['round']}  (load average {row['load_average'][0]:.2f})", flush=True)
    for name, r in res.items():
        ref = res["osteoguard auth off"]["rps"] if name.endswith("large") else floor
        vs = "of typical" if name.endswith("large") else "of floor"
        ratio = "" if name == "floor" else f"{r['rps'] / ref:6.1%} {vs}"
        print(
            f"  {name:<28}{r['rps']:8.0f} req/s {ratio:<17} CPU {r['server_cpu_ms_per_req']:5.3f} ms/req"
            f"  p99 {r['p99_ms']:6.2f} ms",
            flush=True,
        )


def summarise(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        rs = [row["results"][name] for row in rounds]
        s: dict[str, Any] = {
            "rps": median_min_max([r["rps"] for r in rs]),
            "server_cpu_ms_per_req": median_min_max([r["server_cpu_ms_per_req"] for r in rs]),
            "client_cpu_ms_per_req": median_min_max([r["client_cpu_ms_per_req"] for r in rs]),
            "p99_ms": median_min_max([r["p99_ms"] for r in rs]),
        }
        if name != "floor":
            ref = "osteoguard auth off" if name.endswith("large") else "floor"
            s["ratio"] = median_min_max(
                [row["results"][name]["rps"] / row["results"][ref]["rps"] for row in rounds]
            )
            s["ratio_of"] = ref
            if name.endswith("large"):
                s["ratio_to_floor"] = median_min_max(
                    [row["results"][name]["rps"] / row["results"]["floor"]["rps"] for row in rounds]
                )
        out[name] = s
    return out


def print_summary(report: dict[str, Any]) -> str:
    """Prints the summary and returns it as markdown (bench/last-run.md)."""
    meta, s, st = report["meta"], report["summary"], report["settings"]
    off = s["osteoguard auth off"]
    large = s["osteoguard auth off, large"]
    p99 = {r["target"]: r for r in report["open_loop"]}
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines = [f"{meta['note']}", ""] if meta.get("note") else []
    lines += [
        f"Measured {meta['date']} on {meta['cpu_model']} ({meta['machine']}), Python {meta['python']}, "
        f"commit `{meta['git_commit'][:10]}`{' (with uncommitted changes)' if meta['git_dirty'] else ''}, "
        f"by `bench/run.py`: {st['rounds']} interleaved rounds of {st['seconds']:g} s per measurement, "
        f"`{st['closed_loop']}`, one uvicorn worker each, "
        f"typical request {st['request_bytes']['typical']:,} bytes "
        f"(large {st['request_bytes']['large']:,}). Load average before/after: "
        f"{meta['load_average_before'][0]:.2f} / {meta['load_average_after'][0]:.2f} "
        "(the machine is shared; figures are medians with min-max over rounds).",
        "",
        "| target | req/s | vs floor | server CPU per request, ms | p99 at c=8, ms |",
        "|---|---|---|---|---|",
    ]
    for name in (
        "floor",
        "osteoguard auth off",
        "osteoguard RS384",
        "osteoguard ES384",
        "osteoguard auth off, large",
    ):
        t = s[name]
        vs = "100%" if name == "floor" else fmt_spread(t.get("ratio_to_floor", t.get("ratio")), pct=True)
        lines.append(
            f"| {name} | {fmt_spread(t['rps'], 0)} | {vs} | {fmt_spread(t['server_cpu_ms_per_req'], 3)} | "
            f"{t['p99_ms']['median']:.2f} |"
        )
    lines += [
        "",
        "| target of issue 17 | this run | |",
        "|---|---|---|",
        f"| auth off / floor >= {TARGET_RATIO} | {fmt_spread(off['ratio'])} "
        f"| {met(off['ratio']['median'] >= TARGET_RATIO)} |",
        f"| RS384 / floor (reported beside it) | {fmt_spread(s['osteoguard RS384']['ratio'])} | |",
        f"| ES384 / floor (reported beside it) | {fmt_spread(s['osteoguard ES384']['ratio'])} | |",
        f"| large / typical >= {TARGET_LARGE} | {fmt_spread(large['ratio'])} "
        f"| {met(large['ratio']['median'] >= TARGET_LARGE)} |",
    ]
    for name, r in p99.items():
        label = "auth off" if name == "osteoguard auth off" else name.removeprefix("osteoguard ")
        ok = f"{met(r['p99_ms'] < TARGET_P99_MS)}" if label == "auth off" else ""
        lines.append(
            f"| p99 at half of Osteoguard's capacity ({r['rate']:.0f} req/s, open loop), {label}, "
            f"< {TARGET_P99_MS:g} ms "
            f"| {r['p99_ms']:.2f} ms (p50 {r['p50_ms']:.2f}) | {ok} |"
        )
    es, rs = s["osteoguard ES384"], s["osteoguard RS384"]
    extra_ms = es["server_cpu_ms_per_req"]["median"] - rs["server_cpu_ms_per_req"]["median"]
    lines += [
        "",
        f"ES384 costs {extra_ms:.2f} ms more server CPU per request than RS384 here: verifying a P-384 "
        "signature alone takes about 0.35-0.7 ms, by CPU (`bench/jwt_verify.py`), "
        "against about 0.04 ms for RS384. "
        "Integrators should sign with RS384 or ES256 (docs/integrating.md).",
    ]
    if "loadgens" in report["extra"]:
        lines += ["", "Load generators at c=8 (median requests/s; client CPU per request, ms):", ""]
        lines += ["| target | wrk | bench/loadgen.py |", "|---|---|---|"]
        for name, by in report["extra"]["loadgens"]["summary"].items():
            lines.append(
                f"| {name} | {by['wrk']['rps']:.0f} ({by['wrk']['client_cpu_ms_per_req']:.3f}) | "
                f"{by['python']['rps']:.0f} ({by['python']['client_cpu_ms_per_req']:.3f}) |"
            )
    markdown = "\n".join(lines) + "\n"
    print("\n" + markdown)
    return markdown


def compare_loadgens(bench: Bench, floor: Target, og: Target, seconds: float) -> dict[str, Any]:
    """wrk against bench/loadgen.py at c=8 on the floor and Osteoguard, interleaved, twice."""
    if not bench.wrk:
        print("no wrk: no load generator comparison")
        return {}
    print("\nload generators at c=8 (interleaved, 2 rounds)", flush=True)
    rows: list[dict[str, Any]] = []
    for _ in range(2):
        for t in (floor, og):
            for lg in ("wrk", "python"):
                r = bench.closed(t, seconds, loadgen=lg)
                rows.append(r)
                print(
                    f"  {t.name:<22} {lg:<7}{r['rps']:8.0f} req/s  server CPU {r['server_cpu_share']:5.0%}  "
                    f"client CPU {r['client_cpu_ms_per_req']:.3f} ms/req",
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for t in (floor, og):
        summary[t.name] = {
            lg: {
                "rps": statistics.median(
                    r["rps"] for r in rows if r["target"] == t.name and r["loadgen"] == lg
                ),
                "client_cpu_ms_per_req": statistics.median(
                    r["client_cpu_ms_per_req"] for r in rows if r["target"] == t.name and r["loadgen"] == lg
                ),
            }
            for lg in ("wrk", "python")
        }
    return {"rows": rows, "summary": summary}


def full(bench: Bench, targets: list[Target], seconds: float, half: float) -> dict[str, Any]:
    """Sweeps over connections, more open-loop rates, floor + JWT, two workers."""
    out: dict[str, Any] = {"sweeps": [], "open_loop_rates": [], "floor_jwt": [], "two_workers": []}
    print("\nsweep over connections", flush=True)
    for c in (1, 4, 8, 16, 32):
        for t in targets[:3]:
            r = bench.closed(t, seconds, concurrency=c)
            out["sweeps"].append(r)
            print(
                f"  {t.name:<22} c={c:<3}{r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f}"
                f"  p99 {r['p99_ms']:6.2f} ms",
                flush=True,
            )
    print("\nopen loop at other rates (auth off)", flush=True)
    for share in (0.25, 0.8):
        r = bench.open_loop(targets[1], half * 2 * share, seconds)
        out["open_loop_rates"].append({**r, "share_of_capacity": share})
        print(
            f"  {share:.0%} of capacity ({r['rate']:.0f} req/s): p50 {r['p50_ms']:.2f}"
            f"  p99 {r['p99_ms']:.2f} ms",
            flush=True,
        )
    floor_jwt = Target("floor + RS384 (PyJWT)", bench.bare("bench.floor:jwt_app"), alg="RS384")
    bench.closed(floor_jwt, 2.0)
    r = bench.closed(floor_jwt, seconds)
    out["floor_jwt"].append(r)
    print(f"\n  {floor_jwt.name:<28}{r['rps']:8.0f} req/s", flush=True)
    two = Target("osteoguard RS384, 2 workers", bench.osteoguard("jwt", workers=2), alg="RS384")
    bench.closed(two, 2.0, concurrency=16)
    r = bench.closed(two, seconds, concurrency=16)
    out["two_workers"].append(r)
    print(f"  {two.name:<28}{r['rps']:8.0f} req/s (c=16)", flush=True)
    return out


def chart(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return
    rounds = report["rounds"]
    names = list(rounds[0]["results"])
    xs = [row["round"] for row in rounds]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4))
    for name in names:
        ax1.plot(xs, [row["results"][name]["rps"] for row in rounds], marker="o", label=name)
    ax1.set(xlabel="round", ylabel="requests/s", title="Throughput per round (c=8, one worker)")
    for i, name in enumerate(names[1:], start=1):
        ref = "osteoguard auth off" if name.endswith("large") else "floor"
        label = f"{name} / {'typical' if name.endswith('large') else 'floor'}"
        ax2.plot(
            xs,
            [row["results"][name]["rps"] / row["results"][ref]["rps"] for row in rounds],
            marker="o",
            label=label,
            color=f"C{i}",  # the same colour as the target's throughput line
        )
    ax2.axhline(TARGET_RATIO, color="grey", linestyle="--", linewidth=1)
    ax2.axhline(TARGET_LARGE, color="grey", linestyle=":", linewidth=1)
    ax2.set(
        xlabel="round", ylabel="ratio", title="Ratios (dashed: 0.4 target; dotted: 0.5 large)", ylim=(0, 1)
    )
    s = report["summary"]
    ax3.bar(
        range(len(names)),
        [s[n]["server_cpu_ms_per_req"]["median"] for n in names],
        color=[f"C{i}" for i in range(len(names))],
    )
    ax3.set_xticks(
        range(len(names)),
        [n.replace("osteoguard ", "og ").replace(", large", "\nlarge") for n in names],
        fontsize=8,
    )
    ax3.set(ylabel="ms", title="Server CPU per request (median of rounds)")
    for ax in (ax1, ax2):
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"bench/run.py, {report['meta']['date']}, {report['meta']['cpu_model']}, "
        f"commit {report['meta']['git_commit'][:10]}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart: {path}")


def refresh_docs(markdown: str, report: dict[str, Any]) -> None:
    """Replaces the latest-run block of docs/speed.md and the README's speed line."""
    speed = ROOT / "docs" / "speed.md"
    text = speed.read_text()
    block = f"<!-- latest-run:start (bench/run.py --docs writes this) -->\n{markdown}<!-- latest-run:end -->"
    text, n = re.subn(r"<!-- latest-run:start.*?<!-- latest-run:end -->", lambda _: block, text, flags=re.S)
    if n != 1:
        raise SystemExit("docs/speed.md has no latest-run block")
    speed.write_text(text)
    readme = ROOT / "README.md"
    s, meta = report["summary"], report["meta"]
    off, rs = s["osteoguard auth off"], s["osteoguard RS384"]
    line = (
        f"<!-- speed:start -->Latest benchmark: {meta['date']}, {meta['cpu_model']}, {meta['machine']}, "
        f"load average {meta['load_average_before'][0]:.1f} at the start. One worker, auth off: "
        f"{off['rps']['median']:,.0f} requests/s, {off['ratio']['median']:.2f} of a bare FastAPI "
        f"endpoint's (range {off['ratio']['min']:.2f}-{off['ratio']['max']:.2f} over "
        f"{len(report['rounds'])} rounds; target {TARGET_RATIO}); with RS384 JWT "
        f"{rs['ratio']['median']:.2f}.<!-- speed:end -->"
    )
    text = readme.read_text()
    text, n = re.subn(r"<!-- speed:start -->.*?<!-- speed:end -->", lambda _: line, text, flags=re.S)
    if n != 1:
        raise SystemExit("README.md has no speed line")
    readme.write_text(text)
    print("refreshed docs/speed.md and README.md")


if __name__ == "__main__":
    main()
