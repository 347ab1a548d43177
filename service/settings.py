"""Configuration from the environment (``OSTEOGUARD_*``) or a ``.env`` file, with safe defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_hooks.errors import ConfigurationError, TrustedClientsError

PACKAGED_RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OSTEOGUARD_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    # jwt: every CDS call needs a valid CDS Hooks JWT from a trusted client.
    auth: Literal["jwt", "off"] = "jwt"
    trusted_clients: Path | None = None
    public_url: str | None = None
    # Browser-based CDS clients allowed by CORS, comma-separated (none by default).
    cors_origins: str = ""
    database_url: str = "sqlite:///./osteoguard.db"
    rules_dir: Path = PACKAGED_RULES_DIR
    fhir_timeout_s: float = Field(default=3.0, gt=0, le=60)
    # Key for hashing patient ids in the store (hex or text), or a file holding it. Without
    # either, a random key is generated and kept in the database (fine for one database).
    patient_hash_key: str | None = None
    patient_hash_key_file: Path | None = None
    # How often each replica reads snoozes recorded by other replicas (its own apply at once).
    snooze_refresh_s: float = Field(default=5.0, gt=0, le=3600)
    # How often the rules folder is checked for a changed rule set (0: never reload).
    rules_reload_s: float = Field(default=10.0, ge=0, le=3600)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    # fhirServer base URLs (comma-separated) that fallback may call although they are on a
    # loopback or private address: a local sandbox, an on-premise EHR. Link-local: never.
    fhir_private_servers: str = ""
    # A trusted client's JWK Set: at most this many bytes, fetched within this many seconds
    # in all (connect, headers and body; not per read).
    jwks_max_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    jwks_deadline_s: float = Field(default=2.0, gt=0, le=30)

    @field_validator("fhir_private_servers")
    @classmethod
    def _base_urls(cls, value: str) -> str:
        for url in filter(None, (u.strip() for u in value.split(","))):
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"{url[:200]!r} is not an absolute http(s) base URL")
        return value

    @property
    def fhir_private_server_set(self) -> frozenset[str]:
        """The listed base URLs, as fallback compares them (no trailing "/")."""
        return frozenset(u.strip().rstrip("/") for u in self.fhir_private_servers.split(",") if u.strip())


def check_serving(settings: Settings) -> None:
    """Refuse, with one :class:`ConfigurationError` line, settings the service must not run with.

    In ``jwt`` mode the audience is configured, never taken from the request: with the Host
    header as the audience, a token minted for another CDS service is accepted when replayed
    with that service's Host (docs/security.md).
    """
    if settings.auth != "jwt":
        return
    if settings.trusted_clients is None:
        raise TrustedClientsError(
            "OSTEOGUARD_AUTH=jwt needs OSTEOGUARD_TRUSTED_CLIENTS (the trusted-clients file); "
            "set OSTEOGUARD_AUTH=off only for local testing"
        )
    if not settings.public_url:
        raise ConfigurationError(
            "OSTEOGUARD_AUTH=jwt needs OSTEOGUARD_PUBLIC_URL (the external base URL EHRs call, "
            "e.g. https://osteoguard.example.org): it is the audience every token must name"
        )
    parts = urlsplit(settings.public_url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(
            f"OSTEOGUARD_PUBLIC_URL must be an absolute http(s) base URL, not {settings.public_url[:200]!r}"
        )


def settings_or_exit_line() -> Settings:
    """The settings, or a ConfigurationError whose message is one line naming the bad value."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "OSTEOGUARD_" + "_".join(str(part) for part in first["loc"]).upper()
        raise ConfigurationError(f"{name}: {first['msg']}") from exc


def patient_hash_key(settings: Settings) -> bytes | None:
    """The configured patient-hash key, from the environment or a mounted file."""
    if settings.patient_hash_key_file is not None:
        return settings.patient_hash_key_file.read_text(encoding="utf-8").strip().encode()
    if settings.patient_hash_key:
        return settings.patient_hash_key.encode()
    return None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once (override in tests with ``cache_clear``)."""
    return Settings()
