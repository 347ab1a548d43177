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

from cds_hooks.errors import AuthError

REFETCH_INTERVAL_S = 60.0
JWKS_DEADLINE_S = 2.0  # the whole fetch: connect, headers, body
JWKS_MAX_BYTES = 256 * 1024  # a JWK Set of a few keys is a few kB


class JwksTooLarge(Exception):
    pass


@dataclass
class _KeySet:
    keys: dict[str, PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")


def _parse_jwks(data: Any) -> dict[str, PyJWK]:
    keys: dict[str, PyJWK] = {}
    for raw in data.get("keys", []) if isinstance(data, dict) else []:
        if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
            continue
        try:
            keys[raw["kid"]] = PyJWK(raw)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue  # a key we cannot use (e.g. a symmetric "oct" key) is ignored
    return keys


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
                keyset = self._sets[source] = _KeySet(_parse_jwks(inline), self.clock())
            found = keyset.keys.get(kid)
            if found is None:
                raise AuthError("kid not in the client's jwks")
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
                raise AuthError("unknown kid")
            return keyset.keys[kid]

    async def _fetch(self, url: str) -> _KeySet:
        try:
            async with asyncio.timeout(self.deadline_s):
                body = await self._body(url)
            keyset = _KeySet(_parse_jwks(json.loads(body)), self.clock())
        except (httpx.HTTPError, json.JSONDecodeError, ValueError, TimeoutError, JwksTooLarge) as exc:
            # Fail closed, and remember the failure so a flood of tokens does not flood the EHR.
            self._sets.setdefault(url, _KeySet()).fetched_at = self.clock()
            raise AuthError(f"JWK Set could not be fetched ({type(exc).__name__})") from exc
        self._sets[url] = keyset
        return keyset

    async def _body(self, url: str) -> bytes:
        """The body at ``url``, counted as it streams; JwksTooLarge past :attr:`max_bytes`."""
        timeout = httpx.Timeout(self.deadline_s)
        async with self.http.stream(
            "GET", url, timeout=timeout, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise JwksTooLarge
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():  # decoded: a gzip bomb counts in full
                size += len(chunk)
                if size > self.max_bytes:
                    raise JwksTooLarge
                chunks.append(chunk)
        return b"".join(chunks)
