"""One meaning of loopback, and which URLs may carry a token or fetch a key."""

from __future__ import annotations

import pytest

from cds_hooks.urls import is_loopback, secure_url


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["", None, "10.0.0.1", "169.254.169.254", "localhost.example.org", "0.0.0.0"]
)
def test_hosts_that_are_not_loopback(host: str | None) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://ehr.example.org/jwks", True),
        ("http://127.0.0.1:8080/jwks", True),  # a local test key server
        ("http://[::1]/jwks", True),
        ("http://localhost/jwks", True),
        ("http://ehr.example.org/jwks", False),  # a token or key never crosses a network in clear
        ("ftp://ehr.example.org/jwks", False),
        ("https:///no-host", False),
        (42, False),
    ],
)
def test_secure_urls(url: object, ok: bool) -> None:
    assert secure_url(url) is ok
