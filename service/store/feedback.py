"""Storing a feedback batch against the card audit, once, and turning snoozes into suppressions.

A batch is all-or-nothing: every entry is checked (the card exists and was issued by this
service, accepted suggestions belong to that card) before anything is written, and the batch
is written in one transaction. The same entry sent twice is stored once: its fingerprint is
unique in the store. A snooze copies the evidence fingerprint and weekly dose of the card it
snoozes, from the audit, so it can hold only while the card would rest on the same evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from cds_hooks.errors import RequestError, UnknownCard
from cds_hooks.feedback import FeedbackBatch, fingerprint
from service.ruleset.model import RuleSet
from service.store.database import CardRecord, FeedbackRecord, SnoozeRecord, Store


def record_feedback(
    store: Store,
    ruleset: RuleSet,
    service_id: str,
    batch: FeedbackBatch,
    now: datetime,
    not_yet_stored: Mapping[str, CardRecord] | None = None,
) -> tuple[int, int, list[SnoozeRecord]]:
    """Validate a batch against the audit and store it; returns (new, duplicates, snoozes).
    ``not_yet_stored``: cards this process issued whose records are still in memory or in the
    audit spool; they count as issued."""
    issued = {**(not_yet_stored or {}), **store.cards_by_uuid(e.card for e in batch.feedback)}
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
                    # The snooze holds while the card would rest on the same evidence (SPEC §6).
                    evidence_fingerprint=card.evidence_fingerprint,
                    weekly_dose=card.weekly_dose,
                )
            )
    new = store.add_feedback(entries, snooze_rows)
    return new, len(entries) - new, snooze_rows
