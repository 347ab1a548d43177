"""Configuration: every setting's bad value is one line naming the variable (SPEC §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigurationError
from service.settings import audit_spool_dir, get_settings, load_settings, patient_hash_key


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    get_settings.cache_clear()


def refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith(variable) and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OSTEOGUARD_AUTH", "token"),
        ("OSTEOGUARD_LOG_LEVEL", "loud"),
        ("OSTEOGUARD_FHIR_TIMEOUT_S", "0"),
        ("OSTEOGUARD_FHIR_TIMEOUT_S", "soon"),
        ("OSTEOGUARD_SNOOZE_REFRESH_S", "-1"),
        ("OSTEOGUARD_RULES_RELOAD_S", "7200"),
        ("OSTEOGUARD_MAX_BODY_BYTES", "0"),
        ("OSTEOGUARD_MAX_IN_FLIGHT", "0"),
        ("OSTEOGUARD_MAX_IN_FLIGHT", "many"),
        ("OSTEOGUARD_MAX_LOOP_LAG_MS", "0"),
        ("OSTEOGUARD_PUBLIC_URL", "osteoguard.example.org"),
        ("OSTEOGUARD_PUBLIC_URL", "https://osteoguard.example.org/?x=1"),
        ("OSTEOGUARD_CORS_ORIGINS", "https://ehr.example.org/app"),
        ("OSTEOGUARD_CORS_ORIGINS", "ehr.example.org"),
        ("OSTEOGUARD_DATABASE_URL", "mysql://u:p@db/x"),
        ("OSTEOGUARD_PATIENT_HASH_KEY_FILE", "/no/such/key"),
        ("OSTEOGUARD_AUDIT_SPOOL_MAX_BYTES", "1000"),
        ("OSTEOGUARD_AUDIT_SPOOL_MAX_BYTES", "lots"),
        ("OSTEOGUARD_AUDIT_MAX_AGE_MS", "0"),
        ("OSTEOGUARD_AUDIT_MAX_AGE_MS", "120000"),
        ("OSTEOGUARD_AUDIT_SPOOL_DIR", "/etc/hostname"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    refused(monkeypatch, variable, value)


def test_an_unknown_auth_mode_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "'jwt' or 'off'" in refused(monkeypatch, "OSTEOGUARD_AUTH", "token")


def test_log_levels_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTEOGUARD_LOG_LEVEL", "INFO")
    assert load_settings().log_level == "info"


def test_a_database_password_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "s3cret" not in refused(monkeypatch, "OSTEOGUARD_DATABASE_URL", "mysql://u:s3cret@db/x")


def test_an_empty_patient_hash_key_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="^OSTEOGUARD_PATIENT_HASH_KEY_FILE=.*empty"):
        patient_hash_key(load_settings(patient_hash_key_file=empty))


def test_good_values_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTEOGUARD_PUBLIC_URL", "https://osteoguard.example.org/base")
    monkeypatch.setenv("OSTEOGUARD_CORS_ORIGINS", "https://ehr.example.org, http://127.0.0.1:3000")
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", "postgresql://u:p@db/x")
    settings = load_settings()
    assert settings.public_url == "https://osteoguard.example.org/base"


@pytest.mark.parametrize(
    ("database_url", "spool"),
    [
        ("sqlite:////var/lib/osteoguard/osteoguard.db", "/var/lib/osteoguard/audit-spool"),
        ("sqlite:///./og.db", "audit-spool"),
        ("postgresql://u:p@db/osteoguard", "audit-spool"),
    ],
)
def test_the_audit_spool_defaults_to_beside_the_sqlite_file_or_the_working_directory(
    database_url: str, spool: str
) -> None:
    assert audit_spool_dir(load_settings(database_url=database_url)) == Path(spool)
    assert audit_spool_dir(load_settings(audit_spool_dir="/data/spool")) == Path("/data/spool")
