"""The trusted-clients file (SPEC §1, §8): which CDS clients may call, where their keys are,
and the settings each one is served with.

Each client has an ``iss`` and either an inline ``jwks`` or a ``jwks_url``, plus optional
``jku_allow`` URL prefixes and optional ``settings:``. A top-level ``defaults:`` gives the
settings of every client (a client's own ``settings:`` win, key by key; ``rules`` switches
merge) and of every call when auth is off. Settings::

    silent: false           # true: evaluate and audit, answer {"cards": []}
    rules: {vitamin-d: false}  # rule id -> on/off
    repeat_alerts: show     # show | suppress

Every problem is a :class:`TrustedClientsError` that names the file and the entry. Rule ids
are checked against the rule set by the service (:func:`unknown_rule_ids`): this protocol
layer does not know the rules.

Each ``jku_allow`` prefix is parsed and normalised here, once (:func:`cds_hooks.urls.parse_key_url`):
one with userinfo, a query, a fragment or anything a URL parser could read two ways is refused
with the file, never accepted silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds_hooks.errors import TrustedClientsError
from cds_hooks.urls import KeyUrl, parse_key_url, secure_url

REPEAT_ALERTS = ("show", "suppress")
SETTING_KEYS = ("silent", "rules", "repeat_alerts")
CLIENT_KEYS = ("iss", "jwks", "jwks_url", "jku_allow", "settings")
TOP_KEYS = ("clients", "defaults")


@dataclass(frozen=True)
class ClientSettings:
    """How one client's calls are served (SPEC §8)."""

    silent: bool = False
    rules: tuple[tuple[str, bool], ...] = ()  # rule id -> on/off, as written
    repeat_alerts: str = "show"

    @property
    def rules_off(self) -> frozenset[str]:
        return frozenset(rule for rule, on in self.rules if not on)

    def over(self, base: ClientSettings, given: frozenset[str]) -> ClientSettings:
        """These settings on top of ``base``: the keys in ``given`` win, rule switches merge."""
        rules = dict(base.rules) | dict(self.rules)
        return ClientSettings(
            silent=self.silent if "silent" in given else base.silent,
            rules=tuple(sorted(rules.items())),
            repeat_alerts=self.repeat_alerts if "repeat_alerts" in given else base.repeat_alerts,
        )


DEFAULT_SETTINGS = ClientSettings()


@dataclass(frozen=True)
class TrustedClient:
    iss: str
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    jku_allow: tuple[KeyUrl, ...] = ()
    settings: ClientSettings = DEFAULT_SETTINGS  # defaults: already applied


@dataclass(frozen=True)
class TrustFile:
    """The whole file: the clients (by iss) and the defaults (auth-off calls get these)."""

    clients: dict[str, TrustedClient]
    defaults: ClientSettings = DEFAULT_SETTINGS

    def settings_for(self, iss: str | None) -> ClientSettings:
        client = self.clients.get(iss or "")
        return client.settings if client is not None else self.defaults

    def rule_ids(self) -> set[str]:
        """Every rule id the file names, for the service to check against its rule set."""
        named = {rule for rule, _ in self.defaults.rules}
        for client in self.clients.values():
            named |= {rule for rule, _ in client.settings.rules}
        return named


def _settings(raw: Any, where: str) -> tuple[ClientSettings, frozenset[str]]:
    if raw is None:
        return DEFAULT_SETTINGS, frozenset()
    if not isinstance(raw, dict):
        raise TrustedClientsError(f"{where} must be a mapping of {', '.join(SETTING_KEYS)}")
    unknown = sorted(str(k) for k in raw if k not in SETTING_KEYS)
    if unknown:
        raise TrustedClientsError(
            f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(SETTING_KEYS)})"
        )
    silent = raw.get("silent", False)
    if not isinstance(silent, bool):
        raise TrustedClientsError(f"{where}.silent must be true or false")
    repeat = raw.get("repeat_alerts", "show")
    if repeat not in REPEAT_ALERTS:
        raise TrustedClientsError(f"{where}.repeat_alerts must be one of {', '.join(REPEAT_ALERTS)}")
    rules = raw.get("rules") or {}
    if not isinstance(rules, dict) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in rules.items()
    ):
        raise TrustedClientsError(f"{where}.rules must map rule ids to true or false")
    return ClientSettings(silent, tuple(sorted(rules.items())), repeat), frozenset(raw)


def unknown_rule_ids(trust: TrustFile, known: set[str] | frozenset[str]) -> list[str]:
    """The rule ids the file switches that the rule set does not have, sorted."""
    return sorted(trust.rule_ids() - set(known))


def load_trust_file(path: Path, *, require_clients: bool = True) -> TrustFile:
    """Read the trusted-clients YAML file (SPEC §1, §8).

    With auth off, ``require_clients=False``: a file holding only ``defaults:`` is enough.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TrustedClientsError(f"cannot read the trusted-clients file {path}: {exc}") from exc
    if isinstance(data, dict):
        unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
        if unknown:
            raise TrustedClientsError(f"{path}: unknown key {unknown[0]!r} (known: clients, defaults)")
    defaults, _ = _settings(data.get("defaults") if isinstance(data, dict) else None, f"{path}: defaults")
    clients = data.get("clients") if isinstance(data, dict) else None
    if not require_clients and clients is None and isinstance(data, dict):
        return TrustFile({}, defaults)
    if not isinstance(clients, list) or not clients:
        raise TrustedClientsError(f"{path}: expected `clients:` with at least one entry")
    out: dict[str, TrustedClient] = {}
    for i, entry in enumerate(clients):
        where = f"{path}: clients[{i}]"
        if isinstance(entry, dict):
            unknown = sorted(str(k) for k in entry if k not in CLIENT_KEYS)
            if unknown:
                raise TrustedClientsError(
                    f"{where}: unknown key {unknown[0]!r} (settings go under `settings:`)"
                )
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
        if not isinstance(allow, list):
            raise TrustedClientsError(f"{where}: jku_allow must be a list of https URL prefixes")
        prefixes: list[KeyUrl] = []
        for j, raw in enumerate(allow):
            prefix = parse_key_url(raw)
            if prefix is None:
                raise TrustedClientsError(
                    f"{where}: jku_allow[{j}] is not a plain https URL prefix "
                    "(no userinfo, query, fragment, encoded dots or slashes)"
                )
            prefixes.append(prefix)
        own, given = _settings(entry.get("settings"), f"{where}.settings")
        out[entry["iss"]] = TrustedClient(
            entry["iss"], jwks, jwks_url, tuple(prefixes), own.over(defaults, given)
        )
    return TrustFile(out, defaults)


def load_trusted_clients(path: Path) -> dict[str, TrustedClient]:
    """The clients of the trusted-clients file (SPEC §1), by iss."""
    return load_trust_file(path).clients
