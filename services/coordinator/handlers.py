"""The coordinator consumes every event: store it, then re-fold that patient's pathway."""

from __future__ import annotations

from uuid import UUID

import msgspec
from sqlmodel import Session, select

from services.coordinator.domain import SEVERITY_RANK, Alert
from services.coordinator.models import PathwayAlert, PathwayRow, StoredEvent
from services.coordinator.projection import active_teams, project
from shared.db import lock_for_transaction
from shared.events import Actor, Envelope, Subject, decode_envelope, encode_envelope, new_event
from shared.events.catalogue import PathwayUrgentAlertOpened
from shared.observability import current_correlation_id, get_logger
from shared.outbox import add_event
from shared.tables import InboxEvent, utcnow

log = get_logger(__name__)

URGENT = ("urgent", "critical")


def handle_event(session: Session, envelope: Envelope) -> None:
    # Two workers folding one patient's events at once would each miss the other's
    # uncommitted event and the later commit would win with a pathway missing one.
    lock_for_transaction(session, envelope.patient_id)
    # The consumer's inbox has already turned a redelivery into a no-op.
    session.add(_stored(envelope))
    session.flush()
    _note_gap(session, envelope)
    refresh_pathway(session, envelope.patient_id)


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


def refresh_pathway(session: Session, patient_id: UUID) -> PathwayRow:
    pathway = project(patient_id, stored_events(session, patient_id))
    row = session.get(PathwayRow, patient_id) or PathwayRow(
        patient_id=patient_id,
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
    row.document = msgspec.to_builtins(pathway)
    row.updated_at = utcnow()
    session.add(row)
    known = set()
    for stale in session.exec(select(PathwayAlert).where(PathwayAlert.patient_id == patient_id)):
        known.add(stale.id)
        session.delete(stale)
    session.flush()
    for alert in pathway.alerts:
        session.add(
            PathwayAlert(
                id=alert.id,
                patient_id=patient_id,
                kind=alert.kind,
                severity=alert.severity,
                severity_rank=SEVERITY_RANK[alert.severity],
                status=alert.status,
                owner_role=alert.owner_role,
                raised_at=alert.raised_at,
                due=alert.due,
            )
        )
        if alert.id not in known and alert.severity in URGENT and alert.status != "resolved":
            _announce_urgent(session, patient_id, alert)
    return row


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
