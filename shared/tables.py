"""Tables every service has in its own database: outbox, inbox, dead letters, audit,
feed positions and idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self
from uuid import UUID, uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from shared.clock import now as clinic_now
from shared.events.catalogue import ReferralAccepted


def utcnow() -> datetime:
    """Now on the one clinic clock (shared.clock), aware UTC: every stored time and every
    rule reads it, so a moved training clock moves them all alike."""
    return clinic_now()


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz that always reads back as an aware UTC datetime: SQLite hands back
    naive values and PostgreSQL the session's time zone, so no call site converts."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def Timestamp(**field: Any) -> Any:
    """An aware UTC timestamp column (timestamptz on PostgreSQL); ``field`` as ``Field``
    takes it (a default, an index). Nullable when its type is optional."""
    return Field(sa_type=UTCDateTime(), **field)


def as_utc(value: datetime) -> datetime:
    """Every stored time is UTC: SQLite hands back naive datetimes, and PostgreSQL hands
    back the session's time zone, which need not be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ReferredCare(SQLModel):
    """The first columns of the care an accepted referral opens in the service it was
    for (an infusion course, a therapy episode): one per referral."""

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    patient_id: UUID = Field(index=True)
    # Unique: a redelivered referral.accepted can never open a second one.
    referral_id: UUID = Field(unique=True)
    status: str = Field(max_length=12, index=True)
    priority: str = Field(max_length=10)
    conditions: list[str] = Field(sa_type=JSON, nullable=False)

    @classmethod
    def opened_from(
        cls, accepted: ReferralAccepted, patient_id: UUID, status: str, **columns: Any
    ) -> Self:
        """The row the accepted referral opens, with the columns only its service keeps."""
        return cls(
            patient_id=patient_id,
            referral_id=accepted.referral_id,
            status=status,
            priority=accepted.priority,
            conditions=list(accepted.conditions),
            **columns,
        )


class OutboxEvent(SQLModel, table=True):
    """An event written in the transaction that caused it, sent after commit."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("subject_type", "subject_id", "sequence", name="uq_outbox_sequence"),
        Index("ix_outbox_unsent", "sent_at", "position"),
        Index("ix_outbox_feed", "txid", "position"),
    )

    # The order rows were written in.
    position: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    )
    # The transaction that wrote the row: PostgreSQL's pg_current_xact_id(), 0 in SQLite.
    # PostgreSQL hands out positions before commit, so a row with a lower position can
    # commit after a higher one has been read; the feed orders by (txid, position) and
    # serves only transactions older than every one still in flight (shared.feed).
    txid: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )
    event_id: UUID = Field(unique=True)
    type: str = Field(max_length=100)
    patient_id: UUID = Field(index=True)
    subject_type: str = Field(max_length=50)
    subject_id: str = Field(max_length=64)
    sequence: int
    occurred_at: datetime = Timestamp()
    envelope: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    sent_at: datetime | None = Timestamp(default=None)
    send_attempts: int = 0


class InboxEvent(SQLModel, table=True):
    """An event this service has already acted on; its key makes redelivery a no-op."""

    __tablename__ = "inbox"

    event_id: UUID = Field(primary_key=True)
    type: str = Field(max_length=100)
    received_at: datetime = Timestamp(default_factory=utcnow)


class DeadLetter(SQLModel, table=True):
    """A message that failed every retry: kept here until someone replays it."""

    __tablename__ = "dead_letter"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True, max_length=64)
    queue_name: str = Field(max_length=100)
    actor_name: str = Field(max_length=100)
    event_id: str | None = Field(default=None, max_length=64)
    event_type: str | None = Field(default=None, max_length=100)
    error: str = Field(max_length=500)
    message: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    failed_at: datetime = Timestamp(default_factory=utcnow)
    replayed_at: datetime | None = Timestamp(default=None)
    replay_count: int = 0


class AuditRecord(SQLModel, table=True):
    """Who touched which patient's data, when, and with what outcome.

    Shaped after FHIR AuditEvent: action C/R/U/D/E, recorded, outcome (0 success,
    4 minor failure such as a denial, 8 serious failure), agent, entity. Append-only.
    """

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    recorded: datetime = Timestamp(default_factory=utcnow, index=True)
    action: str = Field(max_length=1)
    outcome: str = Field(max_length=2)
    agent_user: str = Field(max_length=100)
    agent_role: str = Field(max_length=40)
    entity_type: str = Field(max_length=60)
    entity_id: str | None = Field(default=None, max_length=64)
    patient_id: UUID | None = Field(default=None, index=True)
    path: str = Field(max_length=300)
    detail: str | None = Field(default=None, max_length=300)


class FeedPosition(SQLModel, table=True):
    """How far this service has consumed one producer's event feed (shared.catchup).

    The broker is fast delivery; this position is the guarantee: every event after it
    is read from the producer's feed and consumed through the same idempotent path.
    """

    __tablename__ = "feed_position"

    producer: str = Field(primary_key=True, max_length=40)
    # Opaque feed cursor "txid.position" (shared.feed.FeedCursor).
    cursor: str = Field(default="0.0", max_length=45)
    created_at: datetime = Timestamp(default_factory=utcnow)
    # The start of the last read that reached the head of the feed: every event the
    # producer had committed by then has been consumed.
    caught_up_at: datetime | None = Timestamp(default=None)
    # Events after the cursor not consumed when the last read stopped (0 when caught up).
    behind: int = 0
    # Events this consumer took from the feed because the broker never delivered them.
    recovered: int = 0
    # An event that keeps failing is retried on later reads, then dead-lettered.
    failing_event_id: str | None = Field(default=None, max_length=64)
    failures: int = 0


class IdempotencyKey(SQLModel, table=True):
    """The answer to a request sent with an ``Idempotency-Key`` (shared.idempotency),
    written in the transaction of the change it answers for.

    The key is the caller's: another user's request with the same key is another key.
    The response body is patient data: it stays in this service's database and is
    deleted once it expires.
    """

    __tablename__ = "idempotency_key"

    # "role:user id" of the caller.
    caller: str = Field(primary_key=True, max_length=150)
    key: str = Field(primary_key=True, max_length=255)
    method: str = Field(max_length=10)
    path: str = Field(max_length=300)
    # sha256 of the raw request body, hex.
    body_sha256: str = Field(max_length=64)
    status: int
    media_type: str = Field(max_length=100)
    response: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Timestamp()
    expires_at: datetime = Timestamp(index=True)
