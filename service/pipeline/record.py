"""The pipeline's last step: drop snoozed cards, and queue the rest for the card audit.

The audit is the service's memory of what it told whom: feedback is checked against it, and
snoozes are recorded from it. Nothing here waits for the database: the snooze cache is in
memory and the audit writer is a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cds_hooks.models import Card
from service.pipeline.services import ServiceDefinition
from service.store.audit import AuditWriter
from service.store.database import CardRecord, Store
from service.store.snoozes import SnoozeCache

MAX_HOOK_INSTANCE = 200  # stored as given, up to this length


@dataclass
class Recorder:
    """The store-facing end of the pipeline (absent offline: ``evaluate``, warm-up, bench)."""

    store: Store
    now: Callable[[], datetime]
    audit: AuditWriter | None = None
    snoozes: SnoozeCache | None = None

    def record(
        self,
        cards: list[Card],
        service: ServiceDefinition,
        hook_instance: str,
        patient_id: str,
        ruleset_version: str,
    ) -> list[Card]:
        """The cards to show: snoozed ones dropped; each shown card queued for the audit."""
        now = self.now()
        patient_key = self.store.patient_key(patient_id)
        snoozed = self.snoozes.snoozed(patient_key) if self.snoozes is not None else set()
        kept = [c for c in cards if c.source.topic is None or c.source.topic.code not in snoozed]
        if self.audit is not None:
            self.audit.submit(
                [
                    CardRecord(
                        uuid=str(card.uuid),
                        rule_id=str(card.source.topic.code if card.source.topic else ""),
                        service_id=service.id,
                        hook=service.hook,
                        hook_instance=hook_instance[:MAX_HOOK_INSTANCE],
                        ruleset_version=ruleset_version,
                        patient_key=patient_key,
                        suggestion_uuids=tuple(str(s.uuid) for s in card.suggestions),
                        issued_at=now,
                    )
                    for card in kept
                ]
            )
        return kept
