"""Active snoozes, held in memory so the hook path never waits for the database.

Loaded from the store at start-up, then refreshed incrementally every
``OSTEOGUARD_SNOOZE_REFRESH_S`` seconds (rows created since the last refresh, with an
overlap so rows committed late are not missed). Feedback handled by this process updates it
at once; a snooze recorded by another replica is seen within one refresh interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import anyio

from service.store.database import SnoozeRecord, Store

log = logging.getLogger("osteoguard.snoozes")
OVERLAP = timedelta(minutes=2)


class SnoozeCache:
    def __init__(self, store: Store, now: Callable[[], datetime], refresh_s: float) -> None:
        self.store = store
        self.now = now
        self.refresh_s = refresh_s
        # patient key -> rule id -> until: the hook path looks up one patient, not every snooze.
        self._until: dict[str, dict[str, datetime]] = {}
        self._since: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def snoozed(self, patient_key: str) -> set[str]:
        """Rule ids snoozed for this patient right now."""
        now = self.now()
        return {rule for rule, until in self._until.get(patient_key, {}).items() if until > now}

    def add(self, rows: Iterable[SnoozeRecord]) -> None:
        for row in rows:
            rules = self._until.setdefault(row.patient_key, {})
            if row.until > rules.get(row.rule_id, row.until - timedelta(seconds=1)):
                rules[row.rule_id] = row.until

    def load(self) -> None:
        """Read what is new in the store (everything active, on the first call)."""
        now = self.now()
        since = None if self._since is None else self._since - OVERLAP
        self.add(self.store.active_snoozes(now, created_since=since))
        self._since = now
        self._until = {
            key: live
            for key, rules in self._until.items()
            if (live := {rule: until for rule, until in rules.items() if until > now})
        }

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
