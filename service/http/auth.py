"""Authentication as a router dependency: every CDS endpoint verifies the caller's JWT first.

``aud`` must be the URL of the endpoint being called: ``OSTEOGUARD_PUBLIC_URL`` plus the path.
The Host header is never the audience (a token minted for another CDS service, replayed with
that service's Host, would pass); start-up refuses ``jwt`` mode without a public URL
(:func:`service.settings.check_serving`). With ``OSTEOGUARD_AUTH=off`` there is no verifier
and the dependency does nothing.
"""

from __future__ import annotations

from fastapi import Request


async def authenticate(request: Request) -> None:
    """Verify the CDS Hooks JWT when auth is on; ``aud`` must be this endpoint's URL.

    The verified ``iss`` is kept on ``request.state.client_iss`` (None with auth off): the
    client's settings (SPEC §8) are looked up by it.
    """
    request.state.client_iss = None
    verifier = request.app.state.verifier
    if verifier is None:
        return
    public_url: str = request.app.state.settings.public_url  # required in jwt mode
    audience = public_url.rstrip("/") + request.url.path
    claims = await verifier.verify(request.headers.get("authorization"), audience)
    iss = claims.get("iss")
    request.state.client_iss = iss if isinstance(iss, str) else None
