"""Events the referrals service consumes: the receiving service says care has ended,
or the MDT decided to refer.

An infusion course closed or a therapy episode discharged closes the referral that
opened it, which closes the loop for the referrer. An MDT review that decided to refer
to psychology makes the referral it named (issue 16). Anything else is acknowledged.
"""

from __future__ import annotations

from services.referrals import services
from shared.events import Actor, Envelope
from shared.events.catalogue import (
    InfusionCourseClosed,
    MdtReviewRecorded,
    TherapyEpisodeDischarged,
)
from shared.observability import get_logger
from shared.uow import UnitOfWork, event_handler

log = get_logger(__name__)


def _care_ended(
    event: InfusionCourseClosed | TherapyEpisodeDischarged, envelope: Envelope, uow: UnitOfWork
) -> None:
    # The event is published as the person who ended the care; the history names the
    # service that reported it.
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


def _review_recorded(review: MdtReviewRecorded, envelope: Envelope, uow: UnitOfWork) -> None:
    made = services.refer_for_review(review, uow)
    if made is not None:
        log.info("referral.made_for_review", referral_id=str(made.id))


handle_event = event_handler(
    "referrals",
    {
        InfusionCourseClosed: _care_ended,
        TherapyEpisodeDischarged: _care_ended,
        MdtReviewRecorded: _review_recorded,
    },
)
