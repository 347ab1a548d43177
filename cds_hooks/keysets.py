"""JWK Sets of trusted clients, fetched once and cached by source.

A key set is refetched only when a token names a ``kid`` it does not hold (key rotation), and
then at most once a minute per source; a key set that cannot be fetched fails closed (the
failure is remembered too, so a flood of tokens does not become a flood of fetches).

A fetch has one total deadline (:data:`JWKS_DEADLINE_S`, not per read: a server trickling a
byte a second cannot hold a call) and a byte cap (:data:`JWKS_MAX_BYTES`, counted as the body
streams in, so a 50 MB key set is cut off before it is parsed).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from cds_hooks.bodies import ByteBudget, TooLarge, read_within
from cds_hooks.errors import AuthError

REFETCH_INTERVAL_S = 60.0
JWKS_DEADLINE_S = 2.0  # the whole fetch: connect, headers, body
JWKS_MAX_BYTES = 256 * 1024  # a JWK Set of a few keys is a few kB


@dataclass
class _KeySet:
    keys: dict[str, PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    without_kid: int = 0


def _holds(keyset: _KeySet) -> str:
    held = ", ".join(repr(k) for k in sorted(keyset.keys)[:10]) or "no usable key"
    skipped = f"; {keyset.without_kid} key(s) without a kid were ignored" if keyset.without_kid else ""
    return f"holds {held}{skipped}"


def _parse_jwks(data: Any) -> tuple[dict[str, PyJWK], int]:
    """The usable keys by kid, and how many keys had no kid (a token names its key by kid,
    so such a key can never verify anything)."""
    keys: dict[str, PyJWK] = {}
    without_kid = 0
    for raw in data.get("keys", []) if isinstance(data, dict) else []:
        if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
            without_kid += 1
            continue
        try:
            keys[raw["kid"]] = PyJWK(raw)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue  # a key we cannot use (e.g. a symmetric "oct" key) is ignored
    return keys, without_kid


class KeyStore:
    """JWK Sets by source, cached; refetched on an unknown kid at most once a minute."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        deadline_s: float = JWKS_DEADLINE_S,
        max_bytes: int = JWKS_MAX_BYTES,
    ) -> None:
        self.http = http
        self.clock = clock
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        self._sets: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key(self, source: str, kid: str, inline: dict[str, Any] | None = None) -> PyJWK:
        if inline is not None:
            keyset = self._sets.get(source)
            if keyset is None:  # parsed once; the file does not change while we run
                keys, without_kid = _parse_jwks(inline)
                keyset = self._sets[source] = _KeySet(keys, self.clock(), without_kid)
            found = keyset.keys.get(kid)
            if found is None:
                raise AuthError(f"kid not in the client's jwks: {kid[:100]!r}; the jwks {_holds(keyset)}")
            return found
        keyset = self._sets.get(source)
        if keyset is not None and kid in keyset.keys:
            return keyset.keys[kid]
        lock = self._locks.setdefault(source, asyncio.Lock())
        async with lock:
            keyset = self._sets.get(source)
            if keyset is not None and kid in keyset.keys:
                return keyset.keys[kid]
            if keyset is None or self.clock() - keyset.fetched_at >= REFETCH_INTERVAL_S:
                keyset = await self._fetch(source)
            if kid not in keyset.keys:
                raise AuthError(f"unknown kid {kid[:100]!r}: the JWK Set at {source} {_holds(keyset)}")
            return keyset.keys[kid]

    async def _fetch(self, url: str) -> _KeySet:
        try:
            async with asyncio.timeout(self.deadline_s):
                body = await self._body(url)
            keys, without_kid = _parse_jwks(json.loads(body))
            keyset = _KeySet(keys, self.clock(), without_kid)
        except (httpx.HTTPError, json.JSONDecodeError, ValueError, TimeoutError, TooLarge) as exc:
            # Fail closed, and remember the failure so a flood of tokens does not flood the EHR.
            self._sets.setdefault(url, _KeySet()).fetched_at = self.clock()
            raise AuthError(f"JWK Set could not be fetched ({type(exc).__name__})") from exc
        self._sets[url] = keyset
        return keyset

    async def _body(self, url: str) -> bytes:
        """The body at ``url``, counted as it streams; TooLarge past :attr:`max_bytes`."""
        timeout = httpx.Timeout(self.deadline_s)
        async with self.http.stream(
            "GET", url, timeout=timeout, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            return await read_within(
                response, ByteBudget(self.max_bytes)
            )  # decoded: a gzip bomb counts in full
