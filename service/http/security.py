"""Response headers every answer carries (a JSON API: nothing to frame, sniff or cache).

Added by the :class:`service.edge.Edge` layer."""

from __future__ import annotations

HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),  # cards hold patient data
]
