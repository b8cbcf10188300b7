"""Events the referrals service consumes: the receiving service says care has ended.

An infusion course closed or a therapy episode discharged closes the referral that
opened it, which closes the loop for the referrer. Anything else is acknowledged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlmodel import Session

from services.referrals import domain
from services.referrals.models import Referral, ReferralTransition
from shared.events import Envelope, Subject, new_event
from shared.events.catalogue import ReferralClosed
from shared.observability import get_logger
from shared.outbox import add_event

log = get_logger(__name__)

CLOSING_EVENTS = {
    "infusion.course.closed": "reason",
    "therapy.episode.discharged": "reason",
}


def handle_event(session: Session, envelope: Envelope) -> None:
    if envelope.type not in CLOSING_EVENTS:
        return
    referral = session.get(Referral, UUID(str(envelope.data["referral_id"])), with_for_update=True)
    if referral is None:
        log.warning("referral.close_for_unknown_referral", event_id=str(envelope.event_id))
        return
    if referral.status == domain.CLOSED:
        return
    try:
        new_status = domain.next_status(referral.status, "close")
    except domain.IllegalTransition:
        # A cancelled referral whose care ended anyway stays cancelled: the loop is
        # closed already, and the referrer's decision is the one on record.
        log.info("referral.close_ignored", referral_id=str(referral.id), status=referral.status)
        return
    now = datetime.now(UTC)
    outcome = str(envelope.data[CLOSING_EVENTS[envelope.type]])
    session.add(
        ReferralTransition(
            referral_id=referral.id,
            action="close",
            from_status=referral.status,
            to_status=new_status,
            by_user=envelope.producer,
            by_role="service",
            at=now,
            note=f"{envelope.type}: {outcome}",
        )
    )
    referral.status = new_status
    referral.status_changed_at = now
    session.add(referral)
    add_event(
        session,
        new_event(
            type="referral.closed",
            data=ReferralClosed(
                referral_id=referral.id,
                target=referral.target,  # type: ignore[arg-type]
                closed_at=now,
                closed_by=envelope.type,
                outcome=outcome,
            ),
            producer="referrals",
            patient_id=referral.patient_id,
            subject=Subject(type="referral", id=str(referral.id)),
            actor=envelope.actor,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.event_id),
        ),
    )
