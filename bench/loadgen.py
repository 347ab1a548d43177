"""A small HTTP/1.1 keep-alive load generator in Python (run as its own process).

bench/run.py uses it for the open-loop runs (requests sent at a fixed rate, latency counted
from each request's planned send time, so a stalled server is not hidden: wrk 4 cannot do
this and wrk2 is not packaged in Debian), and for closed-loop runs where wrk is missing.
It is itself Python: it takes three to four times wrk's CPU per request, which on a 2-core
machine is CPU the server under test does not get (docs/speed.md has the comparison).

Reads a JSON job on stdin: {"host", "port", "requests": [raw request bytes as latin-1 text],
"concurrency", "rate" (requests/s, 0 = as fast as possible), "warmup" (requests not counted
in the latencies), "duration" (seconds; closed loop only: cycle through the requests until
then, instead of sending each once), optional "timeout" (seconds: a caller that gives up closes
its connection and opens another, status "timeout")}. Without a duration every request string
is sent once, in order, spread over `concurrency` connections. Prints JSON: requests, seconds,
throughput, latency percentiles (also of the 200s alone), status counts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


async def answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def connection(
    host: str,
    port: int,
    take: Callable[[], tuple[int, bytes] | None],
    out: list[tuple[int, float, int]],
    start_at: float,
    interval: float,
    timeout: float | None = None,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    try:
        while True:
            item = take()
            if item is None:
                return
            index, payload = item
            if interval:
                due = start_at + index * interval  # open loop: each request has its send time
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    began = max(due, loop.time())  # the timer's own lateness is ours, not the server's
                else:
                    began = due  # sent late because every connection was busy: that wait counts
            else:
                began = loop.time()
            writer.write(payload)
            try:
                status = await asyncio.wait_for(answer(reader), timeout)
            except TimeoutError:
                out.append((index, loop.time() - began, 0))  # 0: timed out
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            out.append((index, loop.time() - began, status))
    finally:
        writer.close()


async def main() -> None:
    job = json.loads(sys.stdin.read())
    requests = [r.encode("latin-1") for r in job["requests"]]
    warm = job.get("warmup", 0)
    rate = job.get("rate", 0)
    duration = job.get("duration", 0)
    loop = asyncio.get_running_loop()
    counter = itertools.count()
    start = loop.time() + 0.05
    end = start + duration

    def take() -> tuple[int, bytes] | None:
        index = next(counter)
        if duration:
            if loop.time() >= end:
                return None
            return index, requests[index % len(requests)]
        return (index, requests[index]) if index < len(requests) else None

    out: list[tuple[int, float, int]] = []
    wall = time.perf_counter()
    await asyncio.gather(
        *(
            connection(
                job["host"], job["port"], take, out, start, 1 / rate if rate else 0, job.get("timeout")
            )
            for _ in range(job["concurrency"])
        )
    )
    elapsed = time.perf_counter() - wall
    measured = sorted(lat for i, lat, _ in out if i >= warm)
    ok = sorted(lat for i, lat, status in out if i >= warm and status == 200)
    statuses: dict[str, int] = {}
    for _, _, status in out:
        name = str(status) if status else "timeout"
        statuses[name] = statuses.get(name, 0) + 1

    def pct(p: float, values: list[float] | None = None) -> float:
        values = measured if values is None else values
        return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")

    print(
        json.dumps(
            {
                "requests": len(out),
                "seconds": elapsed,
                "rps": len(out) / elapsed,
                "p50_ms": pct(0.5),
                "p90_ms": pct(0.9),
                "p99_ms": pct(0.99),
                "max_ms": measured[-1] * 1000,
                "p99_ok_ms": pct(0.99, ok),
                "statuses": statuses,
            }
        )
    )


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in a process of its own (so that it has a core of its own) and return what
    it printed."""
    done = subprocess.run(
        [sys.executable, __file__], input=json.dumps(job), capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


if __name__ == "__main__":
    asyncio.run(main())
