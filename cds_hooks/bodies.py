"""Reading an HTTP response body within a byte budget, counted as it streams.

The budget is counted in decoded bytes (a gzip bomb counts in full) and checked per chunk, so
an oversized body is cut off after at most one chunk past the budget, never read whole. A
declared ``content-length`` over what is left is refused before any of the body is read.
One budget may be shared by several responses (every page of every FHIR query of one call).
"""

from __future__ import annotations

import httpx


class TooLarge(Exception):
    """The body would take more than what is left of its budget."""


class ByteBudget:
    """A number of bytes that responses may still take."""

    __slots__ = ("limit", "remaining")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.remaining = limit

    def spend_all(self) -> None:
        """Leave nothing: every other reader sharing this budget stops at its next chunk."""
        self.remaining = min(self.remaining, -1)

    def take(self, size: int) -> None:
        self.remaining -= size
        if self.remaining < 0:
            raise TooLarge(f"over {self.limit} bytes")


async def read_within(response: httpx.Response, budget: ByteBudget) -> bytes:
    """The body of a streamed ``response``; :class:`TooLarge` once it would exceed ``budget``.

    The caller's ``client.stream(...)`` block closes the response (and drops its connection)
    when this raises, so the rest is never received.
    """
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > budget.remaining:
        raise TooLarge(f"content-length {declared} over the {budget.limit}-byte limit")
    chunks: list[bytes] = []
    async for chunk in response.aiter_bytes():
        budget.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
