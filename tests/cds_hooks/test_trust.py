"""The trusted-clients file's per-client settings and defaults (SPEC §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_hooks.errors import TrustedClientsError
from cds_hooks.trust import DEFAULT_SETTINGS, ClientSettings, load_trust_file, unknown_rule_ids

JWKS = {"keys": [{"kty": "EC", "crv": "P-384", "x": "x", "y": "y", "kid": "k"}]}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "clients.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def client(iss: str = "https://a.example", **settings: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"iss": iss, "jwks": JWKS}
    if settings:
        entry["settings"] = settings
    return entry


def test_without_settings_a_client_is_shown_everything() -> None:
    assert DEFAULT_SETTINGS == ClientSettings(silent=False, rules=(), repeat_alerts="show")


def test_a_clients_settings_are_read(tmp_path: Path) -> None:
    trust = load_trust_file(
        write(
            tmp_path, {"clients": [client(silent=True, rules={"vitamin-d": False}, repeat_alerts="suppress")]}
        )
    )
    settings = trust.settings_for("https://a.example")
    assert settings.silent and settings.repeat_alerts == "suppress"
    assert settings.rules_off == {"vitamin-d"}


def test_defaults_apply_to_every_client_and_to_unknown_callers(tmp_path: Path) -> None:
    trust = load_trust_file(
        write(tmp_path, {"defaults": {"repeat_alerts": "suppress"}, "clients": [client()]})
    )
    assert trust.settings_for("https://a.example").repeat_alerts == "suppress"
    assert trust.settings_for(None).repeat_alerts == "suppress"  # auth off


def test_a_clients_own_setting_wins_over_the_default(tmp_path: Path) -> None:
    data = {"defaults": {"silent": True}, "clients": [client(silent=False), client("https://b.example")]}
    trust = load_trust_file(write(tmp_path, data))
    assert not trust.settings_for("https://a.example").silent
    assert trust.settings_for("https://b.example").silent


def test_rule_switches_merge_with_the_defaults(tmp_path: Path) -> None:
    data = {
        "defaults": {"rules": {"vitamin-d": False, "bmd-decline": False}},
        "clients": [client(rules={"vitamin-d": True})],
    }
    settings = load_trust_file(write(tmp_path, data)).settings_for("https://a.example")
    assert settings.rules_off == {"bmd-decline"}


def test_a_file_of_defaults_only_is_enough_with_auth_off(tmp_path: Path) -> None:
    trust = load_trust_file(write(tmp_path, {"defaults": {"silent": True}}), require_clients=False)
    assert trust.settings_for(None).silent and trust.clients == {}


def test_a_file_of_defaults_only_is_refused_with_auth_on(tmp_path: Path) -> None:
    with pytest.raises(TrustedClientsError, match="clients"):
        load_trust_file(write(tmp_path, {"defaults": {"silent": True}}))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"clients": [client(slient=True)]}, "unknown setting 'slient'"),
        ({"defaults": {"mute": True}, "clients": [client()]}, "defaults: unknown setting 'mute'"),
        ({"clients": [client(silent="yes")]}, "silent must be true or false"),
        ({"clients": [client(repeat_alerts="hide")]}, "repeat_alerts must be one of show, suppress"),
        ({"clients": [client(rules=["vitamin-d"])]}, "rules must map rule ids to true or false"),
        ({"clients": [client(rules={"vitamin-d": "off"})]}, "rules must map rule ids to true or false"),
        ({"clients": [{**client(), "silent": True}]}, "unknown key 'silent' (settings go under `settings:`)"),
        ({"default": {}, "clients": [client()]}, "unknown key 'default'"),
    ],
)
def test_a_bad_setting_is_refused_with_one_clear_line(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(TrustedClientsError) as caught:
        load_trust_file(write(tmp_path, data))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_rule_ids_are_found_in_defaults_and_clients(tmp_path: Path) -> None:
    data = {
        "defaults": {"rules": {"vitamin-dee": False}},
        "clients": [client(rules={"nope": True, "vitamin-d": False})],
    }
    trust = load_trust_file(write(tmp_path, data))
    assert unknown_rule_ids(trust, {"vitamin-d"}) == ["nope", "vitamin-dee"]
