"""The coordinator consumes every event: store it, then fold it into the patient's
pathway (applied to the fold of the events before it when it comes after them all,
re-folded from the store when it arrived late: DESIGN.md, order-insensitive projection).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID, uuid4

import msgspec
from sqlalchemy.orm import QueryableAttribute, defer
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, select

from services.coordinator.domain import SEVERITY_RANK, Alert, Pathway
from services.coordinator.models import PathwayAlert, PathwayRow, StoredEvent
from services.coordinator.projection import Fold, active_teams, finish, fold_history, project
from services.coordinator.rules import next_due
from shared.db import lock_for_transaction
from shared.events import Actor, Envelope, Subject, decode_envelope, encode_envelope, new_event
from shared.events.catalogue import PathwayUrgentAlertOpened
from shared.observability import current_correlation_id, get_logger
from shared.outbox import add_event
from shared.policy import ClinicalPolicy, clinical_policy
from shared.tables import InboxEvent, utcnow

log = get_logger(__name__)

URGENT = ("urgent", "critical")


@dataclass
class KeptFold:
    """A pathway's fold as this process last wrote it, the id of that write, and the
    clinical policy whose thresholds it was folded with."""

    fold_id: UUID
    fold: Fold
    policy: ClinicalPolicy = field(default_factory=clinical_policy)


class FoldCache:
    """The folds this process wrote last, so an event that comes after a patient's
    others costs the same however long the history (issue 15). Bounded by the events
    the folds hold, least recently used out first. A fold is only ever a short cut: one
    whose id is not the stored pathway's is folded again from the store."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._folds: OrderedDict[UUID, KeptFold] = OrderedDict()
        self._events = 0
        # Worker threads share it (the patient's lock keeps one patient to one thread).
        self._lock = threading.Lock()

    def take(self, patient_id: UUID) -> KeptFold | None:
        with self._lock:
            kept = self._folds.pop(patient_id, None)
            if kept is not None:
                self._events -= kept.fold.event_count
            return kept

    def keep(self, patient_id: UUID, fold_id: UUID, fold: Fold) -> None:
        with self._lock:
            earlier = self._folds.pop(patient_id, None)
            if earlier is not None:
                self._events -= earlier.fold.event_count
            if fold.event_count > self.max_events:
                return
            self._folds[patient_id] = KeptFold(fold_id, fold)
            self._events += fold.event_count
            while self._events > self.max_events:
                _, oldest = self._folds.popitem(last=False)
                self._events -= oldest.fold.event_count

    def clear(self) -> None:
        with self._lock:
            self._folds.clear()
            self._events = 0

    def __len__(self) -> int:
        return len(self._folds)


# About 2,000 patients of 100 events each; a folded event holds about half a kilobyte
# (benchmarks/README.md, incremental fold: 100,000 events kept cost the worker ~50 MiB).
FOLDS = FoldCache(max_events=200_000)


def handle_event(session: Session, envelope: Envelope) -> None:
    # Two workers folding one patient's events at once would each miss the other's
    # uncommitted event and the later commit would win with a pathway missing one.
    lock_for_transaction(session, envelope.patient_id)
    # The consumer's inbox has already turned a redelivery into a no-op.
    session.add(_stored(envelope))
    session.flush()
    _note_gap(session, envelope)
    refresh_pathway(session, envelope.patient_id, envelope)


def record_own_event(session: Session, event: Envelope) -> Envelope:
    """Write a coordinator event (a person's action on an alert, a review, the clock's
    raise) to the outbox and fold it in now, with its inbox row, so the answer shows it
    and the copy that comes back through the queue is a duplicate. Through the outbox it
    reaches the store everywhere, and a rebuild sees it like any other event."""
    envelope = add_event(session, event)
    fold_own_event(session, envelope)
    return envelope


def fold_own_event(session: Session, envelope: Envelope) -> None:
    """Fold a coordinator event already in this transaction's outbox, with its inbox
    row (so the copy that comes back through the queue is a duplicate)."""
    session.add(InboxEvent(event_id=envelope.event_id, type=envelope.type))
    handle_event(session, envelope)


def _note_gap(session: Session, envelope: Envelope) -> None:
    """An aggregate's sequence with a hole: the feed catch-up will fill it; say so."""
    if envelope.sequence <= 1:
        return
    previous = session.exec(
        select(StoredEvent.event_id).where(
            StoredEvent.subject_type == envelope.subject.type,
            StoredEvent.subject_id == envelope.subject.id,
            StoredEvent.sequence == envelope.sequence - 1,
        )
    ).first()
    if previous is None:
        log.info(
            "pathway.gap_detected",
            producer=envelope.producer,
            subject_type=envelope.subject.type,
            sequence=envelope.sequence,
        )


def _stored(envelope: Envelope) -> StoredEvent:
    return StoredEvent(
        event_id=envelope.event_id,
        patient_id=envelope.patient_id,
        type=envelope.type,
        schema_version=envelope.schema_version,
        producer=envelope.producer,
        subject_type=envelope.subject.type,
        subject_id=envelope.subject.id,
        sequence=envelope.sequence,
        occurred_at=envelope.occurred_at,
        envelope=encode_envelope(envelope),
    )


def stored_events(session: Session, patient_id: UUID) -> list[Envelope]:
    rows = session.exec(select(StoredEvent).where(StoredEvent.patient_id == patient_id)).all()
    return [decode_envelope(row.envelope, allow_unknown=True) for row in rows]


def refresh_pathway(
    session: Session, patient_id: UUID, arrived: Envelope | None = None
) -> PathwayRow:
    """Fold the patient's pathway and write it. ``arrived``, the event just stored, is
    applied to this process's fold of the events before it when that fold is what the
    stored pathway was written from and the event comes after all of them; otherwise the
    whole history is folded again from the store."""
    stored = _stored_pathway(session, patient_id)
    fold = _fold_with(session, patient_id, arrived, stored.fold_id if stored else None)
    pathway = finish(fold)
    fold_id = uuid4()
    row = _write_pathway(session, stored, pathway, fold_id)
    _write_alerts(session, patient_id, pathway.alerts)
    FOLDS.keep(patient_id, fold_id, fold)
    return row


def _fold_with(
    session: Session, patient_id: UUID, arrived: Envelope | None, folded_by: UUID | None
) -> Fold:
    # Taken out of the cache while it is carried on: a fold that fails half way (or a
    # transaction that rolls back) is never found again.
    kept = FOLDS.take(patient_id)
    if (
        arrived is not None
        and kept is not None
        and kept.fold.follows(arrived)
        and kept.policy is clinical_policy()  # its alerts were raised by the same rules
        # Another process (or a rebuild) may have folded this pathway since.
        and kept.fold_id == folded_by
    ):
        kept.fold.apply(arrived)
        return kept.fold
    return fold_history(patient_id, stored_events(session, patient_id))


# The document column as SQLAlchemy's loader options take it (SQLModel types it as a dict).
DOCUMENT = cast("QueryableAttribute[Any]", PathwayRow.document)


def _stored_pathway(session: Session, patient_id: UUID) -> PathwayRow | None:
    """The stored pathway's columns without its document, read from the database itself
    (the session may hold an older copy; under the patient's lock this is the last
    committed write, or this transaction's): its `fold_id` says which fold wrote it."""
    return session.get(PathwayRow, patient_id, populate_existing=True, options=[defer(DOCUMENT)])


def _write_pathway(
    session: Session, row: PathwayRow | None, pathway: Pathway, fold_id: UUID
) -> PathwayRow:
    # Only the columns whose value changed are written, and the document is.
    if row is None:
        row = PathwayRow(
            patient_id=pathway.patient_id,
            stage=pathway.stage,
            stage_since=pathway.stage_since,
            event_count=0,
            document={},
        )
    row.teams = "," + "".join(f"{team}," for team in active_teams(pathway))
    row.stage = pathway.stage
    row.stage_since = pathway.stage_since
    row.open_alerts = sum(1 for alert in pathway.alerts if alert.status != "resolved")
    row.event_count = pathway.event_count
    row.review_due = pathway.review_due.due if pathway.review_due else None
    row.review_rank = pathway.review_due.rank if pathway.review_due else None
    row.next_due = next_due(pathway.streams, pathway.alerts)
    row.document = msgspec.to_builtins(pathway)
    # Written whatever the session's copy held (a stale copy may equal the new one).
    flag_modified(row, "document")
    row.fold_id = fold_id
    row.updated_at = utcnow()
    session.add(row)
    return row


def _write_alerts(session: Session, patient_id: UUID, alerts: list[Alert]) -> None:
    """The pathway's alerts as rows: new ones inserted, changed ones updated, ones the
    fold no longer has deleted; an unchanged row is not written."""
    stored = {
        row.id: row
        for row in session.exec(
            select(PathwayAlert)
            .where(PathwayAlert.patient_id == patient_id)
            .execution_options(populate_existing=True)
        )
    }
    for alert in alerts:
        row = stored.pop(alert.id, None)
        if row is None:
            session.add(PathwayAlert(id=alert.id, patient_id=patient_id, **_alert_columns(alert)))
            if alert.severity in URGENT and alert.status != "resolved":
                _announce_urgent(session, patient_id, alert)
            continue
        for name, value in _alert_columns(alert).items():
            setattr(row, name, value)  # the same value again leaves the column unwritten
    for gone in stored.values():
        session.delete(gone)


def _alert_columns(alert: Alert) -> dict[str, Any]:
    return {
        "kind": alert.kind,
        "severity": alert.severity,
        "severity_rank": SEVERITY_RANK[alert.severity],
        "status": alert.status,
        "owner_role": alert.owner_role,
        "raised_at": alert.raised_at,
        "due": alert.due,
    }


def _announce_urgent(session: Session, patient_id: UUID, alert: Alert) -> None:
    """Tell the services that discharge and close that an urgent alert is open (they
    refuse until it is resolved: shared.urgent_alerts). Not folded back: the pathway
    already has the alert, so the copy that returns through the queue is a duplicate."""
    envelope = add_event(
        session,
        new_event(
            data=PathwayUrgentAlertOpened(
                alert_id=alert.id,
                kind=alert.kind,
                owner_role=alert.owner_role,
                raised_at=alert.raised_at,
                due=alert.due,
            ),
            producer="coordinator",
            patient_id=patient_id,
            # Its own subject: the pathway's sequence counts only the events it folds.
            subject=Subject(type="urgent-alert", id=alert.id),
            actor=Actor(user_id="coordinator", role="service"),
            correlation_id=current_correlation_id(),
        ),
    )
    session.add(InboxEvent(event_id=envelope.event_id, type=envelope.type))


def rebuild_pathways(session: Session, *, repair: bool = True) -> list[UUID]:
    """Re-fold every patient's pathway from the event store; return the patients whose
    stored projection differed (there should be none), repairing them unless told not to.
    """
    differing: list[UUID] = []
    patients = session.exec(select(StoredEvent.patient_id).distinct()).all()
    for patient_id in patients:
        fresh = msgspec.to_builtins(project(patient_id, stored_events(session, patient_id)))
        row = session.get(PathwayRow, patient_id)
        if row is None or row.document != fresh:
            differing.append(patient_id)
            if repair:
                refresh_pathway(session, patient_id)
    if repair:
        session.commit()
    return differing
