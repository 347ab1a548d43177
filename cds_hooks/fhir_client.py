"""Reading prefetch data the client did not send from the EHR's FHIR server (SPEC §2).

Every missing key is queried concurrently with the same template the service declares in
discovery, with ``Authorization: Bearer <fhirAuthorization.access_token>``. Search results
are followed through their ``next`` links up to :data:`MAX_PAGES`; a result that cannot be had
completely is a failure, never a partial answer. One deadline bounds all queries of a request
(``OSTEOGUARD_FHIR_TIMEOUT_S``), and one byte budget bounds everything read for it
(``OSTEOGUARD_FHIR_MAX_BYTES``: every page of every key, counted decoded as the bodies stream
in; a body past it is cut off and its connection dropped). Failures are reported per key with
a reason that never contains the token or a response body.

What answered is not told: a closed port, a timeout, a live web server and an HTTP error all
give the same reason (:data:`NO_USABLE_ANSWER`; the detail goes to the log), so ``fhirServer``
cannot be used to map a network. The address is checked before anything is sent: link-local
(169.254.0.0/16, fe80::/10, cloud metadata) never; loopback, private, unspecified, multicast
and reserved addresses only for a base URL listed in ``OSTEOGUARD_FHIR_PRIVATE_SERVERS`` (a
local sandbox, an on-premise EHR). Only IP literals and ``localhost`` are checked here: a DNS
name is not resolved (the chart's NetworkPolicy limits egress).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from cds_hooks.bodies import ByteBudget, TooLarge, read_within
from cds_hooks.urls import is_loopback

NO_USABLE_ANSWER = "the FHIR server gave no usable answer"

log = logging.getLogger("osteoguard.fhir")

MAX_PAGES = 10
# All FHIR bodies of one call, decoded. A searchset entry of one Observation is about 1-2 kB,
# so this holds thousands of results per call; a realistic patient's bundles are tens of kB.
FHIR_MAX_BYTES = 8 * 1024 * 1024
FHIR_JSON = "application/fhir+json"


class FetchFailed(Exception):
    """One key could not be fetched; ``reason`` is safe to show to the client."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class FhirServer:
    """A validated ``fhirServer`` base URL and the headers to send to it."""

    base: str
    headers: dict[str, str]

    def owns(self, url: str) -> bool:
        """True when ``url`` is on this server (so the bearer token may be sent there)."""
        return url == self.base or url.startswith(self.base + "/") or url.startswith(self.base + "?")


def _internal_address(host: str) -> str | None:
    """What kind of internal address ``host`` is ("link-local", ...), or None for a public one."""
    if is_loopback(host):
        return "loopback"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a DNS name: not resolved here
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "link-local"
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_unspecified or address.is_multicast or address.is_reserved:
        return "private"
    return None


def server_from_request(
    fhir_server: Any, fhir_authorization: Any, listed: frozenset[str] = frozenset()
) -> FhirServer:
    """Validate ``fhirServer``/``fhirAuthorization``; raises FetchFailed("*", reason) when unusable.

    HTTPS is required, except for a loopback address (a local test sandbox): a bearer token
    is never sent in clear text over a network. Link-local addresses are refused always;
    loopback and private ones unless the base URL is in ``listed`` (normalised: no trailing "/").
    """
    if not isinstance(fhir_server, str) or not fhir_server:
        raise FetchFailed("*", "the request has no fhirServer to fetch them from")
    parts = urlsplit(fhir_server)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise FetchFailed("*", "fhirServer is not an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise FetchFailed("*", "fhirServer must use https")
    internal = _internal_address(parts.hostname)
    if internal == "link-local" or (internal is not None and fhir_server.rstrip("/") not in listed):
        # The same text for every kind: the client learns the policy, not the network.
        raise FetchFailed("*", "fhirServer is an internal address this service does not call")
    headers = {"Accept": FHIR_JSON}
    if fhir_authorization is not None:
        token = fhir_authorization.get("access_token") if isinstance(fhir_authorization, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise FetchFailed("*", "fhirAuthorization has no access_token")
        headers["Authorization"] = f"Bearer {token}"
    return FhirServer(fhir_server.rstrip("/"), headers)


class FhirFetcher:
    """Fetches missing prefetch keys over one shared, pooled ``httpx.AsyncClient``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        budget_s: float,
        max_pages: int = MAX_PAGES,
        on_outcome: Callable[[str, bool], None] | None = None,
        listed: frozenset[str] = frozenset(),
        max_bytes: int = FHIR_MAX_BYTES,
        on_too_large: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.budget_s = budget_s
        self.max_pages = max_pages
        # Told (key, succeeded) once per key and request: the service counts it in its metrics.
        self.on_outcome = on_outcome
        # fhirServer base URLs that may be on loopback or private addresses (settings).
        self.listed = listed
        # Bytes all bodies of one call may take; told once per call that ran over it (a metric).
        self.max_bytes = max_bytes
        self.on_too_large = on_too_large

    def deadline(self) -> float:
        """The monotonic time by which every fetch of one request must be done."""
        return time.monotonic() + self.budget_s

    async def fetch(
        self, server: FhirServer, queries: dict[str, str], deadline: float
    ) -> tuple[dict[str, dict[str, Any]], list[FetchFailed]]:
        """Fetch every query concurrently; returns the results and the failures, by key."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {}, [FetchFailed(key, "no time left in the FHIR fetch budget") for key in queries]
        budget = ByteBudget(self.max_bytes)  # shared: the cap is per call, not per key or page
        tasks = {
            key: asyncio.ensure_future(self._one(server, key, path, budget)) for key, path in queries.items()
        }
        try:
            done, pending = await asyncio.wait(tasks.values(), timeout=remaining)
        except asyncio.CancelledError:
            # The call was cancelled (its client has gone): its fetches are its work too, and
            # asyncio.wait leaves the tasks it waits on running.
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
        for task in pending:
            task.cancel()
        results: dict[str, dict[str, Any]] = {}
        failures: list[FetchFailed] = []
        for key, task in tasks.items():
            ok = task not in pending and task.exception() is None
            if self.on_outcome is not None:
                self.on_outcome(key, ok)
            if task in pending:
                failures.append(FetchFailed(key, f"no answer within {self.budget_s:g} s"))
            elif isinstance(task.exception(), FetchFailed):
                failures.append(task.exception())  # type: ignore[arg-type]
            elif task.exception() is not None:
                log.error(
                    "FHIR fetch failed unexpectedly",
                    extra={"key": key, "error": type(task.exception()).__name__},
                )
                failures.append(FetchFailed(key, "the FHIR request failed"))
            else:
                results[key] = task.result()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if budget.remaining < 0 and self.on_too_large is not None:
            self.on_too_large()
        return results, failures

    async def _get(self, server: FhirServer, key: str, url: str, budget: ByteBudget) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with self.client.stream("GET", url, headers=server.headers) as response:
                # Only a 200's body is read: any other status is unusable whatever it says.
                content = await read_within(response, budget) if response.status_code == 200 else b""
        except TooLarge as exc:
            budget.spend_all()  # the call is a 412 now: its other keys stop reading too
            log.warning("FHIR answer unusable", extra={"key": key, "problem": f"too large ({exc})"})
            raise FetchFailed(key, NO_USABLE_ANSWER) from exc
        except httpx.HTTPError as exc:
            log.warning("FHIR fetch failed", extra={"key": key, "error": type(exc).__name__})
            raise FetchFailed(key, NO_USABLE_ANSWER) from exc
        log.info(
            "FHIR fetch",
            extra={
                "key": key,
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        # From here on, every way of not being a FHIR resource gives the same reason: a 404,
        # a login page and a JSON array would otherwise tell a live port from a closed one.
        problem: str | None = None
        body: Any = None
        if response.status_code != 200:
            problem = f"HTTP {response.status_code}"
        else:
            try:
                body = orjson.loads(content)
            except orjson.JSONDecodeError:
                problem = "not JSON"
        if problem is None and (not isinstance(body, dict) or not isinstance(body.get("resourceType"), str)):
            problem = "not a FHIR resource"
        if problem is None and body["resourceType"] == "OperationOutcome":
            problem = "an OperationOutcome"
        if problem is not None:
            log.warning("FHIR answer unusable", extra={"key": key, "problem": problem})
            raise FetchFailed(key, NO_USABLE_ANSWER)
        result: dict[str, Any] = body
        return result

    async def _one(self, server: FhirServer, key: str, path: str, budget: ByteBudget) -> dict[str, Any]:
        url = f"{server.base}/{path.lstrip('/')}"
        first = await self._get(server, key, url, budget)
        is_search = "?" in path
        if not is_search:
            expected = path.split("/", 1)[0]
            if first["resourceType"] != expected:
                raise FetchFailed(
                    key, f"the FHIR server answered a {first['resourceType']}, not a {expected}"
                )
            return first
        if first["resourceType"] != "Bundle":
            raise FetchFailed(key, "the FHIR server's search answer is not a Bundle")
        entries = list(_entries(first))
        page, pages = first, 1
        while (next_url := _next_link(page)) is not None:
            if pages >= self.max_pages:
                raise FetchFailed(key, f"more than {self.max_pages} pages of results")
            if not server.owns(next_url):
                raise FetchFailed(key, "a next link points away from the FHIR server")
            page = await self._get(server, key, next_url, budget)
            if page["resourceType"] != "Bundle":
                raise FetchFailed(key, "a next page is not a Bundle")
            entries.extend(_entries(page))
            pages += 1
        return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


def _entries(bundle: dict[str, Any]) -> list[Any]:
    entries = bundle.get("entry")
    return entries if isinstance(entries, list) else []


def _next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None
