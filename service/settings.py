"""Configuration from the environment (``OSTEOGUARD_*``) or a ``.env`` file, with safe defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
