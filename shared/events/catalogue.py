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


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """What an event says. Each concrete event is tagged with the type it is published
    as, so building one names its type and reading one gives typed attributes; the tag
    travels as the envelope's ``type``, not inside ``data``."""

    @classmethod
    def event_type(cls) -> str:
        tag = cls.__struct_config__.tag
        if not isinstance(tag, str) or "." not in tag:
            raise TypeError(f"{cls.__name__} is a shape shared by events, not an event")
        return tag


class PatientRegistered(Event, frozen=True, tag="patient.registered"):
    patient_id: UUID


class BaselineScores(msgspec.Struct, frozen=True, kw_only=True):
    phq9_total: int | None = None
    phq9_item9: int | None = None
    pain_nrs: int | None = None


class ReferralEvent(Event, frozen=True):
    """What every referral event starts with: which referral, for which service."""

    referral_id: UUID
    target: ReferralTarget


class ReferralReceived(ReferralEvent, frozen=True, tag="referral.received"):
    priority: ReferralPriority
    conditions: list[Condition]
    referrer_role: str
    prior_treatment_count: int
    received_at: datetime
    baseline: BaselineScores | None = None


class ReferralAccepted(ReferralEvent, frozen=True, tag="referral.accepted"):
    priority: ReferralPriority
    conditions: list[Condition]
    accepted_at: datetime
    baseline: BaselineScores | None = None
    # When the referral arrived: waits are measured from it.
    received_at: datetime | None = None


class ReferralRejected(ReferralEvent, frozen=True, tag="referral.rejected"):
    rejected_at: datetime


class ReferralInfoRequested(ReferralEvent, frozen=True, tag="referral.info_requested"):
    requested_at: datetime


class ReferralInfoProvided(ReferralEvent, frozen=True, tag="referral.info_provided"):
    provided_at: datetime


class ReferralCancelled(ReferralEvent, frozen=True, tag="referral.cancelled"):
    previous_status: str
    cancelled_at: datetime


class ReferralClosed(ReferralEvent, frozen=True, tag="referral.closed"):
    closed_at: datetime
    # The event that reported the care ended, e.g. therapy.episode.discharged.
    closed_by: str
    outcome: str


CourseCloseReason = Literal["completed", "ineligible", "declined", "stopped", "other"]
# The status a course closed for each reason ends in. Part of the event's meaning, so
# the infusions service that closes the course and the coordinator that folds the event
# read it from here.
COURSE_STATUS_AFTER_CLOSING: dict[str, Literal["finished", "cancelled"]] = {
    "completed": "finished",
    "stopped": "finished",
    "ineligible": "cancelled",
    "declined": "cancelled",
    "other": "cancelled",
}
DischargeReason = Literal["completed", "declined", "did-not-attend", "moved-away", "other"]


class InfusionCourseEvent(Event, frozen=True):
    """Every infusion event is about one course (its subject, so its events keep order)."""

    course_id: UUID


class InfusionSessionEvent(InfusionCourseEvent, frozen=True):
    session_id: UUID


class InfusionCourseClosed(InfusionCourseEvent, frozen=True, tag="infusion.course.closed"):
    referral_id: UUID
    reason: CourseCloseReason
    closed_at: datetime


class TherapyEpisodeEvent(Event, frozen=True):
    """Every therapy event is about one episode (its subject, so its events keep order)."""

    episode_id: UUID


class AppointmentEvent(TherapyEpisodeEvent, frozen=True):
    appointment_id: UUID


class TherapyEpisodeDischarged(TherapyEpisodeEvent, frozen=True, tag="therapy.episode.discharged"):
    referral_id: UUID
    reason: DischargeReason
    discharged_at: datetime


class InfusionCourseOpened(InfusionCourseEvent, frozen=True, tag="infusion.course.opened"):
    referral_id: UUID
    priority: ReferralPriority
    opened_at: datetime


class InfusionCourseStatusChanged(
    InfusionCourseEvent, frozen=True, tag="infusion.course.status_changed"
):
    status: Literal["planned", "active", "onhold", "finished", "cancelled"]
    previous_status: str
    changed_at: datetime


class InfusionAssessmentRecorded(
    InfusionCourseEvent, frozen=True, tag="infusion.assessment.recorded"
):
    assessment_id: UUID
    outcome: Literal["eligible", "ineligible", "needs-override"]
    blocked_by: list[str]
    cautions_overridden: list[str]
    pain_nrs: int
    phq9_total: int
    phq9_item9: int
    opioid_mme_per_day: float
    assessed_at: datetime


class InfusionOpioidUseRecorded(
    InfusionCourseEvent, frozen=True, tag="infusion.opioid_use.recorded"
):
    """Opioid use recorded per medicine at an assessment or a follow-up, as MME per day
    (CLINICAL.md, course rules); the medicines stay in the infusions service."""

    record_id: UUID
    context: Literal["assessment", "follow-up"]
    conversion_table: str
    total_mme_per_day: float
    complete: bool  # every opioid had a factor in the table
    flags: list[str]
    benzodiazepine: bool
    recorded_at: datetime


class InfusionPlanAgreed(InfusionCourseEvent, frozen=True, tag="infusion.plan.agreed"):
    plan_id: UUID
    indication: Literal["pain", "depression", "both"]
    total_mg: float
    rate_mg_per_h: float
    induction_count: int
    induction_spacing_days: int
    maintenance_interval_days: int | None
    overridden_fields: list[str]
    agreed_at: datetime


class InfusionSessionScheduled(InfusionSessionEvent, frozen=True, tag="infusion.session.scheduled"):
    number: int
    kind: Literal["induction", "maintenance"]
    scheduled_start: datetime
    scheduled_end: datetime


class InfusionSessionRedosed(InfusionSessionEvent, frozen=True, tag="infusion.session.redosed"):
    """A new plan re-doses a session not yet started."""

    plan_id: UUID
    planned_mg: float
    previous_mg: float
    redosed_at: datetime


class InfusionSessionStarted(InfusionSessionEvent, frozen=True, tag="infusion.session.started"):
    number: int
    started_at: datetime


class InfusionResponse(msgspec.Struct, frozen=True, kw_only=True):
    pain_change_fraction: float | None
    phq9_change_fraction: float | None
    pain_meaningful: bool
    pain_substantial: bool
    phq9_response: bool
    responded: bool


class InfusionSessionCompleted(InfusionSessionEvent, frozen=True, tag="infusion.session.completed"):
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


class InfusionSessionEnded(InfusionSessionEvent, frozen=True):
    """A session cancelled or abandoned; the reason's words stay in the service."""

    number: int
    previous_status: str
    ended_at: datetime


class InfusionAdverseEventRecorded(
    InfusionSessionEvent, frozen=True, tag="infusion.adverse_event.recorded"
):
    code: Literal["hypertension", "dissociation", "nausea", "sedation", "other"]
    severity: Literal["mild", "moderate", "severe", "serious"]
    serious: bool
    recorded_at: datetime


class InfusionVitalsOutOfRange(
    InfusionSessionEvent, frozen=True, tag="infusion.vitals.out_of_range"
):
    phase: Literal["before", "during", "after"]
    systolic: int
    diastolic: int
    heart_rate: int
    spo2: int
    crossed: list[str]
    measured_at: datetime


AppointmentKind = Literal["assessment", "cbt", "review"]


class TherapyEpisodeOpened(TherapyEpisodeEvent, frozen=True, tag="therapy.episode.opened"):
    referral_id: UUID
    priority: ReferralPriority
    referred_at: datetime
    opened_at: datetime


class TherapyEpisodeAssigned(TherapyEpisodeEvent, frozen=True, tag="therapy.episode.assigned"):
    clinician_id: str
    assigned_at: datetime


class AppointmentBooked(AppointmentEvent, frozen=True, tag="appointment.booked"):
    kind: AppointmentKind
    mode: Literal["video", "in-person"]
    clinician_id: str
    start: datetime
    end: datetime


class AppointmentRescheduled(AppointmentEvent, frozen=True, tag="appointment.rescheduled"):
    previous_start: datetime
    start: datetime
    end: datetime


class AppointmentStatusChanged(AppointmentEvent, frozen=True):
    """Checked in, attended, missed, cancelled or corrected: one shape, told by the type."""

    kind: AppointmentKind
    start: datetime
    previous_status: str
    status: str
    attended_treatment: int
    dna_count: int
    cancelled_by: Literal["patient", "clinic"] | None = None


class MeasureRecorded(AppointmentEvent, frozen=True, tag="measure.recorded"):
    instrument: Literal["PHQ-9", "GAD-7", "PEG"]
    total: int
    band: str
    item9: int | None
    recorded_at: datetime
    # PEG's score is the mean of its items (the total is their sum).
    mean: float | None = None


class MeasureRiskFlagged(AppointmentEvent, frozen=True, tag="measure.risk_flagged"):
    item9: int
    recorded_at: datetime


class TherapyDnaThresholdReached(
    TherapyEpisodeEvent, frozen=True, tag="therapy.dna_threshold_reached"
):
    dna_count: int
    threshold: int
    reached_at: datetime


class PathwayAlertHandled(Event, frozen=True):
    """A person acknowledged or resolved an alert; their note stays in the coordinator."""

    alert_id: str
    kind: str
    by_user: str
    by_role: str
    handled_at: datetime


class PathwayAlertRaised(Event, frozen=True, tag="pathway.alert.raised"):
    """The coordinator's clock saw a time threshold pass (a wait, an overdue infusion)."""

    kind: str
    subject: str
    crossed_at: datetime


class PathwayUrgentAlertOpened(Event, frozen=True, tag="pathway.urgent_alert.opened"):
    """An urgent alert appeared on the pathway: a patient may not be discharged, or a
    course closed, until a person resolves it (issue 12). Its wording stays in the
    coordinator."""

    alert_id: str
    kind: str
    owner_role: str
    raised_at: datetime
    due: datetime


MdtDecision = Literal[
    "continue", "stop-infusions", "start-maintenance", "refer-psychology", "discharge"
]


class MdtReviewRecorded(Event, frozen=True, tag="mdt.review.recorded"):
    """The MDT reviewed the pathway; its notes stay in the coordinator."""

    review_id: UUID
    decision: MdtDecision
    attendees: list[str]
    reviewed_by: str
    reviewed_at: datetime
    referral_id: UUID | None = None


class InfusionMaintenanceOpened(Event, frozen=True, tag="infusion.maintenance.opened"):
    """The MDT's decision to start maintenance, acted on: maintenance falls due."""

    course_id: UUID
    review_id: UUID
    maintenance_due_at: datetime
    opened_at: datetime


class InfusionSessionCancelled(InfusionSessionEnded, frozen=True, tag="infusion.session.cancelled"):
    pass


class InfusionSessionAbandoned(InfusionSessionEnded, frozen=True, tag="infusion.session.abandoned"):
    # The dose an infusion stopped early had given (None: not started, or not recorded).
    given_mg: float | None = None


class AppointmentCheckedIn(AppointmentStatusChanged, frozen=True, tag="appointment.checked_in"):
    pass


class AppointmentAttended(AppointmentStatusChanged, frozen=True, tag="appointment.attended"):
    pass


class AppointmentMissed(AppointmentStatusChanged, frozen=True, tag="appointment.missed"):
    pass


class AppointmentCancelled(AppointmentStatusChanged, frozen=True, tag="appointment.cancelled"):
    pass


class AppointmentCorrected(AppointmentStatusChanged, frozen=True, tag="appointment.corrected"):
    pass


class PathwayAlertAcknowledged(PathwayAlertHandled, frozen=True, tag="pathway.alert.acknowledged"):
    pass


class PathwayAlertResolved(PathwayAlertHandled, frozen=True, tag="pathway.alert.resolved"):
    pass


# Every event, by type and schema version (a changed payload gets a new version).
EVENTS: tuple[type[Event], ...] = (
    PatientRegistered,
    ReferralReceived,
    ReferralAccepted,
    ReferralRejected,
    ReferralInfoRequested,
    ReferralInfoProvided,
    ReferralCancelled,
    ReferralClosed,
    InfusionCourseOpened,
    InfusionCourseStatusChanged,
    InfusionAssessmentRecorded,
    InfusionOpioidUseRecorded,
    InfusionPlanAgreed,
    InfusionSessionScheduled,
    InfusionSessionRedosed,
    InfusionSessionStarted,
    InfusionSessionCompleted,
    InfusionSessionCancelled,
    InfusionSessionAbandoned,
    InfusionAdverseEventRecorded,
    InfusionVitalsOutOfRange,
    InfusionCourseClosed,
    InfusionMaintenanceOpened,
    TherapyEpisodeOpened,
    TherapyEpisodeAssigned,
    AppointmentBooked,
    AppointmentRescheduled,
    AppointmentCheckedIn,
    AppointmentAttended,
    AppointmentMissed,
    AppointmentCancelled,
    AppointmentCorrected,
    MeasureRecorded,
    MeasureRiskFlagged,
    TherapyDnaThresholdReached,
    TherapyEpisodeDischarged,
    PathwayAlertAcknowledged,
    PathwayAlertResolved,
    PathwayAlertRaised,
    PathwayUrgentAlertOpened,
    MdtReviewRecorded,
)
CATALOGUE: dict[tuple[str, int], type[Event]] = {(e.event_type(), 1): e for e in EVENTS}


def payload_type(event_type: str, schema_version: int) -> type[Event] | None:
    return CATALOGUE.get((event_type, schema_version))
