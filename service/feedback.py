"""CDS Hooks 2.0 feedback: validating it, storing it once, and turning snoozes into suppressions.

A batch is all-or-nothing: every entry is checked (shape, the card exists and was issued by
this service, accepted suggestions belong to that card) before anything is written, and the
batch is written in one transaction. The same entry sent twice is stored once: its
fingerprint (a hash of its content) is unique in the store.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import OsteoguardError, RequestError
from service.ruleset import RuleSet
from service.store import FeedbackRecord, SnoozeRecord, Store


class UnknownCard(OsteoguardError):
    """Feedback names a card this service never issued."""

    status_code = 404
    issue_code = "not-found"
    error_code = "OG-404-CARD"


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


def record_feedback(
    store: Store, ruleset: RuleSet, service_id: str, batch: FeedbackBatch, now: datetime
) -> tuple[int, int, list[SnoozeRecord]]:
    """Validate a batch against the audit and store it; returns (new, duplicates, snoozes)."""
    issued = store.cards_by_uuid(e.card for e in batch.feedback)
    snooze = next(r for r in ruleset.override_reasons if r.snooze)
    entries: list[FeedbackRecord] = []
    snooze_rows: list[SnoozeRecord] = []
    for i, entry in enumerate(batch.feedback):
        card = issued.get(entry.card)
        if card is None or card.service_id != service_id:
            raise UnknownCard(f"feedback.{i}.card: {entry.card} is not a card this service issued")
        accepted = [s.id for s in entry.acceptedSuggestions or []]
        if entry.outcome == "accepted":
            if not accepted:
                raise RequestError(
                    f"invalid feedback: feedback.{i}.acceptedSuggestions is required when accepted"
                )
            strangers = [s for s in accepted if s not in card.suggestion_uuids]
            if strangers:
                raise RequestError(
                    f"invalid feedback: feedback.{i}.acceptedSuggestions: {strangers[0]} is not a suggestion "
                    "of that card"
                )
        reason = entry.overrideReason.reason if entry.overrideReason else None
        key = fingerprint(service_id, entry)
        entries.append(
            FeedbackRecord(
                fingerprint=key,
                card_uuid=card.uuid,
                service_id=service_id,
                outcome=entry.outcome,
                accepted_suggestions=tuple(accepted),
                override_system=reason.system if reason else None,
                override_code=reason.code if reason else None,
                override_display=reason.display if reason else None,
                user_comment=entry.overrideReason.userComment if entry.overrideReason else None,
                outcome_at=entry.outcomeTimestamp,
                received_at=now,
            )
        )
        is_snooze = (
            reason is not None
            and reason.code == snooze.code
            and reason.system in (None, ruleset.override_system)
        )
        if entry.outcome == "overridden" and is_snooze:
            snooze_rows.append(
                SnoozeRecord(
                    patient_key=card.patient_key,
                    rule_id=card.rule_id,
                    until=now + timedelta(days=ruleset.snooze_days),
                    feedback_fingerprint=key,
                    created_at=now,
                )
            )
    new = store.add_feedback(entries, snooze_rows)
    return new, len(entries) - new, snooze_rows
