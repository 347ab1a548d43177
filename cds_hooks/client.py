"""The client side of "Trusting CDS Clients", for integrators and local trials.

``keygen`` makes an ES384 key pair (P-384), writes the private key as PEM (mode 0600, the
issuer on a comment line before it) and gives the trusted-clients entry with the public key
inline; its ``kid`` is the key's RFC 7638 thumbprint. ``sign_token`` signs a CDS Hooks JWT
with it: ``iss``, ``aud``, ``exp``, ``iat``, ``jti`` in the claims, ``kid`` in the header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_hooks.errors import ConfigurationError
from cds_hooks.urls import secure_url

ALGORITHM = "ES384"
_ISS_LINE = "# iss: "


@dataclass(frozen=True)
class ClientKey:
    iss: str
    kid: str
    public_jwk: dict[str, Any]

    def trusted_clients_yaml(self) -> str:
        """A trusted-clients file holding this one client, with the public key inline."""
        entry = {"clients": [{"iss": self.iss, "jwks": {"keys": [self.public_jwk]}}]}
        return yaml.safe_dump(entry, sort_keys=False)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(required, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _public(private: ec.EllipticCurvePrivateKey, iss: str) -> ClientKey:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = _thumbprint(jwk)
    return ClientKey(iss, kid, {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"})


def make_key(iss: str, out: Path) -> ClientKey:
    """Write a new private key to ``out`` (never over an existing file); its public side."""
    if not secure_url(iss):
        raise ConfigurationError(
            f"--iss {iss}: an https URL (http only on loopback), e.g. https://ehr.example.org"
        )
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"--out {out}: the file exists; choose another --out") from None
    except OSError as exc:
        raise ConfigurationError(f"--out {out}: cannot write ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as file:
        file.write(f"{_ISS_LINE}{iss}\n".encode() + pem)
    return _public(private, iss)


def load_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, ClientKey]:
    """The private key ``make_key`` wrote, and its public side."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"--key {path}: cannot read ({exc.strerror})") from None
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if not first.startswith(_ISS_LINE):
        raise ConfigurationError(f"--key {path}: not a key from `osteoguard client keygen` (no iss line)")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(f"--key {path}: not a PEM private key") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp384r1":
        raise ConfigurationError(f"--key {path}: not a P-384 key (ES384)")
    return private, _public(private, first[len(_ISS_LINE) :].strip())


def sign_token(path: Path, aud: str, lifetime_s: int = 300, now: float | None = None) -> str:
    """A CDS Hooks JWT for ``aud`` (the exact URL of the endpoint called)."""
    if not 0 < lifetime_s <= 3600:
        raise ConfigurationError(f"--lifetime {lifetime_s}: 1 to 3600 seconds (the service refuses longer)")
    private, public = load_key(path)
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": public.iss,
        "aud": aud,
        "exp": issued + lifetime_s,
        "iat": issued,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": public.kid, "typ": "JWT"})
