"""The pathway and its parts, as values (DESIGN.md, "Pathway model")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

Stage = Literal[
    "registered",
    "referred",
    "triaged",
    "assessment",
    "induction",
    "maintenance",
    "follow-up",
    "discharged",
]
# "critical" is an urgent alert nobody acted on by its due time, escalated to the MDT.
Severity = Literal["info", "warning", "urgent", "critical"]
# Who acts, as a role of the token (referrer, psychologist, infusion-clinician, mdt).
OwnerRole = Literal["referrer", "psychologist", "infusion-clinician", "mdt", "admin"]
AlertStatus = Literal["open", "acknowledged", "resolved"]

SEVERITY_RANK: dict[str, int] = {"critical": -1, "urgent": 0, "warning": 1, "info": 2}
WaitingState = Literal["within", "at-risk", "breached"]


def waiting_state(open_kinds: set[str]) -> WaitingState:
    """A pathway's wait as its open alerts say: a breach, a wait near its standard or an
    urgent triage overdue (at risk), or within."""
    if "waiting-breach" in open_kinds:
        return "breached"
    if open_kinds & {"waiting-time", "triage-overdue"}:
        return "at-risk"
    return "within"


ROUTINE_RANK = 3  # a routine MDT review, after every alert's severity
URGENT: tuple[str, ...] = ("urgent", "critical")

# The role that triages and treats each team's referrals.
ROLE_OF_TARGET: dict[str, OwnerRole] = {
    "ketamine-infusion": "infusion-clinician",
    "psychology": "psychologist",
    "pain-mdt": "mdt",
}


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    event_id: UUID
    type: str
    occurred_at: datetime
    producer: str
    subject_type: str
    subject_id: str
    summary: str


class ReferralStream(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    target: str
    priority: str
    status: str
    received_at: datetime
    # When the referrer last answered a triage question: the team's triage time runs
    # again from then (local policy), so an overdue triage can be raised again.
    answered_at: datetime | None = None

    @property
    def triage_from(self) -> datetime:
        return self.answered_at or self.received_at


class MeasurePoint(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    score: float
    source: str


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    id: str = ""  # deterministic: the fold names it from the patient, kind and time
    kind: str
    severity: Severity
    status: AlertStatus
    reason: str
    owner_role: OwnerRole
    due: datetime
    raised_at: datetime
    source: str  # the CLINICAL.md rule it implements
    # What a time-based alert is about (a referral or course id), and when the fold saw
    # its condition clear, which resolves it without anyone's action.
    subject: str | None = None
    cleared_at: datetime | None = None


class NextAction(msgspec.Struct, frozen=True, kw_only=True):
    action: str
    owner_role: OwnerRole
    due: datetime


class InfusionCourseStream(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    opened_at: datetime
    eligibility: str | None = None
    induction_count: int | None = None
    maintenance_interval_days: int | None = None
    sessions_completed: int = 0
    last_response: dict[str, object] | None = None
    maintenance_due_at: datetime | None = None
    dose_overridden: bool = False
    first_session_at: datetime | None = None


class OpioidUseSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The latest opioid use recorded (CLINICAL.md, course rules); the trend is the
    pathway's `opioid_mme` measure."""

    total_mme_per_day: float
    flags: list[str]
    complete: bool
    benzodiazepine: bool
    conversion_table: str
    context: str
    recorded_at: datetime


class TherapyEpisodeStream(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    referred_at: datetime
    clinician_id: str | None = None
    attended_treatment: int = 0
    dna_count: int = 0
    discharge_reason: str | None = None
    # The first attended treatment appointment: psychology's wait ends there.
    first_treatment_at: datetime | None = None


class MeasureOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """From the first score to the last (CLINICAL.md, "Change that matters")."""

    first: float
    last: float
    change: float
    at_caseness_first: bool | None = None
    at_caseness_last: bool | None = None
    reliable_improvement: bool = False
    reliable_deterioration: bool = False
    recovered: bool | None = None
    response: bool | None = None
    meaningful_relief: bool | None = None
    substantial_relief: bool | None = None


class MdtReviewStream(msgspec.Struct, frozen=True, kw_only=True):
    """A review of the pathway by the MDT; its notes stay in the coordinator's table."""

    id: str
    reviewed_at: datetime
    decision: str
    attendees: list[str]
    reviewed_by: str
    referral_id: str | None = None


class Streams(msgspec.Struct, frozen=True, kw_only=True):
    referrals: list[ReferralStream]
    infusion_course: InfusionCourseStream | None = None
    therapy_episode: TherapyEpisodeStream | None = None
    mdt_reviews: list[MdtReviewStream] = msgspec.field(default_factory=list)


class ReviewDue(msgspec.Struct, frozen=True, kw_only=True):
    """Why and by when the MDT should review the pathway; severity None is routine."""

    due: datetime
    reason: str
    severity: Severity | None = None

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity] if self.severity else ROUTINE_RANK


class Pathway(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: UUID
    stage: Stage
    stage_since: datetime
    streams: Streams
    timeline: list[TimelineEntry]
    measures: dict[str, list[MeasurePoint]]
    alerts: list[Alert]
    next_actions: list[NextAction]
    event_count: int
    last_event_at: datetime
    outcomes: dict[str, MeasureOutcome] = msgspec.field(default_factory=dict)
    review_due: ReviewDue | None = None
    opioid_use: OpioidUseSummary | None = None
