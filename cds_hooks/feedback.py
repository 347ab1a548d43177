"""CDS Hooks 2.0 feedback, as it arrives on the wire: its models, parsing, and identity.

Lenient about extra fields (clients add their own), strict about what the service stores:
``card``, ``outcome``, ``acceptedSuggestions``, ``overrideReason`` and a time-zoned
``outcomeTimestamp``. :func:`fingerprint` is a hash of an entry's content, so the same entry
sent twice is recognised as one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds_hooks.errors import RequestError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ReasonCoding(_Lenient):
    code: str = Field(min_length=1)
    system: str | None = None
    display: str | None = None


class OverrideReason(_Lenient):
    reason: ReasonCoding | None = None
    userComment: str | None = None


class AcceptedSuggestion(_Lenient):
    id: str = Field(min_length=1)


class FeedbackEntry(_Lenient):
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime


class FeedbackBatch(_Lenient):
    feedback: list[FeedbackEntry] = Field(min_length=1, max_length=1000)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def fingerprint(service_id: str, entry: FeedbackEntry) -> str:
    """Content hash of an entry: the same feedback sent twice has the same fingerprint."""
    reason = entry.overrideReason.reason if entry.overrideReason else None
    canonical = {
        "service": service_id,
        "card": entry.card,
        "outcome": entry.outcome,
        "accepted": sorted(s.id for s in entry.acceptedSuggestions or []),
        "reason": [reason.system, reason.code] if reason else None,
        "comment": entry.overrideReason.userComment if entry.overrideReason else None,
        "at": entry.outcomeTimestamp.astimezone(UTC).isoformat(),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def parse_batch(payload: Any) -> FeedbackBatch:
    if not isinstance(payload, dict):
        raise RequestError("the feedback body must be a JSON object with a feedback array")
    try:
        batch = FeedbackBatch.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(f"invalid feedback: {_describe(exc)}") from exc
    for i, entry in enumerate(batch.feedback):
        if entry.outcomeTimestamp.tzinfo is None:
            raise RequestError(f"invalid feedback: feedback.{i}.outcomeTimestamp needs a time zone")
    return batch
