"""Events the therapy service consumes: an accepted psychology referral opens an episode;
the coordinator's urgent alerts, opened and resolved, are kept to refuse a discharge.

Anything else is acknowledged and left alone.
"""

from __future__ import annotations

from services.therapy import services
from shared import urgent_alerts
from shared.events import Envelope
from shared.events.catalogue import ReferralAccepted
from shared.uow import UnitOfWork, event_handler


def _referral_accepted(accepted: ReferralAccepted, envelope: Envelope, uow: UnitOfWork) -> None:
    if accepted.target != "psychology":
        return
    # Waits are measured from when the referral arrived, if the event says.
    referred_at = accepted.received_at or envelope.occurred_at
    services.open_episode(
        accepted, envelope.patient_id, referred_at, uow, causation_id=str(envelope.event_id)
    )


handle_event = event_handler(
    "therapy", {ReferralAccepted: _referral_accepted, **urgent_alerts.REACTIONS}
)
