"""Events the infusions service consumes: an accepted ketamine referral opens a course.

Anything else is acknowledged and left alone.
"""

from __future__ import annotations

from services.infusions import services
from shared.events import Envelope
from shared.events.catalogue import ReferralAccepted
from shared.uow import UnitOfWork, event_handler


def _referral_accepted(accepted: ReferralAccepted, envelope: Envelope, uow: UnitOfWork) -> None:
    if accepted.target == "ketamine-infusion":
        services.open_course(
            accepted, envelope.patient_id, uow, causation_id=str(envelope.event_id)
        )


handle_event = event_handler("infusions", {ReferralAccepted: _referral_accepted})
