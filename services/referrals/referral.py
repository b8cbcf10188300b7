"""The referral aggregate: each step of a referral's life, decided here and nowhere else.

Pure: a step takes the referral row, who acts and the time, moves the status through
the one state machine, and returns the history row and the event the step causes. The
command (services.py) or the event handler (handlers.py) stores them in its unit of
work; neither decides anything about a referral itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict
from uuid import UUID

from services.referrals import domain
from services.referrals.models import Referral, ReferralNote, ReferralTransition
from shared.domain import IllegalTransition, as_declared
from shared.events import Actor, Subject
from shared.events.catalogue import (
    BaselineScores,
    Condition,
    Event,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralInfoProvided,
    ReferralInfoRequested,
    ReferralPriority,
    ReferralReceived,
    ReferralRejected,
    ReferralTarget,
)
from shared.measures import Score


@dataclass(frozen=True)
class Step:
    """What one step wrote to the referral's history and the event it causes."""

    transition: ReferralTransition
    event: Event


def subject(referral: Referral) -> Subject:
    return Subject(type="referral", id=str(referral.id))


def refer(
    referral: Referral, by: Actor, now: datetime, attachments: list[tuple[str, str]]
) -> tuple[Step, list[ReferralNote]]:
    """A new referral arrives: received, with the letters the referrer attached."""
    if referral.status != domain.RECEIVED:
        raise IllegalTransition("referral", referral.status, "refer")
    referral.status_changed_at = now
    referral.received_at = now
    transition = _history(referral, "refer", None, domain.RECEIVED, by, now, None)
    notes = [
        ReferralNote(
            referral_id=referral.id,
            title=title,
            text=text,
            by_user=by.user_id,
            by_role=by.role,
            at=now,
        )
        for title, text in attachments
    ]
    event = ReferralReceived(
        **_about(referral),
        priority=as_declared(ReferralPriority, referral.priority),
        conditions=as_declared(list[Condition], referral.conditions),
        referrer_role=str(referral.referrer["role"]),
        prior_treatment_count=len(referral.prior_treatments),
        received_at=now,
        baseline=baseline_scores(referral.baseline),
    )
    return Step(transition, event), notes


def triage(
    referral: Referral,
    decision: str,
    reason: str | None,
    question: str | None,
    by: Actor,
    now: datetime,
) -> Step:
    """Accept, reject (with a reason) or ask the referrer a question."""
    domain.check_triage(decision, reason, question)
    note = question if decision == "request-info" else reason
    transition = _move(referral, decision, by, now, note)
    event: Event
    if decision == "accept":
        event = ReferralAccepted(
            **_about(referral),
            priority=as_declared(ReferralPriority, referral.priority),
            conditions=as_declared(list[Condition], referral.conditions),
            accepted_at=now,
            baseline=baseline_scores(referral.baseline),
            received_at=referral.received_at,
        )
    elif decision == "reject":
        event = ReferralRejected(**_about(referral), rejected_at=now)
    else:
        event = ReferralInfoRequested(**_about(referral), requested_at=now)
    return Step(transition, event)


def provide_info(referral: Referral, answer: str, by: Actor, now: datetime) -> Step:
    """The referrer answers the question: the referral returns to the inbox."""
    transition = _move(referral, "provide-info", by, now, answer)
    return Step(transition, ReferralInfoProvided(**_about(referral), provided_at=now))


def cancel(referral: Referral, reason: str | None, by: Actor, now: datetime) -> Step:
    """The referrer withdraws the referral."""
    previous = referral.status
    transition = _move(referral, "cancel", by, now, reason)
    return Step(
        transition,
        ReferralCancelled(**_about(referral), previous_status=previous, cancelled_at=now),
    )


def close(referral: Referral, ended_by: str, outcome: str, by: Actor, now: datetime) -> Step | None:
    """The receiving service reported the care ended: the loop closes for the referrer.

    None when there is nothing to close: already closed, or cancelled (the referrer's
    decision stays on record even if the care ended anyway).
    """
    if not domain.REFERRAL.allows(referral.status, "close"):
        return None
    transition = _move(referral, "close", by, now, f"{ended_by}: {outcome}")
    return Step(
        transition,
        ReferralClosed(**_about(referral), closed_at=now, closed_by=ended_by, outcome=outcome),
    )


def stored_baseline(phq9: Score | None, pain_nrs: int | None) -> dict[str, Any]:
    """The referral's baseline as stored: the items and what the server scored."""
    return {
        "phq9_items": list(phq9.items) if phq9 else None,
        "phq9_total": phq9.total if phq9 else None,
        "phq9_band": phq9.band if phq9 else None,
        "pain_nrs": pain_nrs,
    }


def baseline_scores(stored: dict[str, Any] | None) -> BaselineScores | None:
    """What of the baseline travels in events: scores, never the answers' words."""
    if stored is None:
        return None
    items = stored.get("phq9_items")
    return BaselineScores(
        phq9_total=stored.get("phq9_total"),
        phq9_item9=items[8] if items else None,
        pain_nrs=stored.get("pain_nrs"),
    )


def _move(
    referral: Referral, action: str, by: Actor, now: datetime, note: str | None
) -> ReferralTransition:
    new_status = domain.REFERRAL.next_status(referral.status, action)
    transition = _history(referral, action, referral.status, new_status, by, now, note)
    referral.status = new_status
    referral.status_changed_at = now
    return transition


def _history(
    referral: Referral,
    action: str,
    from_status: str | None,
    to_status: str,
    by: Actor,
    now: datetime,
    note: str | None,
) -> ReferralTransition:
    return ReferralTransition(
        referral_id=referral.id,
        action=action,
        from_status=from_status,
        to_status=to_status,
        by_user=by.user_id,
        by_role=by.role,
        at=now,
        note=note,
    )


class _AboutReferral(TypedDict):
    """What every referral event says first (the catalogue's ReferralEvent)."""

    referral_id: UUID
    target: ReferralTarget


def _about(referral: Referral) -> _AboutReferral:
    return {"referral_id": referral.id, "target": as_declared(ReferralTarget, referral.target)}
