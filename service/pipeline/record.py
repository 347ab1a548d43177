"""The pipeline's last step: drop snoozed cards, and queue the rest for the card audit.

The audit is the service's memory of what it told whom: feedback is checked against it, and
snoozes are recorded from it, with what each card rested on (its evidence fingerprint and the
weekly dose of the draft it acts on) so that a snooze holds only while that stays the same.
Nothing here waits for the database: the snooze cache is in memory and the audit writer is a
queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_hooks.models import Card
from service.cards.fingerprint import acted_on_dose, evidence_fingerprint
from service.pipeline.services import ServiceDefinition
from service.ruleset.schema import Firing
from service.store.audit import AuditWriter
from service.store.database import CardRecord, Store
from service.store.snoozes import SnoozeCache

MAX_HOOK_INSTANCE = 200  # stored as given, up to this length


@dataclass(frozen=True)
class Issued:
    """A card with what it rests on; the CDS Hooks wire object carries no internal fields."""

    card: Card
    rule_id: str
    evidence_fingerprint: str
    weekly_dose: float | None  # mg a week of the anastrozole draft a dose card acts on


def issued(
    cards: Sequence[Card], firings: Sequence[Firing], drafts: Sequence[Mapping[str, Any]]
) -> list[Issued]:
    """Each card paired with the firing it was built from: its rule's first (as CardBuilder)."""
    first: dict[str, Firing] = {}
    for firing in firings:
        first.setdefault(firing.rule_id, firing)
    out = []
    for card in cards:
        rule_id = card.source.topic.code if card.source.topic else ""
        out.append(Issued(card, rule_id, evidence_fingerprint(first[rule_id]), acted_on_dose(card, drafts)))
    return out


@dataclass
class Recorder:
    """The store-facing end of the pipeline (absent offline: ``evaluate``, warm-up, bench)."""

    store: Store
    now: Callable[[], datetime]
    audit: AuditWriter | None = None
    snoozes: SnoozeCache | None = None

    def record(
        self,
        cards: list[Issued],
        service: ServiceDefinition,
        hook_instance: str,
        patient_id: str,
        ruleset_version: str,
    ) -> list[Card]:
        """The cards to show: snoozed ones dropped; each shown card queued for the audit."""
        now = self.now()
        patient_key = self.store.patient_key(patient_id)
        snoozed = self.snoozes.active(patient_key) if self.snoozes is not None else {}
        kept = [
            c
            for c in cards
            if not any(s.hides(c.evidence_fingerprint, c.weekly_dose) for s in snoozed.get(c.rule_id, ()))
        ]
        if self.audit is not None:
            self.audit.submit(
                [
                    CardRecord(
                        uuid=str(c.card.uuid),
                        rule_id=c.rule_id,
                        service_id=service.id,
                        hook=service.hook,
                        hook_instance=hook_instance[:MAX_HOOK_INSTANCE],
                        ruleset_version=ruleset_version,
                        patient_key=patient_key,
                        suggestion_uuids=tuple(str(s.uuid) for s in c.card.suggestions),
                        issued_at=now,
                        evidence_fingerprint=c.evidence_fingerprint,
                        weekly_dose=c.weekly_dose,
                    )
                    for c in kept
                ]
            )
        return [c.card for c in kept]
