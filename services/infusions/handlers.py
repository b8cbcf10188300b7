"""Events the infusions service consumes: an accepted ketamine referral opens a course;
an MDT review's decision stops, continues or moves the course to maintenance; the
coordinator's urgent alerts, opened and resolved, are kept to refuse closing a course.

Anything else is acknowledged and left alone. Consuming is idempotent: the inbox row,
written in the same transaction, stops a redelivery, and each effect is one that a
second delivery finds already done.
"""

from __future__ import annotations

from services.infusions import services
from shared import urgent_alerts
from shared.events import Envelope
from shared.events.catalogue import MdtReviewRecorded, ReferralAccepted
from shared.uow import UnitOfWork, event_handler


def _referral_accepted(accepted: ReferralAccepted, envelope: Envelope, uow: UnitOfWork) -> None:
    if accepted.target == "ketamine-infusion":
        services.open_course(
            accepted, envelope.patient_id, uow, causation_id=str(envelope.event_id)
        )


def _review_recorded(review: MdtReviewRecorded, envelope: Envelope, uow: UnitOfWork) -> None:
    services.act_on_review(review, envelope.patient_id, uow, str(envelope.event_id))


handle_event = event_handler(
    "infusions",
    {
        ReferralAccepted: _referral_accepted,
        MdtReviewRecorded: _review_recorded,
        **urgent_alerts.REACTIONS,
    },
)
