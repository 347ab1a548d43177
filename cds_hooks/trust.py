"""The trusted-clients file (SPEC §1): which CDS clients may call, and where their keys are.

Each client has an ``iss`` and either an inline ``jwks`` or a ``jwks_url``, plus optional
``jku_allow`` URL prefixes. Every problem is a :class:`TrustedClientsError` that names the
file and the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds_hooks.errors import TrustedClientsError
from cds_hooks.urls import secure_url


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
        if jwks is not None:
            for k, key in enumerate(jwks["keys"]):
                if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
                    raise TrustedClientsError(
                        f"{where}: jwks.keys[{k}] has no kid; a CDS Hooks JWT names its key by kid, "
                        "so a key without one can never verify (`osteoguard client keygen` sets it)"
                    )
        if jwks_url is not None and not secure_url(jwks_url):
            raise TrustedClientsError(
                f"{where}: jwks_url {str(jwks_url)!r} must be an https URL "
                "(plain http only on a loopback host such as 127.0.0.1)"
            )
        allow = entry.get("jku_allow") or []
        if not isinstance(allow, list) or not all(secure_url(a) for a in allow):
            raise TrustedClientsError(f"{where}: jku_allow must be a list of https URL prefixes")
        out[entry["iss"]] = TrustedClient(entry["iss"], jwks, jwks_url, tuple(allow))
    return out
