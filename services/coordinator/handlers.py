"""The coordinator consumes every event: store it, then fold it into the patient's
pathway (applied to the fold of the events before it when it comes after them all,
re-folded from the store when it arrived late: DESIGN.md, order-insensitive projection).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import bindparam, delete, insert, tuple_, update
from sqlmodel import Session, select

from services.coordinator.domain import SEVERITY_RANK, Alert, Pathway
from services.coordinator.models import PathwayAlert, PathwayRow, StoredEvent
from services.coordinator.projection import (
    Fold,
    active_teams,
    finish,
    fold_history,
    place,
    project,
)
from services.coordinator.rules import next_due
from shared.db import lock_for_transaction, table_of
from shared.events import Actor, Envelope, Subject, decode_envelope, encode_envelope, new_event
from shared.events.catalogue import PathwayUrgentAlertOpened
from shared.observability import bind_correlation_id, current_correlation_id, get_logger
from shared.outbox import add_event
from shared.policy import ClinicalPolicy, clinical_policy
from shared.tables import InboxEvent, utcnow

log = get_logger(__name__)

URGENT = ("urgent", "critical")

# The hot path writes with Core statements, a few for a whole batch of events, instead
# of an ORM flush per row (issue 15: the ORM's unit of work was most of an event's CPU).
STORE = table_of(StoredEvent)
PATHWAY = table_of(PathwayRow)
ALERTS = table_of(PathwayAlert)


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


def handle_events(session: Session, envelopes: Sequence[Envelope]) -> None:
    """Store the events and fold each patient's into their pathway, in this transaction:
    a few statements for the lot, however many events and patients (issue 15: the
    queue's deep end is consumed several events at a time, shared.messaging)."""
    arrived: dict[UUID, list[Envelope]] = {}
    for envelope in envelopes:
        arrived.setdefault(envelope.patient_id, []).append(envelope)
    # Two workers folding one patient's events at once would each miss the other's
    # uncommitted event and the later commit would win with a pathway missing one.
    lock_for_transaction(session, *arrived)
    # The consumer's inbox has already turned a redelivery into a no-op.
    session.execute(insert(STORE), [_stored(envelope) for envelope in envelopes])
    _note_gaps(session, envelopes)
    _refresh(session, arrived)


def handle_event(session: Session, envelope: Envelope) -> None:
    handle_events(session, [envelope])


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
    # The fold writes with Core statements past the session: the command's own rows go
    # first, and the pathway and alerts it loaded hold no unwritten change when expired.
    session.flush()
    handle_event(session, envelope)


def _note_gaps(session: Session, envelopes: Sequence[Envelope]) -> None:
    """An aggregate's sequence with a hole: the feed catch-up will fill it; say so."""
    after = [e for e in envelopes if e.sequence > 1]
    if not after:
        return
    columns = (STORE.c.subject_type, STORE.c.subject_id, STORE.c.sequence)
    wanted = [(e.subject.type, e.subject.id, e.sequence - 1) for e in after]
    found = {
        tuple(row) for row in session.execute(select(*columns).where(tuple_(*columns).in_(wanted)))
    }
    for envelope, previous in zip(after, wanted, strict=True):
        if previous not in found:
            log.info(
                "pathway.gap_detected",
                producer=envelope.producer,
                subject_type=envelope.subject.type,
                sequence=envelope.sequence,
            )


def _stored(envelope: Envelope) -> dict[str, Any]:
    return {
        "event_id": envelope.event_id,
        "patient_id": envelope.patient_id,
        "type": envelope.type,
        "schema_version": envelope.schema_version,
        "producer": envelope.producer,
        "subject_type": envelope.subject.type,
        "subject_id": envelope.subject.id,
        "sequence": envelope.sequence,
        "occurred_at": envelope.occurred_at,
        "received_at": utcnow(),
        "envelope": encode_envelope(envelope),
    }


def stored_events(session: Session, patient_id: UUID) -> list[Envelope]:
    rows = session.execute(select(STORE.c.envelope).where(STORE.c.patient_id == patient_id))
    return [decode_envelope(envelope, allow_unknown=True) for envelope in rows.scalars()]


def refresh_pathway(session: Session, patient_id: UUID) -> None:
    """Fold the patient's whole stored history again and write the pathway."""
    _refresh(session, {patient_id: []})


def _refresh(session: Session, arrived: dict[UUID, list[Envelope]]) -> None:
    """Fold each patient's pathway and write it, with its alert rows. The events that
    ``arrived`` (just stored) are applied to this process's fold of the events before
    them when that fold is what the stored pathway was written from and they come after
    all of it; otherwise the patient's whole history is folded again from the store."""
    patients = list(arrived)
    written = _fold_ids(session, patients)
    alerts = _alert_rows(session, patients)
    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    alert_writes = _AlertWrites()
    for patient_id, events in arrived.items():
        folded_by = written.get(patient_id)
        fold = _fold_with(session, patient_id, events, folded_by)
        pathway = finish(fold)
        fold_id = uuid4()
        row = _pathway_columns(pathway, fold_id)
        if patient_id in written:
            changed_rows.append(row)
        else:
            new_rows.append(row)
        # The urgent alert's announcement carries the correlation of what raised it.
        if events:
            bind_correlation_id(events[-1].correlation_id)
        alert_writes.compare(session, patient_id, pathway.alerts, alerts.get(patient_id, {}))
        FOLDS.keep(patient_id, fold_id, fold)
    if new_rows:
        session.execute(insert(PATHWAY), new_rows)
    if changed_rows:
        session.execute(
            update(PATHWAY).where(PATHWAY.c.patient_id == bindparam("pathway_id")),
            [{"pathway_id": row.pop("patient_id"), **row} for row in changed_rows],
        )
    alert_writes.write(session)
    _forget_loaded(session, set(patients))
    session.info["pathway_written"] = True  # the live streams' notice (live.py)


def _fold_with(
    session: Session, patient_id: UUID, arrived: list[Envelope], folded_by: UUID | None
) -> Fold:
    # Taken out of the cache while it is carried on: a fold that fails half way (or a
    # transaction that rolls back) is never found again.
    kept = FOLDS.take(patient_id)
    if (
        arrived
        and kept is not None
        and kept.policy is clinical_policy()  # its alerts were raised by the same rules
        # Another process (or a rebuild) may have folded this pathway since.
        and kept.fold_id == folded_by
    ):
        for envelope in sorted(arrived, key=place):
            if not kept.fold.follows(envelope):
                break
            kept.fold.apply(envelope)
        else:
            return kept.fold
    return fold_history(patient_id, stored_events(session, patient_id))


def _fold_ids(session: Session, patients: list[UUID]) -> dict[UUID, UUID | None]:
    """Which of the patients have a stored pathway, and the fold each was written from:
    read from the database itself, under the patients' locks (the last committed
    write, or this transaction's)."""
    rows = session.execute(
        select(PATHWAY.c.patient_id, PATHWAY.c.fold_id).where(PATHWAY.c.patient_id.in_(patients))
    )
    return {patient_id: fold_id for patient_id, fold_id in rows}


def _pathway_columns(pathway: Pathway, fold_id: UUID) -> dict[str, Any]:
    return {
        "patient_id": pathway.patient_id,
        "teams": "," + "".join(f"{team}," for team in active_teams(pathway)),
        "stage": pathway.stage,
        "stage_since": pathway.stage_since,
        "open_alerts": sum(1 for alert in pathway.alerts if alert.status != "resolved"),
        "event_count": pathway.event_count,
        "review_due": pathway.review_due.due if pathway.review_due else None,
        "review_rank": pathway.review_due.rank if pathway.review_due else None,
        "next_due": next_due(pathway.streams, pathway.alerts),
        # The engine's JSON serializer is msgspec's, which writes the Struct as it stands.
        "document": pathway,
        "fold_id": fold_id,
        "updated_at": utcnow(),
    }


ALERT_COLUMNS = ("kind", "severity", "severity_rank", "status", "owner_role", "raised_at", "due")


def _alert_rows(session: Session, patients: list[UUID]) -> dict[UUID, dict[str, tuple[Any, ...]]]:
    """The patients' stored alert rows: patient → alert id → the columns' values."""
    columns = [ALERTS.c[name] for name in ALERT_COLUMNS]
    rows = session.execute(
        select(ALERTS.c.patient_id, ALERTS.c.id, *columns).where(ALERTS.c.patient_id.in_(patients))
    )
    stored: dict[UUID, dict[str, tuple[Any, ...]]] = {}
    for patient_id, alert_id, *values in rows:
        stored.setdefault(patient_id, {})[alert_id] = tuple(values)
    return stored


@dataclass
class _AlertWrites:
    """The pathways' alerts as rows: new ones inserted, changed ones updated, ones the
    fold no longer has deleted; an unchanged row is not written."""

    inserted: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def compare(
        self,
        session: Session,
        patient_id: UUID,
        alerts: list[Alert],
        stored: dict[str, tuple[Any, ...]],
    ) -> None:
        stored = dict(stored)
        for alert in alerts:
            columns = _alert_columns(alert)
            before = stored.pop(alert.id, None)
            if before is None:
                self.inserted.append({"id": alert.id, "patient_id": patient_id, **columns})
                if alert.severity in URGENT and alert.status != "resolved":
                    _announce_urgent(session, patient_id, alert)
            elif before != tuple(columns[name] for name in ALERT_COLUMNS):
                self.updated.append({"alert_id": alert.id, **columns})
        self.deleted.extend(stored)

    def write(self, session: Session) -> None:
        if self.inserted:
            session.execute(insert(ALERTS), self.inserted)
        if self.updated:
            session.execute(
                update(ALERTS).where(ALERTS.c.id == bindparam("alert_id")), self.updated
            )
        if self.deleted:
            session.execute(delete(ALERTS).where(ALERTS.c.id.in_(self.deleted)))


def _forget_loaded(session: Session, patients: set[UUID]) -> None:
    """The rows were written past the session's objects: a pathway or alert it loaded
    before (an API's command) is read again on its next use."""
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, PathwayRow | PathwayAlert) and loaded.patient_id in patients:
            session.expire(loaded)


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
