"""Transactional outbox and its relay (DESIGN.md, "How an event travels").

``add_event`` writes the event into the caller's transaction; if that transaction rolls
back, the event never existed. The relay sends committed rows to each consuming
service's queue and marks them sent. It is woken right after a commit and also sweeps
on a timer, so a row left behind by a crash or a Redis outage goes out later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from sqlalchemy import event, func
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from shared.db import SessionFactory
from shared.events import Envelope, consumers_of, encode_envelope
from shared.feed import writing_transaction
from shared.observability import (
    EVENTS_PUBLISHED,
    OUTBOX_LAG_SECONDS,
    OUTBOX_UNSENT,
    RELAY_SEND_SECONDS,
    get_logger,
)
from shared.tables import OutboxEvent, utcnow

log = get_logger(__name__)

# Hands one envelope to one consuming service's queue.
SendToQueue = Callable[[str, dict[str, Any]], None]


def next_sequence(session: Session, subject_type: str, subject_id: str) -> int:
    statement = select(func.coalesce(func.max(OutboxEvent.sequence), 0)).where(
        OutboxEvent.subject_type == subject_type, OutboxEvent.subject_id == subject_id
    )
    return int(session.exec(statement).one()) + 1


def add_event(session: Session, envelope: Envelope) -> Envelope:
    """Give the event its per-aggregate sequence and write it to the outbox.

    The unique (subject, sequence) key turns two concurrent writers of one aggregate
    into one success and one integrity error, never two events with one number.
    """
    sequenced = msgspec.structs.replace(
        envelope,
        sequence=next_sequence(session, envelope.subject.type, envelope.subject.id),
    )
    session.add(
        OutboxEvent(
            event_id=sequenced.event_id,
            type=sequenced.type,
            patient_id=sequenced.patient_id,
            subject_type=sequenced.subject.type,
            subject_id=sequenced.subject.id,
            sequence=sequenced.sequence,
            occurred_at=sequenced.occurred_at,
            envelope=encode_envelope(sequenced),
            # A SQL expression that the INSERT itself evaluates (PostgreSQL).
            txid=cast(int, writing_transaction(session)),
        )
    )
    session.flush()
    session.info["outbox_written"] = True
    return sequenced


@event.listens_for(OrmSession, "after_commit")
def _wake_relay_after_commit(session: OrmSession) -> None:
    if session.info.pop("outbox_written", False):
        relay = session.info.get("relay")
        if relay is not None:
            relay.wake()


@event.listens_for(OrmSession, "after_rollback")
def _forget_rolled_back_events(session: OrmSession) -> None:
    session.info.pop("outbox_written", None)


class Relay:
    """Sends one service's committed outbox rows, in order, to their consumers."""

    def __init__(
        self,
        service: str,
        sessions: SessionFactory,
        send: SendToQueue,
        *,
        interval_s: float = 2.0,
        batch_size: int = 200,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.send = send
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.max_backoff_s = max(max_backoff_s, interval_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # While sends fail: when the outage began, and the wait before the next try.
        self.down_since: datetime | None = None
        self._backoff_s = interval_s

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.service}-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand: a row is either sent and marked, or left unsent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.down_since is None:
                self._wake.wait(self.interval_s)
            else:
                # Commits keep waking the relay during an outage; trying on each would
                # hammer a broker that is down and log once per commit. Back off instead.
                self._stop.wait(self._backoff_s)
            self._wake.clear()
            self.relay_pending()
            self.measure_lag()

    def relay_pending(self) -> int:
        """Send every unsent row; on failure note the outage once and back off."""
        sent = 0
        try:
            while not self._stop.is_set():
                batch = self.relay_once()
                sent += batch
                if batch < self.batch_size:
                    break
        except Exception as error:  # Redis or the database down: keep rows, try later
            self._outage(error)
            return sent
        self._recovered(sent)
        return sent

    def _outage(self, error: Exception) -> None:
        if self.down_since is None:
            self.down_since = datetime.now(UTC)
            log.warning(
                "relay.broker_down",
                service=self.service,
                error=type(error).__name__,
                detail="events wait in the outbox and are sent when the broker is back",
            )
            self._backoff_s = self.interval_s
        else:
            self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)

    def _recovered(self, sent: int) -> None:
        if self.down_since is None:
            return
        down_for = (datetime.now(UTC) - self.down_since).total_seconds()
        log.warning(
            "relay.broker_back", service=self.service, waited=sent, down_s=round(down_for, 1)
        )
        self.down_since = None
        self._backoff_s = self.interval_s

    def relay_once(self) -> int:
        """Send up to one batch; returns how many rows were sent."""
        with self.sessions() as session:
            # SKIP LOCKED lets the API's and the worker's relays share the table without
            # sending the same row twice (PostgreSQL; SQLite has one writer anyway).
            rows = session.exec(
                select(OutboxEvent)
                .where(col(OutboxEvent.sent_at).is_(None))
                .order_by(col(OutboxEvent.position))
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            with RELAY_SEND_SECONDS.labels(self.service).time():
                for row in rows:
                    self._send_row(row)
            sent_at = utcnow()
            for row in rows:
                row.sent_at = sent_at
                row.send_attempts += 1
                session.add(row)
            session.commit()
            return len(rows)

    def _send_row(self, row: OutboxEvent) -> None:
        for consumer in sorted(consumers_of(row.type)):
            self.send(consumer, row.envelope)
        EVENTS_PUBLISHED.labels(self.service, row.type).inc()

    def measure_lag(self) -> None:
        try:
            unsent, oldest = unsent_summary(self.sessions)
        except Exception:  # a down database is reported by /ready, not here
            return
        OUTBOX_UNSENT.labels(self.service).set(unsent)
        lag = (utcnow() - oldest).total_seconds() if oldest else 0.0
        OUTBOX_LAG_SECONDS.labels(self.service).set(max(lag, 0.0))


def unsent_summary(sessions: SessionFactory) -> tuple[int, datetime | None]:
    with sessions() as session:
        count, oldest = session.exec(
            select(func.count(), func.min(OutboxEvent.occurred_at)).where(
                col(OutboxEvent.sent_at).is_(None)
            )
        ).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest
