"""The FHIR sandbox the integration tests run against.

By default a private sekmet-fhir server is started with ``scripts/fhir-sandbox`` (the same
script humans and CI use) on a free 127.0.0.1 port, in a temporary work dir, with a fresh
bearer token; it is seeded with ``tests/fixtures/sandbox-seed.json`` and always stopped.
With ``FHIR_SANDBOX_URL`` (and ``FHIR_SANDBOX_TOKEN``) set, that server is seeded and used
instead, and nothing is started or stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from service.ruleset.scenarios import roll_dates

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fhir-sandbox"
SEED_PATH = ROOT / "tests" / "fixtures" / "sandbox-seed.json"
CASES_PATH = ROOT / "tests" / "fixtures" / "sandbox-cases.json"
FHIR_JSON = "application/fhir+json"
# First run installs sekmet-fhir from PyPI (~20 s here); start-up itself takes ~2 s.
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30


class Sandbox(NamedTuple):
    base_url: str
    token: str


class SandboxError(Exception):
    """The sandbox could not be installed, started, seeded or stopped; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(command: str, workdir: Path, port: int, token: str, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_SANDBOX_")}
    env |= {"FHIR_SANDBOX_DIR": str(workdir), "FHIR_SANDBOX_PORT": str(port), "FHIR_SANDBOX_TOKEN": token}
    env["FHIR_SANDBOX_DETACH"] = "0"  # stay in pytest's process group: a killed CI job takes it along
    try:
        done = subprocess.run(
            [str(SCRIPT), command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"scripts/fhir-sandbox {command} did not finish within {timeout:g} s") from exc
    output = (done.stdout + done.stderr).replace(token, "<token>")
    if done.returncode != 0:
        raise SandboxError(f"scripts/fhir-sandbox {command} failed (exit {done.returncode}):\n{output}")
    return output


def start_local(workdir: Path) -> Sandbox:
    """Install (first run) and start sekmet on a free loopback port; raises SandboxError."""
    port, token = free_port(), secrets.token_urlsafe(24)
    _script("start", workdir, port, token, START_TIMEOUT_S)
    return Sandbox(f"http://127.0.0.1:{port}/fhir", token)


def stop_local(workdir: Path, sandbox: Sandbox) -> None:
    port = int(sandbox.base_url.rsplit(":", 1)[1].split("/", 1)[0])
    _script("stop", workdir, port, sandbox.token, STOP_TIMEOUT_S)


def from_environment() -> Sandbox | None:
    """The sandbox named by FHIR_SANDBOX_URL / FHIR_SANDBOX_TOKEN, if any."""
    url = os.environ.get("FHIR_SANDBOX_URL", "").strip()
    if not url:
        return None
    return Sandbox(url.rstrip("/"), os.environ.get("FHIR_SANDBOX_TOKEN", "").strip())


def trust_env(url: str) -> bool:
    """Use proxy settings from the environment, except for a loopback sandbox."""
    return httpx.URL(url).host not in ("127.0.0.1", "localhost", "::1")


def headers(token: str) -> dict[str, str]:
    out = {"Accept": FHIR_JSON}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def seed(sandbox: Sandbox, today: date) -> int:
    """PUT every seed resource (dates rolled to ``today``) in one transaction; returns the count."""
    bundle = roll_dates(json.loads(SEED_PATH.read_text(encoding="utf-8")), today)
    try:
        response = httpx.post(
            sandbox.base_url,
            json=bundle,
            headers=headers(sandbox.token) | {"Content-Type": FHIR_JSON},
            timeout=120,
            trust_env=trust_env(sandbox.base_url),
        )
    except httpx.HTTPError as exc:
        raise SandboxError(f"seeding {sandbox.base_url} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        text = response.text[:2000].replace(sandbox.token or "\0", "<token>")
        raise SandboxError(f"seeding {sandbox.base_url} failed: HTTP {response.status_code}: {text}")
    statuses = [e.get("response", {}).get("status", "") for e in response.json().get("entry", [])]
    bad = [s for s in statuses if not s.startswith(("200", "201"))]
    if bad or len(statuses) != len(bundle["entry"]):
        raise SandboxError(
            f"seeding {sandbox.base_url}: {len(statuses)} answers, unexpected statuses {bad[:5]}"
        )
    return len(statuses)


def load_cases() -> list[dict[str, Any]]:
    """The seeded cases: path, service, patientId, expect, forbid and the full request (date tokens)."""
    return json.loads(CASES_PATH.read_text(encoding="utf-8"))["cases"]


def search_all(
    client: httpx.Client, sandbox: Sandbox, query: str, max_pages: int = 20
) -> list[dict[str, Any]]:
    """GET ``{base}/{query}`` and every ``next`` page: every entry's resource but ``include``s
    (so an OperationOutcome the server adds about an ignored parameter shows up); a read
    gives the resource itself."""
    url: str | None = f"{sandbox.base_url}/{query}"
    found: list[dict[str, Any]] = []
    for _ in range(max_pages):
        if url is None:
            return found
        response = client.get(url, headers=headers(sandbox.token))
        response.raise_for_status()
        body = response.json()
        if body.get("resourceType") != "Bundle":
            return [body]
        found += [
            e["resource"] for e in body.get("entry") or [] if (e.get("search") or {}).get("mode") != "include"
        ]
        url = next((link["url"] for link in body.get("link") or [] if link.get("relation") == "next"), None)
    raise AssertionError(f"{query}: more than {max_pages} pages")
