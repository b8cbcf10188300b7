"""Events the infusions service consumes: an accepted ketamine referral opens a course;
an MDT review's decision stops, continues or moves the course to maintenance.

Anything else is acknowledged and left alone. Consuming is idempotent: the inbox row,
written in the same transaction, stops a redelivery, and each effect is one that a
second delivery finds already done.
"""

from __future__ import annotations

from sqlmodel import Session

from services.infusions import services
from shared.events import Envelope
from shared.events.catalogue import MdtReviewRecorded, ReferralAccepted
from shared.uow import UnitOfWork


def handle_event(session: Session, envelope: Envelope) -> None:
    # No commit here: the consume path commits the inbox row and the effect together.
    if envelope.type == "referral.accepted":
        accepted = envelope.event()
        assert isinstance(accepted, ReferralAccepted)
        if accepted.target != "ketamine-infusion":
            return
        uow = UnitOfWork(session, service="infusions", actor=envelope.actor)
        services.open_course(
            accepted, envelope.patient_id, uow, causation_id=str(envelope.event_id)
        )
    elif envelope.type == "mdt.review.recorded":
        review = envelope.event()
        assert isinstance(review, MdtReviewRecorded)
        uow = UnitOfWork(session, service="infusions", actor=envelope.actor)
        services.act_on_review(review, envelope.patient_id, uow, str(envelope.event_id))
