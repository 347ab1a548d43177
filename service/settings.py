"""Configuration from the environment (``OSTEOGUARD_*``) or a ``.env`` file, with safe defaults.

Bad configuration is a :class:`ConfigurationError` whose message starts with the setting's
variable name (SPEC §1): the ``osteoguard`` command prints it as one line and exits 2.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from cds_hooks.errors import ConfigurationError, TrustedClientsError

PACKAGED_RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
# A CDS Hooks call carries a JWT of a few kB in Authorization; 32 KiB leaves room for proxies'
# headers and is what a request of ours can never need more than.
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
# Hook calls one worker works on at once; beyond it a call is answered 503 at once. Measured
# in docs/speed.md ("Capacity per worker"): it keeps an admitted call's p99 under ~100 ms.
DEFAULT_MAX_IN_FLIGHT = 64
# ... and while the event loop runs this late (the queue ASGI cannot count: service.http.edge).
DEFAULT_MAX_LOOP_LAG_MS = 50.0
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Settings whose value is never echoed in an error message (it may hold a password or a key).
_SECRET = frozenset({"database_url", "patient_hash_key"})


def _origin(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.path in ("", "/")


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
    # Case-insensitive: INFO is info.
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    # fhirServer base URLs (comma-separated) that fallback may call although they are on a
    # loopback or private address: a local sandbox, an on-premise EHR. Link-local: never.
    fhir_private_servers: str = ""
    # A trusted client's JWK Set: at most this many bytes, fetched within this many seconds
    # in all (connect, headers and body; not per read).
    jwks_max_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    jwks_deadline_s: float = Field(default=2.0, gt=0, le=30)
    # Everything one call reads from its FHIR server in fallback (all keys and pages, decoded;
    # cds_hooks.fhir_client.FHIR_MAX_BYTES says why 8 MiB).
    fhir_max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    # The HTTP server (service/http/server.py), per worker: request line and headers of one
    # request; seconds from a request's first byte (or from accept) until its headers are in;
    # seconds from then until its whole body is in; connections held at once.
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, ge=1024, le=1024 * 1024)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    body_timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    # Load shedding: hook calls in flight per worker (service.http.edge).
    max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, ge=1, le=100_000)
    max_loop_lag_ms: float = Field(default=DEFAULT_MAX_LOOP_LAG_MS, ge=1, le=60_000)
    # The card audit's local spool (service.store.spool), where records wait while the
    # database is away: a folder (default: "audit-spool" beside the SQLite file, or in the
    # working directory with PostgreSQL), its bound in bytes, and the longest a card record
    # stays only in memory before it is in the database or fsynced in the spool.
    audit_spool_dir: Path | None = None
    audit_spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024, le=1024**4)
    audit_max_age_ms: int = Field(default=200, ge=20, le=60_000)

    @field_validator("audit_spool_dir")
    @classmethod
    def _spool_dir(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError("exists and is not a folder")
        return value

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not _base_url(value):
            raise ValueError("must be an absolute http(s) URL such as https://osteoguard.example.org")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin and not (_origin(origin) and urlsplit(origin).path == ""):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB")
        return value


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
            "OSTEOGUARD_TRUSTED_CLIENTS is not set, and OSTEOGUARD_AUTH=jwt needs it (the "
            "trusted-clients file; `osteoguard client keygen` makes an entry); "
            "OSTEOGUARD_AUTH=off only for local trials"
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
    return get_settings()


def _base_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query and not parts.fragment


def _variable(field: str) -> str:
    return f"OSTEOGUARD_{field.upper()}"


def configuration_error(exc: ValidationError) -> ConfigurationError:
    """The first problem of a settings ValidationError, as one line naming the variable."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error.get("loc") else "?"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if field in _SECRET or "input" not in error:
        return ConfigurationError(f"{_variable(field)}: {message}")
    return ConfigurationError(f"{_variable(field)}={error['input']!r}: {message}")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad value is a ConfigurationError naming the variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise configuration_error(exc) from None
    if settings.patient_hash_key_file is not None and not settings.patient_hash_key_file.is_file():
        raise ConfigurationError(
            f"OSTEOGUARD_PATIENT_HASH_KEY_FILE={str(settings.patient_hash_key_file)!r}: no such file"
        )
    return settings


def patient_hash_key(settings: Settings) -> bytes | None:
    """The configured patient-hash key, from the environment or a mounted file."""
    if settings.patient_hash_key_file is not None:
        try:
            key = settings.patient_hash_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"OSTEOGUARD_PATIENT_HASH_KEY_FILE={str(settings.patient_hash_key_file)!r}: "
                f"cannot be read ({type(exc).__name__})"
            ) from None
        if not key:
            raise ConfigurationError(
                f"OSTEOGUARD_PATIENT_HASH_KEY_FILE={str(settings.patient_hash_key_file)!r}: the file is empty"
            )
        return key.encode()
    if settings.patient_hash_key:
        return settings.patient_hash_key.encode()
    return None


def audit_spool_dir(settings: Settings) -> Path:
    """Where the audit spool lives: the setting, else beside the SQLite file (where the token
    ledger also lives), else ``audit-spool`` in the working directory (the image's data
    volume, /var/lib/osteoguard)."""
    if settings.audit_spool_dir is not None:
        return settings.audit_spool_dir
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / "audit-spool"
    return Path("audit-spool")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once (override in tests with ``cache_clear``)."""
    return load_settings()
