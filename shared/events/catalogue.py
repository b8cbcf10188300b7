"""Typed payloads of every event, by type and schema version.

Payloads carry ids, codes and scores, never names, birth dates, NHS numbers or free
text, so no event can leak who a patient is. A changed payload gets a new version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

ReferralTarget = Literal["ketamine-infusion", "psychology", "pain-mdt"]
ReferralPriority = Literal["routine", "urgent"]
Condition = Literal[
    "fibromyalgia", "neuropathic-pain", "crps", "spinal-pain", "depression", "other"
]


class PatientRegistered(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: UUID


class BaselineScores(msgspec.Struct, frozen=True, kw_only=True):
    phq9_total: int | None = None
    phq9_item9: int | None = None
    pain_nrs: int | None = None


class ReferralReceived(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    priority: ReferralPriority
    conditions: list[Condition]
    referrer_role: str
    prior_treatment_count: int
    received_at: datetime
    baseline: BaselineScores | None = None


class ReferralAccepted(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    priority: ReferralPriority
    conditions: list[Condition]
    accepted_at: datetime
    baseline: BaselineScores | None = None
    # When the referral arrived: waits are measured from it.
    received_at: datetime | None = None


class ReferralRejected(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    rejected_at: datetime


class ReferralInfoRequested(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    requested_at: datetime


class ReferralInfoProvided(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    provided_at: datetime


class ReferralCancelled(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    previous_status: str
    cancelled_at: datetime


class ReferralClosed(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    closed_at: datetime
    # The event that reported the care ended, e.g. therapy.episode.discharged.
    closed_by: str
    outcome: str


CourseCloseReason = Literal["completed", "ineligible", "declined", "stopped", "other"]
DischargeReason = Literal["completed", "declined", "did-not-attend", "moved-away", "other"]


class InfusionCourseClosed(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    referral_id: UUID
    reason: CourseCloseReason
    closed_at: datetime


class TherapyEpisodeDischarged(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    referral_id: UUID
    reason: DischargeReason
    discharged_at: datetime


class InfusionCourseOpened(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    referral_id: UUID
    priority: ReferralPriority
    opened_at: datetime


class InfusionCourseStatusChanged(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    status: Literal["planned", "active", "onhold", "finished", "cancelled"]
    previous_status: str
    changed_at: datetime


class InfusionAssessmentRecorded(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    assessment_id: UUID
    outcome: Literal["eligible", "ineligible", "needs-override"]
    blocked_by: list[str]
    cautions_overridden: list[str]
    pain_nrs: int
    phq9_total: int
    phq9_item9: int
    opioid_mme_per_day: float
    assessed_at: datetime


class InfusionPlanAgreed(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    plan_id: UUID
    indication: Literal["pain", "depression", "both"]
    total_mg: float
    rate_mg_per_h: float
    induction_count: int
    induction_spacing_days: int
    maintenance_interval_days: int | None
    overridden_fields: list[str]
    agreed_at: datetime


class InfusionSessionScheduled(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    session_id: UUID
    number: int
    kind: Literal["induction", "maintenance"]
    scheduled_start: datetime
    scheduled_end: datetime


class InfusionSessionStarted(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    session_id: UUID
    number: int
    started_at: datetime


class InfusionResponse(msgspec.Struct, frozen=True, kw_only=True):
    pain_change_fraction: float | None
    phq9_change_fraction: float | None
    pain_meaningful: bool
    pain_substantial: bool
    phq9_response: bool
    responded: bool


class InfusionSessionCompleted(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    session_id: UUID
    number: int
    kind: Literal["induction", "maintenance"]
    completed_at: datetime
    given_mg: float | None
    pain_before: int | None
    pain_after: int | None
    phq9_total: int | None
    phq9_item9: int | None
    response: InfusionResponse
    completed_sessions: int
    maintenance_due_at: datetime | None


class InfusionSessionEnded(msgspec.Struct, frozen=True, kw_only=True):
    """A session cancelled or abandoned; the reason's words stay in the service."""

    course_id: UUID
    session_id: UUID
    number: int
    previous_status: str
    ended_at: datetime


class InfusionAdverseEventRecorded(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    session_id: UUID
    code: Literal["hypertension", "dissociation", "nausea", "sedation", "other"]
    severity: Literal["mild", "moderate", "severe", "serious"]
    serious: bool
    recorded_at: datetime


class InfusionVitalsOutOfRange(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    session_id: UUID
    phase: Literal["before", "during", "after"]
    systolic: int
    diastolic: int
    heart_rate: int
    spo2: int
    crossed: list[str]
    measured_at: datetime


AppointmentKind = Literal["assessment", "cbt", "review"]


class TherapyEpisodeOpened(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    referral_id: UUID
    priority: ReferralPriority
    referred_at: datetime
    opened_at: datetime


class TherapyEpisodeAssigned(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    clinician_id: str
    assigned_at: datetime


class AppointmentBooked(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    appointment_id: UUID
    kind: AppointmentKind
    mode: Literal["video", "in-person"]
    clinician_id: str
    start: datetime
    end: datetime


class AppointmentRescheduled(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    appointment_id: UUID
    previous_start: datetime
    start: datetime
    end: datetime


class AppointmentStatusChanged(msgspec.Struct, frozen=True, kw_only=True):
    """Checked in, attended, missed, cancelled or corrected: one shape, told by the type."""

    episode_id: UUID
    appointment_id: UUID
    kind: AppointmentKind
    start: datetime
    previous_status: str
    status: str
    attended_treatment: int
    dna_count: int
    cancelled_by: Literal["patient", "clinic"] | None = None


class MeasureRecorded(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    appointment_id: UUID
    instrument: Literal["PHQ-9", "GAD-7", "PEG"]
    total: int
    band: str
    item9: int | None
    recorded_at: datetime
    # PEG's score is the mean of its items (the total is their sum).
    mean: float | None = None


class MeasureRiskFlagged(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    appointment_id: UUID
    item9: int
    recorded_at: datetime


class TherapyDnaThresholdReached(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    dna_count: int
    threshold: int
    reached_at: datetime


class PathwayAlertHandled(msgspec.Struct, frozen=True, kw_only=True):
    """A person acknowledged or resolved an alert; their note stays in the coordinator."""

    alert_id: str
    kind: str
    by_user: str
    by_role: str
    handled_at: datetime


class PathwayAlertRaised(msgspec.Struct, frozen=True, kw_only=True):
    """The coordinator's clock saw a time threshold pass (a wait, an overdue infusion)."""

    kind: str
    subject: str
    crossed_at: datetime


MdtDecision = Literal[
    "continue", "stop-infusions", "start-maintenance", "refer-psychology", "discharge"
]


class MdtReviewRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """The MDT reviewed the pathway; its notes stay in the coordinator."""

    review_id: UUID
    decision: MdtDecision
    attendees: list[str]
    reviewed_by: str
    reviewed_at: datetime
    referral_id: UUID | None = None


CATALOGUE: dict[tuple[str, int], type[msgspec.Struct]] = {
    ("patient.registered", 1): PatientRegistered,
    ("referral.received", 1): ReferralReceived,
    ("referral.accepted", 1): ReferralAccepted,
    ("referral.rejected", 1): ReferralRejected,
    ("referral.info_requested", 1): ReferralInfoRequested,
    ("referral.info_provided", 1): ReferralInfoProvided,
    ("referral.cancelled", 1): ReferralCancelled,
    ("referral.closed", 1): ReferralClosed,
    ("infusion.course.opened", 1): InfusionCourseOpened,
    ("infusion.course.status_changed", 1): InfusionCourseStatusChanged,
    ("infusion.assessment.recorded", 1): InfusionAssessmentRecorded,
    ("infusion.plan.agreed", 1): InfusionPlanAgreed,
    ("infusion.session.scheduled", 1): InfusionSessionScheduled,
    ("infusion.session.started", 1): InfusionSessionStarted,
    ("infusion.session.completed", 1): InfusionSessionCompleted,
    ("infusion.session.cancelled", 1): InfusionSessionEnded,
    ("infusion.session.abandoned", 1): InfusionSessionEnded,
    ("infusion.adverse_event.recorded", 1): InfusionAdverseEventRecorded,
    ("infusion.vitals.out_of_range", 1): InfusionVitalsOutOfRange,
    ("infusion.course.closed", 1): InfusionCourseClosed,
    ("therapy.episode.opened", 1): TherapyEpisodeOpened,
    ("therapy.episode.assigned", 1): TherapyEpisodeAssigned,
    ("appointment.booked", 1): AppointmentBooked,
    ("appointment.rescheduled", 1): AppointmentRescheduled,
    ("appointment.checked_in", 1): AppointmentStatusChanged,
    ("appointment.attended", 1): AppointmentStatusChanged,
    ("appointment.missed", 1): AppointmentStatusChanged,
    ("appointment.cancelled", 1): AppointmentStatusChanged,
    ("appointment.corrected", 1): AppointmentStatusChanged,
    ("measure.recorded", 1): MeasureRecorded,
    ("measure.risk_flagged", 1): MeasureRiskFlagged,
    ("therapy.dna_threshold_reached", 1): TherapyDnaThresholdReached,
    ("therapy.episode.discharged", 1): TherapyEpisodeDischarged,
    ("pathway.alert.acknowledged", 1): PathwayAlertHandled,
    ("pathway.alert.resolved", 1): PathwayAlertHandled,
    ("pathway.alert.raised", 1): PathwayAlertRaised,
    ("mdt.review.recorded", 1): MdtReviewRecorded,
}


def payload_type(event_type: str, schema_version: int) -> type[msgspec.Struct] | None:
    return CATALOGUE.get((event_type, schema_version))
