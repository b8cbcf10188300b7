"""The coordinator's clock: time thresholds become `pathway.alert.raised` events.

The fold never reads the clock, so a pathway stays a pure function of its events. This
periodic check is the one place time enters: it asks the rules which thresholds each
open pathway has passed by now and records each new one as an event, which the fold
then turns into an alert (and clears again once later events show the condition gone).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import or_
from sqlmodel import Session, col, select

from services.coordinator import rules
from services.coordinator.domain import Alert, Streams
from services.coordinator.handlers import record_own_event
from services.coordinator.models import PathwayRow
from services.coordinator.rules import Crossing
from shared.clock import now as clinic_now
from shared.db import lock_for_transaction
from shared.events import Actor, Subject, new_event
from shared.events.catalogue import PathwayAlertRaised
from shared.observability import get_logger
from shared.runtime import PeriodicTask, ServiceRuntime

log = get_logger(__name__)

PAGE = 200


def new_crossings(document: dict[str, object], now: datetime) -> list[Crossing]:
    """Thresholds a stored pathway has passed by `now` and not yet raised."""
    streams = msgspec.convert(document["streams"], Streams, strict=False)
    alerts = msgspec.convert(document["alerts"], list[Alert], strict=False)
    return rules.new_crossings(streams, alerts, now)


def raise_crossed(session: Session, patient_id: UUID, now: datetime) -> int:
    """Raise this patient's new crossings, under the patient's lock; returns how many."""
    lock_for_transaction(session, patient_id)
    row = session.get(PathwayRow, patient_id)
    if row is None:
        return 0
    session.refresh(row)  # another worker may have folded an event since we looked
    crossings = new_crossings(row.document, now)
    for crossing in crossings:
        record_own_event(
            session,
            new_event(
                data=PathwayAlertRaised(
                    kind=crossing.kind, subject=crossing.subject, crossed_at=crossing.crossed_at
                ),
                producer="coordinator",
                patient_id=patient_id,
                subject=Subject(type="pathway", id=str(patient_id)),
                actor=Actor(user_id="coordinator-clock", role="service"),
                correlation_id=uuid4().hex,
                occurred_at=now,
            ),
        )
    return len(crossings)


def tick(runtime: ServiceRuntime, now: datetime | None = None) -> int:
    """One look over every open pathway; returns the alerts raised."""
    moment = now or clinic_now()
    raised = 0
    for patient_id in _due_patients(runtime, moment):
        with runtime.sessions() as session:
            count = raise_crossed(session, patient_id, moment)
            session.commit()
        raised += count
    if raised:
        log.info("clock.alerts_raised", count=raised)
    return raised


def _due_patients(runtime: ServiceRuntime, now: datetime) -> Iterator[UUID]:
    """Patients with a threshold to raise, read page by page so no lock is held long.

    Only pathways whose next threshold has come (the index on next_due), or whose next
    one is not known yet (written before next_due was kept), are read and checked."""
    after: UUID | None = None
    due_now = or_(col(PathwayRow.next_due) <= now, col(PathwayRow.next_due).is_(None))
    while True:
        with runtime.sessions() as session:
            # A discharged pathway can still hold an urgent alert that must escalate.
            query = select(PathwayRow).where(
                due_now,
                or_(col(PathwayRow.stage) != "discharged", col(PathwayRow.open_alerts) > 0),
            )
            if after is not None:
                query = query.where(col(PathwayRow.patient_id) > after)
            rows = session.exec(query.order_by(col(PathwayRow.patient_id)).limit(PAGE)).all()
            due = [row.patient_id for row in rows if new_crossings(row.document, now)]
        yield from due
        if len(rows) < PAGE:
            return
        after = rows[-1].patient_id


def pathway_clock(runtime: ServiceRuntime) -> PeriodicTask:
    return PeriodicTask(
        "coordinator-clock",
        runtime.settings.platform.clock_interval_s,
        lambda: tick(runtime),
    )
