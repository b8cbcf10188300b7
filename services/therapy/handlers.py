"""Events the therapy service consumes: an accepted psychology referral opens an episode.

Anything else is acknowledged and left alone.
"""

from __future__ import annotations

from sqlmodel import Session

from services.therapy import services
from shared.events import Envelope
from shared.events.catalogue import ReferralAccepted
from shared.uow import UnitOfWork


def handle_event(session: Session, envelope: Envelope) -> None:
    if envelope.type != "referral.accepted":
        return
    accepted = envelope.event()
    assert isinstance(accepted, ReferralAccepted)
    if accepted.target != "psychology":
        return
    # No commit here: the consume path commits the inbox row and the episode together.
    uow = UnitOfWork(session, service="therapy", actor=envelope.actor)
    services.open_episode(
        accepted,
        envelope.patient_id,
        # Waits are measured from when the referral arrived, if the event says.
        accepted.received_at or envelope.occurred_at,
        uow,
        causation_id=str(envelope.event_id),
    )
