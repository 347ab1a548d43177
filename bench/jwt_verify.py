"""Cost of verifying one CDS Hooks JWT with a warm key cache (no network, no database).

    .venv/bin/python bench/jwt_verify.py

Prints the median and p99 in microseconds for ES384 (P-384), ES256 (P-256) and RS384 (RSA 2048
and 3072), and ES384 and RS384 with the replay check in the SQLite token ledger (what a hook
call pays with the default store). On this kind of machine the ES384 check alone takes about
0.35-0.7 ms by CPU (OpenSSL has no fast P-384 code path), ES256 and RS384 under 0.1 ms: hence
docs/integrating.md's advice to sign with RS384 or ES256.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds_hooks.jwt import Verifier  # noqa: E402
from cds_hooks.keysets import KeyStore
from cds_hooks.trust import TrustedClient
from service.store.database import Store  # noqa: E402
from service.store.tokens import token_ledger  # noqa: E402

N = 3000
AUD = "https://osteoguard.example.org/cds-services/anastrozole-bone-order-sign"


def jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid}


async def run(alg: str, key: Any, kid: str, ledger: Any = None) -> list[float]:
    client = TrustedClient("https://ehr.example.org", jwks={"keys": [jwk(key, kid)]})

    class NoLedger:
        async def remember(self, iss: str, jti: str, expires: Any) -> bool:
            return True

    async with httpx.AsyncClient() as http:
        verifier = Verifier({client.iss: client}, KeyStore(http), ledger or NoLedger())
        now = int(time.time())
        tokens = [
            "Bearer "
            + jwt.encode(
                {"iss": client.iss, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                key,
                algorithm=alg,
                headers={"kid": kid},
            )
            for _ in range(N + 200)
        ]
        times = []
        for i, token in enumerate(tokens):
            start = time.perf_counter()
            await verifier.verify(token, AUD)
            if i >= 200:  # warm-up
                times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float]) -> None:
    median = statistics.median(times) * 1e6
    p99 = sorted(times)[int(len(times) * 0.99)] * 1e6
    print(f"{label:<34} median {median:7.1f} µs   p99 {p99:7.1f} µs")


def main() -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    report("ES384 signature + claims", asyncio.run(run("ES384", ec_key, "ec", None)))
    p256 = ec.generate_private_key(ec.SECP256R1())
    report("ES256 signature + claims", asyncio.run(run("ES256", p256, "ec256", None)))
    rsa2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    report("RS384 (RSA 2048) signature + claims", asyncio.run(run("RS384", rsa2048, "rsa2048", None)))
    report("RS384 (RSA 3072) signature + claims", asyncio.run(run("RS384", rsa_key, "rsa", None)))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/og.db", b"k")
        store.open()
        ledger = token_ledger(store)  # the SQLite side file the service uses
        report("RS384 + jti replay check (SQLite)", asyncio.run(run("RS384", rsa_key, "rsa", ledger)))
        report("ES384 + jti replay check (SQLite)", asyncio.run(run("ES384", ec_key, "ec", ledger)))
        ledger.close()
        store.close()


if __name__ == "__main__":
    main()
