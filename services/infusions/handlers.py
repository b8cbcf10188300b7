"""Events the infusions service consumes: an accepted ketamine referral opens a course.

Anything else is acknowledged and left alone.
"""

from __future__ import annotations

from sqlmodel import Session

from services.infusions import services
from shared.events import Envelope
from shared.events.catalogue import ReferralAccepted
from shared.uow import UnitOfWork


def handle_event(session: Session, envelope: Envelope) -> None:
    if envelope.type != "referral.accepted":
        return
    accepted = envelope.event()
    assert isinstance(accepted, ReferralAccepted)
    if accepted.target != "ketamine-infusion":
        return
    # No commit here: the consume path commits the inbox row and the course together.
    uow = UnitOfWork(session, service="infusions", actor=envelope.actor)
    services.open_course(accepted, envelope.patient_id, uow, causation_id=str(envelope.event_id))
