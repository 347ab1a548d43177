"""Instructions per request of the ceiling's servers, counted by callgrind: a ratio no other load moves.

    apt-get install -y valgrind wrk                  # valgrind counts; wrk is not needed here
    .venv/bin/python bench/instructions.py           # 5 servers x 200 requests: about 7 minutes
    .venv/bin/python bench/instructions.py --requests 50 --servers floor,rules

Requests/s on a shared machine move with whatever else runs there (the floor's varied from
2,300 to 5,900 req/s across guests of the same kind in one day). Instructions do not: each
server of bench/ceiling.py runs here under `valgrind --tool=callgrind` (all threads, the
audit writer's included), gets 30 typical requests to warm up, then its counters are zeroed
(`callgrind_control -z`), it answers ``--requests`` typical requests one after the other over
one keep-alive connection, and the counters are dumped (`callgrind_control -d`). The total
over the requests is each server's instructions per request; the floor's over another
server's is the ratio it would have if time followed instructions (it does not exactly:
cache misses and system calls cost more than an instruction's share, see docs/speed.md).

Under callgrind a server runs about 50 times slower, so Osteoguard's load shedding and audit
deadline are lifted (OSTEOGUARD_MAX_LOOP_LAG_MS, OSTEOGUARD_AUDIT_MAX_AGE_MS): at the real
speed they do not act on one request at a time either. Every Osteoguard server must answer
with the same cards and spool no audit record, or the run stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ceiling import rule_ids, spooled_in  # noqa: E402
from bench.requests import payload  # noqa: E402
from bench.run import PATH, PY, UVICORN_FLAGS, free_port, osteoguard_env, store_path  # noqa: E402

# name: (what it is, its command line, whether it is Osteoguard: `serve`, its own settings)
SERVERS = {
    "floor": ("the floor", [PY, "-m", "uvicorn", "bench.floor:app", *UVICORN_FLAGS], False),
    "rules": (
        "floor + the rules",
        [PY, "-m", "uvicorn", "--factory", "bench.parts:make_rules_app", *UVICORN_FLAGS],
        False,
    ),
    "no-clinical": (
        "osteoguard, facts+rules+cards replayed",
        [PY, str(ROOT / "bench" / "parts.py"), "--replay", "facts,rules,cards"],
        True,
    ),
    "only-rules": (
        "osteoguard, facts+cards replayed",
        [PY, str(ROOT / "bench" / "parts.py"), "--replay", "facts,cards"],
        True,
    ),
    "osteoguard": ("osteoguard auth off", [PY, "-m", "service.cli"], True),
}
TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.M)
WARM_UP = 30


@dataclasses.dataclass(frozen=True)
class Count:
    server: str
    requests: int
    instructions: int
    cards: tuple[str, ...]
    spooled: int | None  # audit records written through the spool (Osteoguard only)

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def audited(db: Path, at_least: int) -> None:
    """Wait until the audit holds at least ``at_least`` card records (one per typical call)."""
    deadline = time.monotonic() + 300
    while True:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM cards").fetchone()
        if stored >= at_least:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{db.stem}: {stored} of {at_least} audit records after 300 s")
        time.sleep(0.5)


def count(name: str, requests: int, work: Path) -> Count:
    """Run one server under callgrind and count the instructions of ``requests`` calls."""
    title, argv, osteoguard = SERVERS[name]
    port = free_port()
    db = store_path(work, port)
    if osteoguard:
        argv = [*argv, "serve", "--port", str(port)]
        env = osteoguard_env("off", work, port)
        env |= {"OSTEOGUARD_MAX_LOOP_LAG_MS": "60000", "OSTEOGUARD_AUDIT_MAX_AGE_MS": "60000"}
    else:
        argv = [*argv, "--port", str(port)]
        env = {**os.environ, "OSTEOGUARD_AUTH": "off", "BENCH_JWK": "{}", "BENCH_AUDIENCE": "-"}
    out = work / f"{name}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no"]
    with (work / f"{name}.log").open("w") as log:
        proc = subprocess.Popen([*valgrind, *argv], cwd=ROOT, env=env, stdout=log, stderr=log)
    body = payload("typical")
    url = f"http://127.0.0.1:{port}{PATH}"
    headers = {"Content-Type": "application/json"}
    try:
        with httpx.Client(timeout=300) as client:
            deadline = time.monotonic() + 900
            while True:
                try:
                    client.post(url, content=body, headers=headers).raise_for_status()
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{title}: did not start (see {work / name}.log)") from None
                    time.sleep(1)
            for _ in range(WARM_UP):
                client.post(url, content=body, headers=headers).raise_for_status()
            sent = 1 + WARM_UP
            if osteoguard:  # the warm-up's audit records written before counting starts
                audited(db, sent)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            for _ in range(requests):
                answer = client.post(url, content=body, headers=headers)
                answer.raise_for_status()
            if osteoguard:  # ... and the counted requests' written before counting stops
                audited(db, sent + requests)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            spooled = None
            if osteoguard:
                spooled = spooled_in(client.get(f"http://127.0.0.1:{port}/metrics").text, title)
    finally:
        proc.terminate()
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dumps = sorted(work.glob(f"{out.name}.{proc.pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    totals = TOTALS.search(dumps[-1].read_text()) if dumps else None
    if not totals:
        raise SystemExit(f"{title}: no callgrind dump")
    return Count(title, requests, int(totals.group(1)), tuple(rule_ids(answer.json()["cards"])), spooled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="counted requests per server")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"some of {','.join(SERVERS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "instructions.json")
    args = parser.parse_args()
    names = [n for n in args.servers.split(",") if n]
    if unknown := set(names) - set(SERVERS):
        parser.error(f"--servers: unknown {sorted(unknown)}")
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("bench/instructions.py needs valgrind: apt-get install -y valgrind")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="og-instructions-") as tmp:
        results: list[Count] = []
        for name in names:
            results.append(count(name, args.requests, Path(tmp)))
            print(json.dumps(dataclasses.asdict(results[-1])), flush=True)
    if len({r.cards for r in results}) != 1:
        raise SystemExit(f"the servers answered with different cards: {[r.cards for r in results]}")
    if any(r.spooled for r in results):
        raise SystemExit("an Osteoguard server spooled audit records: its count includes the spool")
    floor = next((r for r in results if r.server == "the floor"), None)
    print()
    print("| server | instructions per request | floor's over this |")
    print("|---|---|---|")
    for r in results:
        ratio = f"{floor.per_request / r.per_request:.2f}" if floor else "-"
        print(f"| {r.server} | {r.per_request / 1e6:.2f} M | {ratio} |")
    head = subprocess.run(
        ["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    record = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": head.stdout.strip(),
        "git_dirty": bool(dirty.stdout.strip()),
        "python": sys.version.split()[0],
        "results": [dataclasses.asdict(r) | {"per_request": r.per_request} for r in results],
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out}; took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
