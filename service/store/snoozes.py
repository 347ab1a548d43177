"""Active snoozes, held in memory so the hook path never waits for the database.

Loaded from the store at start-up, then refreshed incrementally every
``OSTEOGUARD_SNOOZE_REFRESH_S`` seconds (rows created since the last refresh, with an
overlap so rows committed late are not missed). Feedback handled by this process updates it
at once; a snooze recorded by another replica is seen within one refresh interval.

A snooze hides its rule's card for its patient only while the card rests on the evidence
the snoozed card did (:meth:`Snooze.hides`, SPEC §6).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio

from service.store.database import SnoozeRecord, Store

log = logging.getLogger("osteoguard.snoozes")
OVERLAP = timedelta(minutes=2)


@dataclass(frozen=True)
class Snooze:
    """One snooze of a rule for a patient, as the hook path needs it."""

    until: datetime
    evidence_fingerprint: str | None  # None: made before snoozes were bound to evidence
    weekly_dose: float | None

    def hides(self, fingerprint: str, weekly_dose: float | None) -> bool:
        """Whether this snooze hides a card resting on this evidence and this draft dose.

        The same evidence, and no higher a weekly dose than the snoozed card's (a dose that
        cannot be compared does not unhide it). A snooze from before evidence was recorded
        hides the rule whatever the card rests on, until it expires.
        """
        if self.evidence_fingerprint is None:
            return True
        if self.evidence_fingerprint != fingerprint:
            return False
        return weekly_dose is None or self.weekly_dose is None or weekly_dose <= self.weekly_dose


def _running(rules: dict[str, frozenset[Snooze]], now: datetime) -> dict[str, frozenset[Snooze]]:
    """The snoozes not yet expired at ``now``, by rule id (rules with none left omitted)."""
    return {
        rule: live for rule, held in rules.items() if (live := frozenset(s for s in held if s.until > now))
    }


class SnoozeCache:
    def __init__(self, store: Store, now: Callable[[], datetime], refresh_s: float) -> None:
        self.store = store
        self.now = now
        self.refresh_s = refresh_s
        # patient key -> rule id -> snoozes: the hook path looks up one patient, not every
        # snooze. Copy on write: a patient's mapping is replaced, never changed, so the hook
        # path reads it without a lock while a refresh (in a worker thread) adds to the cache.
        self._active: dict[str, dict[str, frozenset[Snooze]]] = {}
        self._write = threading.Lock()
        self._since: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def active(self, patient_key: str) -> dict[str, frozenset[Snooze]]:
        """The snoozes running right now for this patient, by rule id."""
        return _running(self._active.get(patient_key, {}), self.now())

    def add(self, rows: Iterable[SnoozeRecord]) -> None:
        with self._write:
            self._add(rows)

    def _add(self, rows: Iterable[SnoozeRecord]) -> None:
        for row in rows:
            rules = dict(self._active.get(row.patient_key, {}))
            snooze = Snooze(row.until, row.evidence_fingerprint, row.weekly_dose)
            rules[row.rule_id] = rules.get(row.rule_id, frozenset()) | {snooze}
            self._active[row.patient_key] = rules

    def load(self) -> None:
        """Read what is new in the store (everything active, on the first call)."""
        now = self.now()
        since = None if self._since is None else self._since - OVERLAP
        rows = self.store.active_snoozes(now, created_since=since)
        with self._write:
            self._add(rows)
            self._active = {
                key: live for key, rules in self._active.items() if (live := _running(rules, now))
            }
        self._since = now

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.load)
        self._task = asyncio.create_task(self._refresh(), name="osteoguard-snooze-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await anyio.to_thread.run_sync(self.load)
            except Exception as exc:  # keep serving with what we have; readiness reports the store
                log.warning("snooze refresh failed", extra={"error": type(exc).__name__})
