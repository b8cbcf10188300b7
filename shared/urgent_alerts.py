"""Urgent alerts still open on a patient's pathway, as the infusions and therapy services
know them (issue 12: "Discharging a patient or closing a course with an open urgent alert
is refused unless the alert is resolved first").

The coordinator owns alerts. It publishes `pathway.urgent_alert.opened` when an urgent
alert first appears and `pathway.alert.resolved` when a person resolves one; each service
that discharges or closes keeps this copy from those events, so its refusal needs no call
to the coordinator and works while the coordinator is down. The copy lags the coordinator
by one delivery: an alert raised a moment ago may not refuse yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlmodel import Field, Session, SQLModel, col, select

from shared.errors import Conflict
from shared.events import Envelope
from shared.events.catalogue import Event, PathwayAlertResolved, PathwayUrgentAlertOpened
from shared.tables import Timestamp
from shared.uow import Reaction, UnitOfWork


class UrgentAlert(SQLModel, table=True):
    __tablename__ = "urgent_alert"

    alert_id: str = Field(primary_key=True, max_length=64)
    patient_id: UUID = Field(index=True)
    kind: str = Field(max_length=40)
    owner_role: str = Field(max_length=30)
    raised_at: datetime = Timestamp()
    resolved_at: datetime | None = Timestamp(default=None)


def opened(session: Session, event: PathwayUrgentAlertOpened, patient_id: UUID) -> None:
    """Keep the alert; a copy already resolved (events crossed on the way) stays so."""
    if session.get(UrgentAlert, event.alert_id) is None:
        session.add(
            UrgentAlert(
                alert_id=event.alert_id,
                patient_id=patient_id,
                kind=event.kind,
                owner_role=event.owner_role,
                raised_at=event.raised_at,
            )
        )


def resolved(session: Session, event: PathwayAlertResolved, patient_id: UUID) -> None:
    # Every resolution is kept, urgent or not: the opened event may still be on its way.
    alert = session.get(UrgentAlert, event.alert_id) or UrgentAlert(
        alert_id=event.alert_id,
        patient_id=patient_id,
        kind=event.kind,
        owner_role=event.by_role,
        raised_at=event.handled_at,
    )
    alert.resolved_at = event.handled_at
    session.add(alert)


def still_open(session: Session, patient_id: UUID) -> Sequence[UrgentAlert]:
    return session.exec(
        select(UrgentAlert)
        .where(UrgentAlert.patient_id == patient_id, col(UrgentAlert.resolved_at).is_(None))
        .order_by(col(UrgentAlert.raised_at))
    ).all()


def refuse_while_open(session: Session, patient_id: UUID, action: str) -> None:
    """A 409 naming each open urgent alert: resolving it in the coordinator (with a note,
    by a role that owns it) is what makes the action acceptable."""
    alerts = still_open(session, patient_id)
    if not alerts:
        return
    kinds = ", ".join(f"{a.kind} (for the {a.owner_role})" for a in alerts)
    raise Conflict(
        f"cannot {action} while an urgent alert is open: {kinds}; resolve it on the "
        "pathway first (POST /api/alerts/{alert_id}/resolve with a note)",
        field="alerts",
        open_urgent_alerts=[{"id": a.alert_id, "kind": a.kind} for a in alerts],
    )


def _opened(event: PathwayUrgentAlertOpened, envelope: Envelope, uow: UnitOfWork) -> None:
    opened(uow.session, event, envelope.patient_id)


def _resolved(event: PathwayAlertResolved, envelope: Envelope, uow: UnitOfWork) -> None:
    resolved(uow.session, event, envelope.patient_id)


# The reactions a discharging or closing service adds to its event handler.
REACTIONS: dict[type[Event], Reaction] = {
    PathwayUrgentAlertOpened: _opened,
    PathwayAlertResolved: _resolved,
}
