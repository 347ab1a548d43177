"""Verifying the CDS Hooks JWT that authenticates every call from an EHR ("Trusting CDS Clients").

Checks, in this order: the issuer is a trusted client; ``aud`` is the URL of the endpoint
being called; ``exp``/``iat``/``nbf`` are sane (60 s of clock skew); the algorithm is an
asymmetric one we accept (never ``none``, never HMAC); the key chosen by ``kid`` verifies the
signature — from the ``jku`` URL only when it starts with one of the client's ``jku_allow``
prefixes, else from the client's ``jwks`` or ``jwks_url``; the ``jti`` was not seen before
(kept in the store until the token expires, so replay is caught across workers and replicas).

Key sets are cached per URL and refetched when a token names an unknown ``kid`` (at most
once a minute per client); a key set that cannot be fetched fails closed. Every failure is
an :class:`AuthError` whose reason goes to the log (with ``iss`` and ``jti``, never the token);
the client only ever sees a bare 401.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
import yaml
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms

from service.errors import OsteoguardError

log = logging.getLogger("osteoguard.auth")

ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
CLOCK_SKEW_S = 60
MAX_LIFETIME_S = 3600  # a CDS Hooks JWT lives minutes; refuse ones minted for longer
REFETCH_INTERVAL_S = 60.0
JWKS_TIMEOUT_S = 2.0


class AuthError(OsteoguardError):
    """The request is not authenticated. ``reason`` is for the log only."""

    status_code = 401
    issue_code = "login"
    error_code = "OG-401"

    def __init__(self, reason: str, *, iss: str | None = None, jti: str | None = None) -> None:
        super().__init__("authentication required")
        self.reason = reason
        self.iss = iss
        self.jti = jti


class TrustedClientsError(OsteoguardError):
    """The trusted-clients file is missing or invalid (a start-up error)."""


@dataclass(frozen=True)
class TrustedClient:
    iss: str
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    jku_allow: tuple[str, ...] = ()


def load_trusted_clients(path: Path) -> dict[str, TrustedClient]:
    """Read the trusted-clients YAML file (SPEC §1)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TrustedClientsError(f"cannot read the trusted-clients file {path}: {exc}") from exc
    clients = data.get("clients") if isinstance(data, dict) else None
    if not isinstance(clients, list) or not clients:
        raise TrustedClientsError(f"{path}: expected `clients:` with at least one entry")
    out: dict[str, TrustedClient] = {}
    for i, entry in enumerate(clients):
        where = f"{path}: clients[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
            raise TrustedClientsError(f"{where} needs an iss")
        jwks, jwks_url = entry.get("jwks"), entry.get("jwks_url")
        if (jwks is None) == (jwks_url is None):
            raise TrustedClientsError(f"{where} needs exactly one of jwks or jwks_url")
        if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
            raise TrustedClientsError(f"{where}: jwks must be a JWK Set ({{keys: [...]}})")
        if jwks_url is not None and not _secure_url(jwks_url):
            raise TrustedClientsError(f"{where}: jwks_url must be an https URL")
        allow = entry.get("jku_allow") or []
        if not isinstance(allow, list) or not all(_secure_url(a) for a in allow):
            raise TrustedClientsError(f"{where}: jku_allow must be a list of https URL prefixes")
        out[entry["iss"]] = TrustedClient(entry["iss"], jwks, jwks_url, tuple(allow))
    return out


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

    def __init__(self, http: httpx.AsyncClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.http = http
        self.clock = clock
        self._sets: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

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
        self.fetches += 1
        try:
            response = await self.http.get(
                url, timeout=JWKS_TIMEOUT_S, headers={"Accept": "application/json"}
            )
            response.raise_for_status()
            keyset = _KeySet(_parse_jwks(response.json()), self.clock())
        except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
            # Fail closed, and remember the failure so a flood of tokens does not flood the EHR.
            self._sets.setdefault(url, _KeySet()).fetched_at = self.clock()
            raise AuthError(f"JWK Set could not be fetched ({type(exc).__name__})") from exc
        self._sets[url] = keyset
        return keyset


class Verifier:
    """Verifies CDS Hooks bearer JWTs against the trusted clients."""

    def __init__(
        self,
        clients: dict[str, TrustedClient],
        keys: KeyStore,
        remember_jti: Callable[[str, str, datetime], Any],
        now: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        self.keys = keys
        self.remember_jti = remember_jti  # async: raises AuthError on a replay
        self.now = now

    async def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims of the request's bearer token, or AuthError."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("no bearer token")
        token = authorization[len("Bearer ") :].strip()
        header, unverified, signing_input, signature = _split(token)
        iss = unverified.get("iss") if isinstance(unverified.get("iss"), str) else None
        jti = unverified.get("jti") if isinstance(unverified.get("jti"), str) else None
        client = self.clients.get(iss or "")
        if client is None:
            raise AuthError("untrusted iss", iss=iss, jti=jti)
        aud = unverified.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if _norm(audience) not in {_norm(a) for a in audiences if isinstance(a, str)}:
            raise AuthError("aud is not this endpoint", iss=iss, jti=jti)
        now = self.now()
        exp, iat, nbf = unverified.get("exp"), unverified.get("iat"), unverified.get("nbf")
        if not _number(exp) or exp <= now - CLOCK_SKEW_S:
            raise AuthError("expired or no exp", iss=iss, jti=jti)
        if not _number(iat) or iat > now + CLOCK_SKEW_S or exp - iat > MAX_LIFETIME_S:
            raise AuthError("iat missing, in the future, or too long before exp", iss=iss, jti=jti)
        if nbf is not None and (not _number(nbf) or nbf > now + CLOCK_SKEW_S):
            raise AuthError("not valid yet (nbf)", iss=iss, jti=jti)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError(f"algorithm {alg!r} is not accepted", iss=iss, jti=jti)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid", iss=iss, jti=jti)
        jku = header.get("jku")
        try:
            if isinstance(jku, str) and any(jku.startswith(prefix) for prefix in client.jku_allow):
                key = await self.keys.key(jku, kid)
            elif client.jwks is not None:
                key = await self.keys.key(f"inline:{client.iss}", kid, inline=client.jwks)
            else:
                key = await self.keys.key(str(client.jwks_url), kid)
        except AuthError as exc:
            raise AuthError(exc.reason, iss=iss, jti=jti) from exc
        try:
            # The algorithm comes from the allow-list above; a key of the wrong type for it
            # (an EC key named by an RS384 token) fails here like a bad signature.
            valid = _ALGORITHM_IMPLS[alg].verify(signing_input, key.key, signature)
        except Exception as exc:  # cryptography raises several types for a mismatched key
            raise AuthError(f"signature invalid ({type(exc).__name__})", iss=iss, jti=jti) from exc
        if not valid:
            raise AuthError("signature invalid", iss=iss, jti=jti)
        claims = unverified
        if jti is None or not jti:
            raise AuthError("no jti", iss=iss)
        await self.remember_jti(client.iss, jti, datetime.fromtimestamp(exp + CLOCK_SKEW_S, UTC))
        return claims


_ALGORITHM_IMPLS = {name: impl for name, impl in get_default_algorithms().items() if name in ALGORITHMS}


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWS, parsed once."""
    try:
        head, body, sig = token.split(".")
        header, claims = orjson.loads(_b64(head)), orjson.loads(_b64(body))
        signature = _b64(sig)
    except (ValueError, orjson.JSONDecodeError, binascii.Error) as exc:
        raise AuthError("malformed token") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthError("malformed token")
    return header, claims, f"{head}.{body}".encode(), signature


def _secure_url(value: Any) -> bool:
    """https, or plain http to a loopback address (a local test key server)."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _norm(url: str) -> str:
    return url.rstrip("/")
