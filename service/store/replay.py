"""Writing card records to the database when it may be away or may refuse one of them.

An outage (the database away, full, too slow, its connection lost) is raised for the caller
to retry later. A data error (PostgreSQL refusing a NUL byte, say) is not retried as a batch:
the records are written one at a time, and one the database refuses alone is quarantined
(:meth:`Spool.quarantine`), logged by rule id, card uuid and error class only, and counted.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service import metrics
from service.store.database import CardRecord, Store
from service.store.spool import Spool

log = logging.getLogger("osteoguard.audit")
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def is_outage(exc: BaseException) -> bool:
    """The database is away, full or too slow (retry later), not refusing this data."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _OUTAGES)


def reason_class(exc: BaseException) -> str:
    """The error's class (and the driver's), never its message: it may quote the data."""
    orig = getattr(exc, "orig", None)
    return type(exc).__name__ + (f"/{type(orig).__name__}" if orig is not None else "")


def write_each(store: Store, spool: Spool, records: list[CardRecord]) -> int:
    """Write a batch; on a data error, one record at a time. Returns how many were
    quarantined; an outage is raised (the batch is tried again later)."""
    try:
        store.add_cards(records)
        return 0
    except Exception as exc:
        if is_outage(exc):
            raise
    refused = 0
    for record in records:
        try:
            store.add_cards([record])
        except Exception as exc:
            if is_outage(exc):
                raise
            reason = reason_class(exc)
            spool.quarantine(record, reason)
            log.error(
                "card audit record refused by the database; quarantined",
                extra={"rule_id": record.rule_id, "card": record.uuid, "reason": reason},
            )
            metrics.AUDIT_QUARANTINED.inc()
            refused += 1
    return refused
