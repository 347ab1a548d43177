"""Verifying the CDS Hooks JWT that authenticates every call from an EHR ("Trusting CDS Clients").

Checks, in this order: the issuer is a trusted client; ``aud`` is the URL of the endpoint
being called; ``exp``/``iat``/``nbf`` are sane (60 s of clock skew); the algorithm is an
asymmetric one we accept (a string; never ``none``, never HMAC); no ``crit`` header (we
implement no JWS extension, so RFC 7515 §4.1.11 says refuse); the key chosen by ``kid``
verifies the signature — from the ``jku`` URL only when its parsed, normalised form (no
userinfo, dot segments removed) lies under one of the client's ``jku_allow`` prefixes at a
path-segment boundary, and then from that normalised URL; else from the client's ``jwks`` or
``jwks_url``; the ``jti`` was not seen before
(kept in the store until the token expires, so replay is caught across workers and replicas).

Key sets are cached per URL and refetched when a token names an unknown ``kid`` (at most
once a minute per client); a key set that cannot be fetched fails closed. Every failure is
an :class:`AuthError` whose reason goes to the log (with ``iss`` and ``jti``, never the token);
the client only ever sees a bare 401. The scheme ``Bearer`` is matched case-insensitively
(RFC 6750 §2.1, RFC 9110 §11.1).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeGuard

import orjson
from jwt.algorithms import get_default_algorithms

from cds_hooks.errors import AuthError
from cds_hooks.keysets import KeyStore
from cds_hooks.trust import TrustedClient
from cds_hooks.urls import parse_key_url

ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
CLOCK_SKEW_S = 60
MAX_LIFETIME_S = 3600  # a CDS Hooks JWT lives minutes; refuse ones minted for longer


class ReplayLedger(Protocol):
    """Where seen token ids are kept until they expire, shared by every worker and replica."""

    async def remember(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record ``jti`` of ``iss``; False when it was already recorded (a replay)."""
        ...


class Verifier:
    """Verifies CDS Hooks bearer JWTs against the trusted clients."""

    def __init__(
        self,
        clients: dict[str, TrustedClient],
        keys: KeyStore,
        ledger: ReplayLedger,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        self.keys = keys
        self.ledger = ledger
        self.now = now

    async def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims of the request's bearer token, or AuthError."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("no bearer token")
        header, unverified, signing_input, signature = _split(token)
        iss = unverified.get("iss") if isinstance(unverified.get("iss"), str) else None
        jti = unverified.get("jti") if isinstance(unverified.get("jti"), str) else None
        client = self.clients.get(iss or "")
        if client is None:
            raise AuthError("untrusted iss", iss=iss, jti=jti)
        aud = unverified.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if _norm(audience) not in {_norm(a) for a in audiences if isinstance(a, str)}:
            # The operator sees both URLs: localhost is not 127.0.0.1, and each endpoint (a
            # service, its feedback, discovery) is an audience of its own.
            raise AuthError(
                f"aud is not this endpoint: expected {audience!r}, the token has {_shown(aud)}"
                " (behind a proxy, set OSTEOGUARD_PUBLIC_URL)",
                iss=iss,
                jti=jti,
            )
        now = self.now()
        exp, iat, nbf = unverified.get("exp"), unverified.get("iat"), unverified.get("nbf")
        if not _number(exp) or exp <= now - CLOCK_SKEW_S:
            raise AuthError("expired or no exp", iss=iss, jti=jti)
        if not _number(iat) or iat > now + CLOCK_SKEW_S or exp - iat > MAX_LIFETIME_S:
            raise AuthError("iat missing, in the future, or too long before exp", iss=iss, jti=jti)
        if nbf is not None and (not _number(nbf) or nbf > now + CLOCK_SKEW_S):
            raise AuthError("not valid yet (nbf)", iss=iss, jti=jti)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise AuthError("algorithm is not accepted", iss=iss, jti=jti)
        if "crit" in header:
            raise AuthError("crit header names extensions we do not implement", iss=iss, jti=jti)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid", iss=iss, jti=jti)
        jku = parse_key_url(header.get("jku")) if client.jku_allow and "jku" in header else None
        try:
            if jku is not None and any(jku.under(prefix) for prefix in client.jku_allow):
                key = await self.keys.key(jku.url, kid)
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
        if not await self.ledger.remember(client.iss, jti, datetime.fromtimestamp(exp + CLOCK_SKEW_S, UTC)):
            raise AuthError("replayed jti", iss=iss, jti=jti)
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


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(aud: Any) -> str:
    """The token's aud for the log: bounded, so a client cannot flood a log line."""
    return repr(aud)[:300] if aud is not None else "none"


def _norm(url: str) -> str:
    return url.rstrip("/")
