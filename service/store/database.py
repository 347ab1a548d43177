"""The card audit and feedback store: SQLite by default, PostgreSQL in production.

One schema for both (SQLAlchemy 2 Core tables, Alembic migrations in
``service/migrations``). Patient ids are never stored: rows carry a keyed hash
(HMAC-SHA256) of the patient id, so the same patient maps to the same key on every replica
that shares the key, and the raw id cannot be read back.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``; PostgreSQL commits
synchronously by default. A feedback batch is one transaction.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.errors import StoreUnavailable

log = logging.getLogger("osteoguard.store")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

metadata = MetaData()

cards = Table(
    "cards",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("rule_id", String(100), nullable=False, index=True),
    Column("service_id", String(100), nullable=False),
    Column("hook", String(50), nullable=False),
    Column("hook_instance", String(200), nullable=False),
    Column("ruleset_version", String(50), nullable=False),
    Column("patient_key", String(64), nullable=False),
    Column("suggestion_uuids", Text, nullable=False),  # JSON array
    Column("issued_at", DateTime(timezone=True), nullable=False, index=True),
    # What the card rested on (service.cards.fingerprint); NULL for cards issued before 0003.
    Column("evidence_fingerprint", String(64)),
    Column("weekly_dose", Float),
    # 0004 (SPEC §8): who was told, in which encounter (keyed hash), about which draft (codes,
    # dose, timing: a hash), and what became of the card: shown | silent | suppressed.
    Column("client_iss", String(500)),
    Column("encounter_key", String(64)),
    Column("draft_key", String(64)),
    Column("disposition", String(20), nullable=False, server_default="shown"),
    Index("ix_cards_repeat", "patient_key", "rule_id", "issued_at"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("card_uuid", String(64), nullable=False, index=True),
    Column("service_id", String(100), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("accepted_suggestions", Text, nullable=False),  # JSON array
    Column("override_system", String(200)),
    Column("override_code", String(100)),
    Column("override_display", String(500)),
    Column("user_comment", Text),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

snoozes = Table(
    "snoozes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_key", String(64), nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("until", DateTime(timezone=True), nullable=False),
    Column("feedback_fingerprint", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Copied from the snoozed card. NULL (snoozes made before 0003): holds whatever the evidence.
    Column("evidence_fingerprint", String(64)),
    Column("weekly_dose", Float),
)

# The order of add_cards' row tuples.
CARD_COLUMNS = (
    "uuid",
    "rule_id",
    "service_id",
    "hook",
    "hook_instance",
    "ruleset_version",
    "patient_key",
    "suggestion_uuids",
    "issued_at",
    "evidence_fingerprint",
    "weekly_dose",
    "client_iss",
    "encounter_key",
    "draft_key",
    "disposition",
)

seen_tokens = Table(
    "seen_tokens",
    metadata,
    Column("iss", String(500), primary_key=True),
    Column("jti", String(500), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

settings_table = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)


def sqlalchemy_url(url: str) -> str:
    """Our URL forms to SQLAlchemy's: ``postgresql://`` uses psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CardRecord:
    uuid: str
    rule_id: str
    service_id: str
    hook: str
    hook_instance: str
    ruleset_version: str
    patient_key: str
    suggestion_uuids: tuple[str, ...]
    issued_at: datetime
    evidence_fingerprint: str | None = None  # None: issued before cards recorded it
    weekly_dose: float | None = None  # mg a week of the draft a dose card acts on
    client_iss: str | None = None  # the verified caller; None with auth off
    encounter_key: str | None = None  # keyed hash of context.encounterId, when sent
    draft_key: str | None = None  # hash of the acted-on orders' codes, dose and timing
    disposition: str = "shown"  # shown | silent | suppressed


@dataclass(frozen=True)
class RepeatQuery:
    """What makes a card a repeat (SPEC §8): a card shown at ``hook`` since ``since`` to the
    same client, for the same patient, encounter and draft, of one of ``rule_ids``."""

    client_iss: str | None
    patient_key: str
    encounter_key: str | None
    draft_key: str
    hook: str
    rule_ids: tuple[str, ...]
    since: datetime


@dataclass(frozen=True)
class FeedbackRecord:
    fingerprint: str
    card_uuid: str
    service_id: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    override_system: str | None
    override_code: str | None
    override_display: str | None
    user_comment: str | None
    outcome_at: datetime
    received_at: datetime


@dataclass(frozen=True)
class SnoozeRecord:
    patient_key: str
    rule_id: str
    until: datetime
    feedback_fingerprint: str
    created_at: datetime
    evidence_fingerprint: str | None = None  # None: holds whatever the card rests on
    weekly_dose: float | None = None


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (every one) to the database at ``url`` (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


_P = ParamSpec("_P")
_R = TypeVar("_R")


CONNECT_TIMEOUT_S = 2  # seconds


def _unavailable_on_error(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Database errors on the request path become :class:`StoreUnavailable` (a 503), never a 500."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"the store is unavailable ({type(exc).__name__})") from exc

    return wrapper


class Store:
    """Synchronous database access; async callers run these methods in a worker thread."""

    def __init__(self, url: str, patient_hash_key: bytes | None = None) -> None:
        self.url = url
        # A PostgreSQL server that is away must cost a call seconds, not the OS connect timeout.
        connect_args = (
            {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith(("postgresql:", "postgres:")) else {}
        )
        self.engine: Engine = create_engine(
            sqlalchemy_url(url), pool_pre_ping=True, future=True, connect_args=connect_args
        )
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._key = patient_hash_key
        dialect = self.engine.dialect
        # The one conversion SQLAlchemy makes for a card row: SQLite has no datetime type, and
        # its DateTime stores a fixed text form (which the reads and range queries expect).
        self._issued_at_to_db: Callable[[Any], Any] | None = cards.c.issued_at.type.dialect_impl(
            dialect
        ).bind_processor(dialect)
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._insert_cards_sql = (
            f"INSERT INTO cards ({', '.join(CARD_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(CARD_COLUMNS))}) ON CONFLICT (uuid) DO NOTHING"
        )
        # SQLite: the whole batch as one JSON parameter of one statement. Python's sqlite3 lets
        # go of the GIL around every row's step, and a writer thread that must take it back
        # 50 times per batch from a busy event loop waited up to the switch interval (5 ms)
        # each time: batches overran their 100 ms budget and were all spooled. One step is one
        # hand-over. (``WHERE true``: SQLite's grammar for an upsert after a SELECT.)
        self._sqlite_batch = dialect.name == "sqlite"
        self._insert_cards_json_sql = (
            f"INSERT INTO cards ({', '.join(CARD_COLUMNS)}) SELECT "
            + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(CARD_COLUMNS)))
            + " FROM json_each(?) WHERE true ON CONFLICT (uuid) DO NOTHING"
        )

    def open(self) -> None:
        """Migrate, then load (or create) the patient hash key."""
        try:
            try:
                upgrade(self.url)
            except SQLAlchemyError:
                # Several workers may migrate at once; the loser finds the schema at head.
                upgrade(self.url)
            if self._key is None:
                self._key = self._stored_key()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(
                f"the store at {self.engine.url.render_as_string()} is unavailable"
            ) from exc

    def describe(self) -> str:
        """Which database this is, for people: the SQLite file's absolute path, or the URL
        without its password."""
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if database and database != ":memory:":
                return f"the SQLite file {Path(database).resolve()}"
        return self.engine.url.render_as_string(hide_password=True)

    def holds_a_store(self) -> bool:
        """True when the database exists and has been migrated; never creates anything.

        Commands that only read (``feedback report``) check this first: opening a SQLite URL
        that names no file would create an empty database and report nothing.
        """
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if database and database != ":memory:" and not Path(database).is_file():
                return False
        try:
            with self.engine.connect() as conn:
                return bool(inspect(conn).has_table("alembic_version"))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"the store at {self.describe()} is unavailable") from exc

    def close(self) -> None:
        self.engine.dispose()

    def _stored_key(self) -> bytes:
        # Without OSTEOGUARD_PATIENT_HASH_KEY(_FILE), a random key is kept in the database so
        # every replica sharing it hashes alike. Production should mount a key instead.
        with self.engine.begin() as conn:
            row = conn.execute(
                select(settings_table.c.value).where(settings_table.c.key == "patient_hash_key")
            ).first()
            if row is None:
                self._insert_ignore(
                    conn, settings_table, [{"key": "patient_hash_key", "value": secrets.token_hex(32)}]
                )
                row = conn.execute(
                    select(settings_table.c.value).where(settings_table.c.key == "patient_hash_key")
                ).first()
        assert row is not None
        return bytes.fromhex(row[0])

    def patient_key(self, patient_id: str) -> str:
        """The keyed hash that stands for a patient id in every table."""
        assert self._key is not None, "Store.open() first"
        return hmac.new(self._key, patient_id.encode(), hashlib.sha256).hexdigest()

    def _insert_ignore(self, conn: Any, table: Table, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows, skipping any that collide with a unique key; returns how many were new.

        Counted with RETURNING (only inserted rows come back): psycopg reports no rowcount here.
        """
        if not rows:
            return 0
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        key = next(iter(table.primary_key.columns))
        stmt = dialect.insert(table).values(list(rows)).on_conflict_do_nothing().returning(key)
        return len(conn.execute(stmt).all())

    # ---- cards -----------------------------------------------------------------------
    def add_cards(self, records: Iterable[CardRecord]) -> None:
        """Insert card records in one transaction, skipping uuids already stored.

        The driver's own ``executemany`` with one fixed statement text and plain tuples: no
        statement compiled or cached per batch, no dict and no type processing per row (the
        SQLAlchemy Core path cost about 40 us of CPU per record, in the writer's thread,
        holding the GIL the event loop needs). Errors still come wrapped by SQLAlchemy, so an
        outage and a data error are told apart as before (:mod:`service.store.replay`).
        """
        issued = self._issued_at_to_db
        rows = [
            (
                r.uuid,
                r.rule_id,
                r.service_id,
                r.hook,
                r.hook_instance,
                r.ruleset_version,
                r.patient_key,
                json.dumps(list(r.suggestion_uuids)),
                issued(r.issued_at) if issued is not None else r.issued_at,
                r.evidence_fingerprint,
                r.weekly_dose,
                r.client_iss,
                r.encounter_key,
                r.draft_key,
                r.disposition,
            )
            for r in records
        ]
        if not rows:
            return
        with self.engine.begin() as conn:
            if self._sqlite_batch:
                conn.exec_driver_sql(self._insert_cards_json_sql, (json.dumps(rows),))
            else:
                conn.exec_driver_sql(self._insert_cards_sql, rows)

    @_unavailable_on_error
    def cards_by_uuid(self, uuids: Iterable[str]) -> dict[str, CardRecord]:
        wanted = sorted(set(uuids))
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(cards).where(cards.c.uuid.in_(wanted))).mappings().all()
        return {
            row["uuid"]: CardRecord(
                uuid=row["uuid"],
                rule_id=row["rule_id"],
                service_id=row["service_id"],
                hook=row["hook"],
                hook_instance=row["hook_instance"],
                ruleset_version=row["ruleset_version"],
                patient_key=row["patient_key"],
                suggestion_uuids=tuple(json.loads(row["suggestion_uuids"])),
                issued_at=_aware(row["issued_at"]),
                evidence_fingerprint=row["evidence_fingerprint"],
                weekly_dose=row["weekly_dose"],
                client_iss=row["client_iss"],
                encounter_key=row["encounter_key"],
                draft_key=row["draft_key"],
                disposition=row["disposition"],
            )
            for row in rows
        }

    @_unavailable_on_error
    def shown_before(self, query: RepeatQuery) -> set[tuple[str, str]]:
        """(rule id, evidence fingerprint) of the cards that match ``query`` and were shown."""
        c = cards.c
        stmt = (
            select(c.rule_id, c.evidence_fingerprint)
            .where(
                c.patient_key == query.patient_key,
                c.rule_id.in_(query.rule_ids),
                c.issued_at >= query.since,
                c.hook == query.hook,
                c.disposition == "shown",
                c.draft_key == query.draft_key,
                c.client_iss.is_not_distinct_from(query.client_iss),
                c.encounter_key.is_not_distinct_from(query.encounter_key),
                c.evidence_fingerprint.is_not(None),
            )
            .distinct()
        )
        with self.engine.connect() as conn:
            return {(row[0], row[1]) for row in conn.execute(stmt).all()}

    # ---- feedback and snoozes ----------------------------------------------------------
    @_unavailable_on_error
    def add_feedback(self, entries: Sequence[FeedbackRecord], snooze_rows: Sequence[SnoozeRecord]) -> int:
        """Store a batch in one transaction; returns how many entries were new."""
        rows = [
            {
                "fingerprint": e.fingerprint,
                "card_uuid": e.card_uuid,
                "service_id": e.service_id,
                "outcome": e.outcome,
                "accepted_suggestions": json.dumps(list(e.accepted_suggestions)),
                "override_system": e.override_system,
                "override_code": e.override_code,
                "override_display": e.override_display,
                "user_comment": e.user_comment,
                "outcome_at": e.outcome_at,
                "received_at": e.received_at,
            }
            for e in entries
        ]
        snooze_dicts = [
            {
                "patient_key": s.patient_key,
                "rule_id": s.rule_id,
                "until": s.until,
                "feedback_fingerprint": s.feedback_fingerprint,
                "created_at": s.created_at,
                "evidence_fingerprint": s.evidence_fingerprint,
                "weekly_dose": s.weekly_dose,
            }
            for s in snooze_rows
        ]
        with self.engine.begin() as conn:
            new = self._insert_ignore(conn, feedback, rows)
            self._insert_ignore(conn, snoozes, snooze_dicts)
        return new

    def active_snoozes(self, now: datetime, created_since: datetime | None = None) -> list[SnoozeRecord]:
        """Snoozes still running at ``now`` (only those created since ``created_since``, if given)."""
        query = select(snoozes).where(snoozes.c.until > now)
        if created_since is not None:
            query = query.where(snoozes.c.created_at >= created_since)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            SnoozeRecord(
                patient_key=row["patient_key"],
                rule_id=row["rule_id"],
                until=_aware(row["until"]),
                feedback_fingerprint=row["feedback_fingerprint"],
                created_at=_aware(row["created_at"]),
                evidence_fingerprint=row["evidence_fingerprint"],
                weekly_dose=row["weekly_dose"],
            )
            for row in rows
        ]

    # ---- JWT replay protection ---------------------------------------------------------
    @_unavailable_on_error
    def remember_token(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record a token id; False when it was seen before (a replay)."""
        with self.engine.begin() as conn:
            return (
                self._insert_ignore(conn, seen_tokens, [{"iss": iss, "jti": jti, "expires_at": expires_at}])
                == 1
            )

    def forget_expired_tokens(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(seen_tokens.delete().where(seen_tokens.c.expires_at < now)).rowcount or 0)

    # ---- reporting and health ----------------------------------------------------------
    @_unavailable_on_error
    def report_rows(self, since: datetime | None) -> dict[str, Any]:
        """Per rule: cards issued by disposition, distinct cards accepted/overridden, override
        reasons (by system and code)."""
        issued_q = select(cards.c.rule_id, cards.c.disposition, func.count()).group_by(
            cards.c.rule_id, cards.c.disposition
        )
        outcome_q = (
            select(cards.c.rule_id, feedback.c.outcome, func.count(func.distinct(feedback.c.card_uuid)))
            .join(feedback, feedback.c.card_uuid == cards.c.uuid)
            .group_by(cards.c.rule_id, feedback.c.outcome)
        )
        reason_q = (
            select(
                cards.c.rule_id,
                feedback.c.override_system,
                feedback.c.override_code,
                feedback.c.override_display,
                func.count(),
            )
            .join(feedback, feedback.c.card_uuid == cards.c.uuid)
            .where(feedback.c.outcome == "overridden")
            .group_by(
                cards.c.rule_id,
                feedback.c.override_system,
                feedback.c.override_code,
                feedback.c.override_display,
            )
        )
        if since is not None:
            issued_q = issued_q.where(cards.c.issued_at >= since)
            outcome_q = outcome_q.where(cards.c.issued_at >= since)
            reason_q = reason_q.where(cards.c.issued_at >= since)
        with self.engine.connect() as conn:
            return {
                "issued": conn.execute(issued_q).all(),
                "outcomes": conn.execute(outcome_q).all(),
                "reasons": conn.execute(reason_q).all(),
            }

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # An acknowledged write survives a crash of the machine too. NORMAL would save the writer
    # thread an fsync per batch, but in WAL mode it may lose every batch since the last
    # checkpoint on a power loss: far past the audit's age bound, which counts a batch safe
    # once the database has it. The fsync waits with the GIL released: it is not the loop's.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")  # several workers share one file
    cursor.close()
