"""The pipeline's last step: drop snoozed cards, apply the caller's settings, and queue every
card for the card audit with what became of it (its disposition).

The audit is the service's memory of what it told whom: feedback is checked against it, and
snoozes are recorded from it, with what each card rested on (its evidence fingerprint and the
weekly dose of the draft it acts on) so that a snooze holds only while that stays the same.

Dispositions (SPEC §8): ``shown``; ``silent`` (the client's ``silent`` setting: evaluated and
audited, not shown); ``suppressed`` (``repeat_alerts: suppress``: at order-sign and
medication-refill, a card that order-select already showed within 30 minutes to the same
client, for the same patient, encounter, rule, evidence fingerprint and draft). The audit in
the store is the memory of what was shown, so suppression holds across replicas.

Nothing here waits for the database, except the repeat check (only for callers that ask for
suppression, at order-sign and medication-refill): the snooze cache is in memory and the
audit writer is a queue. While the database is away, a call waits for its records to be
fsynced in the audit spool (service.store.audit).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio

from cds_hooks.context import HookContext
from cds_hooks.models import Card
from cds_hooks.trust import DEFAULT_SETTINGS, ClientSettings
from cds_hooks.vocabulary import MEDICATION_REFILL, ORDER_SELECT, ORDER_SIGN
from service.cards.fingerprint import acted_on_dose, evidence_fingerprint
from service.pipeline.services import ServiceDefinition
from service.ruleset.schema import Firing
from service.store.audit import AuditWriter
from service.store.database import CardRecord, RepeatQuery, Store
from service.store.snoozes import SnoozeCache

MAX_HOOK_INSTANCE = 200  # stored as given, up to this length
MAX_ISS = 500
# SPEC §8: the hooks at which a card order-select showed is not repeated, and for how long.
REPEAT_HOOKS = (ORDER_SIGN, MEDICATION_REFILL)
REPEAT_SOURCE_HOOK = ORDER_SELECT
REPEAT_WINDOW = timedelta(minutes=30)
SHOWN, SILENT, SUPPRESSED = "shown", "silent", "suppressed"


@dataclass(frozen=True)
class Caller:
    """Who called (the verified JWT ``iss``; None with auth off) and their settings."""

    iss: str | None = None
    settings: ClientSettings = field(default=DEFAULT_SETTINGS)


def _medication_key(order: Mapping[str, Any]) -> list[str]:
    concept = order.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        codings = concept.get("coding")
        codes = sorted(
            f"{c.get('system')}|{c.get('code')}"
            for c in (codings if isinstance(codings, list) else [])
            if isinstance(c, dict) and c.get("code") is not None
        )
        if codes:
            return codes
        if isinstance(concept.get("text"), str):
            return ["text|" + concept["text"].strip().lower()]
    reference = order.get("medicationReference")
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return ["ref|" + reference["reference"]]
    return []


def _dosage_key(order: Mapping[str, Any]) -> list[Any]:
    dosages = order.get("dosageInstruction")
    return [
        [d.get("doseAndRate"), d.get("timing")]
        for d in (dosages if isinstance(dosages, list) else [])
        if isinstance(d, dict)
    ]


def draft_key(drafts: Sequence[Mapping[str, Any]]) -> str | None:
    """SHA-256 (hex) of what the orders acted on say: medication codes, dose and timing (the
    repaired drafts, so a single object and its one-item list compare alike). None without
    orders: then nothing is "the same draft" and no card is suppressed as a repeat."""
    if not drafts:
        return None
    parts = sorted(
        json.dumps([_medication_key(d), _dosage_key(d)], sort_keys=True, separators=(",", ":"))
        for d in drafts
    )
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


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
    on_withheld: Callable[[str, str], None] | None = None  # (rule id, silent | suppressed)

    def encounter_key(self, encounter_id: str | None) -> str | None:
        """The keyed hash that stands for an encounter id in the audit (as for patients)."""
        return None if encounter_id is None else self.store.patient_key("encounter:" + encounter_id)

    async def record(
        self,
        cards: list[Issued],
        service: ServiceDefinition,
        hook_instance: str,
        context: HookContext,
        ruleset_version: str,
        caller: Caller = Caller(),
        drafts: Sequence[Mapping[str, Any]] = (),
    ) -> list[Card]:
        """The cards to show: snoozed ones dropped; silent and repeated ones withheld; every
        card that is not snoozed queued for the audit with its disposition."""
        now = self.now()
        patient_key = self.store.patient_key(context.patient_id)
        snoozed = self.snoozes.active(patient_key) if self.snoozes is not None else {}
        kept = [
            c
            for c in cards
            if not any(s.hides(c.evidence_fingerprint, c.weekly_dose) for s in snoozed.get(c.rule_id, ()))
        ]
        iss = caller.iss[:MAX_ISS] if caller.iss else None
        encounter = self.encounter_key(context.encounter_id)
        drafted = draft_key(drafts)
        dispositions = {id(c): SHOWN for c in kept}
        if caller.settings.silent:
            dispositions = {id(c): SILENT for c in kept}
        elif (
            kept and drafted and caller.settings.repeat_alerts == "suppress" and service.hook in REPEAT_HOOKS
        ):
            if self.audit is not None:
                # A card this replica showed a moment ago is in the store (or, while the
                # database is away, in the spool: then the repeat check cannot see it).
                await self.audit.flush(timeout_s=self.audit.max_age_s * 2)
            query = RepeatQuery(
                client_iss=iss,
                patient_key=patient_key,
                encounter_key=encounter,
                draft_key=drafted,
                hook=REPEAT_SOURCE_HOOK,
                rule_ids=tuple(sorted({c.rule_id for c in kept})),
                since=now - REPEAT_WINDOW,
            )
            shown = await anyio.to_thread.run_sync(self.store.shown_before, query)
            for c in kept:
                if (c.rule_id, c.evidence_fingerprint) in shown:
                    dispositions[id(c)] = SUPPRESSED
        if self.audit is not None:
            # Queued (and, while the database is away, fsynced in the spool) before any card is
            # given; a SpoolFull here is a 503 with no cards.
            await self.audit.durable(
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
                        client_iss=iss,
                        encounter_key=encounter,
                        draft_key=drafted,
                        disposition=dispositions[id(c)],
                    )
                    for c in kept
                ]
            )
        for c in kept:
            if dispositions[id(c)] != SHOWN and self.on_withheld is not None:
                self.on_withheld(c.rule_id, dispositions[id(c)])
        return [c.card for c in kept if dispositions[id(c)] == SHOWN]
