"""URL rules shared by the protocol layer: what counts as loopback, and what is safe to call.

One meaning of "loopback" everywhere: the host name ``localhost`` or an IP literal in
127.0.0.0/8 or ``::1``. Plain ``http`` is accepted only there (a local test server); a bearer
token or a key request never crosses a network in clear text.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ``::1``)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secure_url(value: Any) -> bool:
    """An absolute https URL, or plain http to a loopback host."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and is_loopback(parts.hostname)
