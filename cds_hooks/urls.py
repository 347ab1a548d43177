"""URL rules shared by the protocol layer: what counts as loopback, and what is safe to call.

One meaning of "loopback" everywhere: the host name ``localhost`` or an IP literal in
127.0.0.0/8 or ``::1``. Plain ``http`` is accepted only there (a local test server); a bearer
token or a key request never crosses a network in clear text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class KeyUrl:
    """An https (or loopback http) URL taken apart and normalised, for ``jku`` checks.

    Host lower-cased, the scheme's default port filled in, the path's dot segments
    removed; ``segments`` is the path split at ``/`` (the last one empty after a trailing
    slash). Built only by :func:`parse_key_url`.
    """

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    @property
    def url(self) -> str:
        """The normalised URL: the one checked is the one fetched."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}/" + "/".join(self.segments)

    def under(self, prefix: KeyUrl) -> bool:
        """True when this URL is ``prefix`` or below it, at a path-segment boundary."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        # A prefix ending in "/" has an empty last segment: it stands for "anything below".
        if prefix.segments[-1] == "":
            wanted = prefix.segments[:-1]
            return len(self.segments) > len(wanted) and self.segments[: len(wanted)] == wanted
        return self.segments[: len(prefix.segments)] == prefix.segments


# Characters a key URL may hold; anything else (backslash, "@", spaces, controls, non-ASCII)
# is read differently by different URL parsers, so it is refused rather than interpreted.
_KEY_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/\[\]%!$&'()*+,;=]+")
# Percent-encoded ".", "/" and "\" would let a server decode a dot segment we never saw.
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_DEFAULT_PORTS = {"https": 443, "http": 80}


def parse_key_url(value: Any) -> KeyUrl | None:
    """``value`` as a :class:`KeyUrl`, or None when it is not a safe, plain key URL.

    Refused: not a string, not https (plain http only to a loopback host), userinfo, a query
    or fragment, characters outside the URL set, percent-encoded dots or slashes, a bad port.
    """
    if not isinstance(value, str) or not _KEY_URL_CHARS.fullmatch(value):
        return None
    if _ENCODED_SEPARATOR.search(value) or "?" in value or "#" in value:
        return None
    parts = urlsplit(value)
    if "@" in parts.netloc or not secure_url(value):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    scheme = parts.scheme
    return KeyUrl(scheme, host, port or _DEFAULT_PORTS[scheme], _remove_dot_segments(parts.path))


def _remove_dot_segments(path: str) -> tuple[str, ...]:
    """RFC 3986 §5.2.4 on a path split at "/": ``.`` dropped, ``..`` pops (never above root)."""
    out: list[str] = []
    raw = path.split("/")[1:] if path.startswith("/") else path.split("/")
    for i, segment in enumerate(raw):
        last = i == len(raw) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return tuple(out) or ("",)
