"""Events the referrals service consumes: the receiving service says care has ended.

An infusion course closed or a therapy episode discharged closes the referral that
opened it, which closes the loop for the referrer. Anything else is acknowledged.
"""

from __future__ import annotations

from sqlmodel import Session

from services.referrals import services
from shared.events import Actor, Envelope
from shared.events.catalogue import InfusionCourseClosed, TherapyEpisodeDischarged
from shared.observability import get_logger
from shared.uow import UnitOfWork

log = get_logger(__name__)


def handle_event(session: Session, envelope: Envelope) -> None:
    if envelope.type not in ("infusion.course.closed", "therapy.episode.discharged"):
        return
    event = envelope.event()
    assert isinstance(event, InfusionCourseClosed | TherapyEpisodeDischarged)
    # The event is published as the person who ended the care; the history names the
    # service that reported it.
    uow = UnitOfWork(session, service="referrals", actor=envelope.actor)
    step = services.close(
        event.referral_id,
        envelope.type,
        event.reason,
        Actor(user_id=envelope.producer, role="service"),
        uow,
        causation_id=str(envelope.event_id),
    )
    if step is None:
        # No such referral, or already closed or cancelled (the referrer's decision
        # stays on record even if the care ended anyway).
        log.info("referral.close_ignored", event_id=str(envelope.event_id))
