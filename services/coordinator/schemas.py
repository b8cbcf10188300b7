"""Response bodies of the coordinator API: the pathway is served as the projection made it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from services.coordinator.domain import MdtReviewStream, Pathway, WaitingState
from shared.events.catalogue import Condition, MdtDecision, ReferralPriority

NameStatus = Literal["shown", "not-asked", "not-permitted", "unavailable"]


class PathwayRead(Pathway, frozen=True, kw_only=True):
    """The pathway as the projection made it, with the patient's name if the referrals
    service (the only keeper of names) lets this reader see it."""

    patient_name: str | None = None
    # shown; not-asked (the reader's role never sees names); not-permitted (the referrals
    # service refused this reader); unavailable (it did not answer).
    name_status: NameStatus = "not-asked"


class PathwaySummary(msgspec.Struct, kw_only=True):
    """One row of the pathway status list: no names, no free text."""

    patient_id: UUID
    stage: str
    stage_since: datetime
    days_in_stage: int
    teams: list[str]
    open_alerts: int
    alerts_by_severity: dict[str, int]
    waiting: WaitingState


class PathwayCounts(msgspec.Struct, kw_only=True):
    """The whole filtered pathway status at once (the list is paged; these are not)."""

    patients: int
    by_stage: dict[str, int]
    open_alerts_by_severity: dict[str, int]
    waits_breached: int


class PathwayPage(msgspec.Struct, kw_only=True):
    items: list[PathwaySummary]
    next_cursor: str | None


class AlertRow(msgspec.Struct, kw_only=True):
    id: str
    patient_id: UUID
    kind: str
    severity: str
    status: str
    owner_role: str
    raised_at: datetime
    due: datetime


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[AlertRow]
    next_cursor: str | None


class AlertHandling(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


Attendee = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class ReviewReferral(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The psychology referral a `refer-psychology` decision makes."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    conditions: Annotated[list[Condition], msgspec.Meta(min_length=1)]
    priority: ReferralPriority = "routine"
    organisation: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "pain MDT"


class ReviewReferralRead(ReviewReferral, kw_only=True):
    """What the referrals service reads to make the MDT's referral: the reason is free
    text, so it stays out of the event and is read here, as a service, audited."""

    referral_id: UUID
    review_id: UUID
    patient_id: UUID
    reviewed_by: str


class ReviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    attendees: Annotated[list[Attendee], msgspec.Meta(min_length=1, max_length=30)]
    decision: MdtDecision
    notes: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    referral: ReviewReferral | None = None


class ReviewRead(MdtReviewStream, frozen=True, kw_only=True):
    patient_id: UUID
    notes: str | None = None


class WorklistItem(msgspec.Struct, kw_only=True):
    patient_id: UUID
    stage: str
    review_due: datetime
    overdue: bool
    severity: str | None
    reason: str
    open_alerts: int


class Worklist(msgspec.Struct, kw_only=True):
    items: list[WorklistItem]
    next_cursor: str | None
