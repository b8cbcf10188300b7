"""The pathway as a pure fold over one patient's events.

Sorted by (occurred_at, sequence, event_id), so the same events in any delivery order,
with any duplicates, give the same pathway. Types the fold does not know are kept on
the timeline and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid5

import msgspec

from services.coordinator.domain import (
    ROLE_OF_TARGET,
    SEVERITY_RANK,
    Alert,
    AlertStatus,
    InfusionCourseStream,
    MdtReviewStream,
    MeasureOutcome,
    MeasurePoint,
    NextAction,
    OpioidUseSummary,
    Pathway,
    ReferralStream,
    ReviewDue,
    Stage,
    Streams,
    TherapyEpisodeStream,
    TimelineEntry,
)
from services.coordinator.rules import (
    ESCALATION,
    TIME_KINDS,
    Crossing,
    cleared,
    critical_vitals_alert,
    depression_anxiety_change,
    dna_review_alert,
    escalated_alert,
    escalation_due,
    has_psychology,
    no_response_alert,
    pain_change,
    phq9_item9_alert,
    psychology_suggestion_due,
    reliable_deterioration_alert,
    serious_adverse_event_alert,
    time_alert,
    treatment_due,
    treatment_started,
    triage_due,
    vitals_alert,
    vitals_reason,
)
from shared.events import Envelope, payload_type
from shared.events.catalogue import (
    COURSE_STATUS_AFTER_CLOSING,
    AppointmentAttended,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentCorrected,
    AppointmentMissed,
    AppointmentRescheduled,
    AppointmentStatusChanged,
    BaselineScores,
    Event,
    InfusionAdverseEventRecorded,
    InfusionAssessmentRecorded,
    InfusionCourseClosed,
    InfusionCourseOpened,
    InfusionCourseStatusChanged,
    InfusionOpioidUseRecorded,
    InfusionPlanAgreed,
    InfusionSessionAbandoned,
    InfusionSessionCancelled,
    InfusionSessionCompleted,
    InfusionSessionScheduled,
    InfusionSessionStarted,
    InfusionVitalsOutOfRange,
    MdtReviewRecorded,
    MeasureRecorded,
    MeasureRiskFlagged,
    PathwayAlertAcknowledged,
    PathwayAlertHandled,
    PathwayAlertRaised,
    PathwayAlertResolved,
    PatientRegistered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralInfoProvided,
    ReferralInfoRequested,
    ReferralReceived,
    ReferralRejected,
    TherapyDnaThresholdReached,
    TherapyEpisodeAssigned,
    TherapyEpisodeDischarged,
    TherapyEpisodeOpened,
)
from shared.policy import clinical_policy
from shared.vitals import critical_vitals

E = TypeVar("E", bound=Event)

TEAM_OF_TARGET = {
    "ketamine-infusion": "infusion clinic",
    "psychology": "psychology team",
    "pain-mdt": "pain MDT",
}


def ordered(events: Iterable[Envelope]) -> list[Envelope]:
    unique = {event.event_id: event for event in events}
    return sorted(unique.values(), key=place)


def place(envelope: Envelope) -> tuple[datetime, int, str]:
    """Where an event stands in the fold: by when it happened, then its sequence."""
    return envelope.occurred_at, envelope.sequence, str(envelope.event_id)


def known_event(envelope: Envelope) -> Event | None:
    """What the event says, typed; None for a type the catalogue does not know (yet)."""
    if payload_type(envelope.type, envelope.schema_version) is None:
        return None
    return envelope.event()


def project(patient_id: UUID, events: Iterable[Envelope]) -> Pathway:
    return finish(fold_history(patient_id, events))


def fold_history(patient_id: UUID, events: Iterable[Envelope]) -> Fold:
    """The fold of a whole history, in its order; ``Fold.apply`` carries it on."""
    history = ordered(events)
    if not history:
        raise ValueError("a pathway needs at least one event")
    fold = Fold(patient_id=patient_id, stage_since=history[0].occurred_at)
    for envelope in history:
        fold.apply(envelope)
    return fold


def finish(fold: Fold) -> Pathway:
    """The pathway the fold so far gives. It reads the fold and never changes it, so a
    fold carried on event by event finishes as the fold of all of them at once would."""
    if fold.last is None:
        raise ValueError("a pathway needs at least one event")
    streams = fold.streams()
    next_actions = [a for stream in streams.referrals if (a := _next_action(stream, streams))]
    if (suggestion := _psychology_suggestion(streams)) is not None:
        next_actions.append(suggestion)
    outcomes = _outcomes(fold)
    alerts = [fold.with_status(alert) for alert in fold.alerts]
    review = _review_due(fold, alerts)
    if review is not None:
        next_actions.append(
            NextAction(action=f"MDT review: {review.reason}", owner_role="mdt", due=review.due)
        )
    return Pathway(
        patient_id=fold.patient_id,
        stage=fold.stage,
        stage_since=fold.stage_since,
        streams=streams,
        # Copies: the fold carries on after this pathway is made (handlers keep it).
        timeline=list(fold.timeline),
        measures={name: list(points) for name, points in fold.measures.items()},
        alerts=alerts,
        next_actions=sorted(next_actions, key=lambda action: action.due),
        event_count=fold.event_count,
        last_event_at=fold.last[0],
        outcomes=outcomes,
        review_due=review,
        opioid_use=fold.opioid_use,
    )


@dataclass
class Fold:
    """What the fold knows so far; a method per kind of event, each given the event and
    when it happened (_FOLDS says which method folds which event)."""

    patient_id: UUID
    stage_since: datetime
    stage: Stage = "registered"
    referrals: dict[str, ReferralStream] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)
    measures: dict[str, list[MeasurePoint]] = field(
        default_factory=lambda: {
            "phq9": [],
            "gad7": [],
            "pain_nrs": [],
            "peg": [],
            "opioid_mme": [],
            # Scores taken straight after an infusion: shown, never judged (CLINICAL.md,
            # Course rules: acute analgesia would hide non-response, and a PHQ-9 asks
            # about the past two weeks).
            "pain_after_infusion": [],
            "phq9_after_infusion": [],
        }
    )
    alerts: list[Alert] = field(default_factory=list)
    opioid_use: OpioidUseSummary | None = None
    course: InfusionCourseStream | None = None
    episode: TherapyEpisodeStream | None = None
    # When the first infusion ended: a durable score after it can show a response.
    first_infusion_at: datetime | None = None
    # alert id → what people did with it: "acknowledged", then perhaps "resolved"
    handled: dict[str, AlertStatus] = field(default_factory=dict)
    # An alert's id before issue 12 (built from its wording) → its id now, so what people
    # did with an alert before the upgrade still finds it after a rebuild.
    former_ids: dict[str, str] = field(default_factory=dict)
    reviews: list[MdtReviewStream] = field(default_factory=list)
    # alert id → how many out-of-range readings of its session it stands for
    vitals_readings: dict[str, int] = field(default_factory=dict)
    # When the induction series ended: the MDT decides on maintenance after it.
    induction_done_at: datetime | None = None
    # How many events are folded in, and the place of the last (projection.place).
    event_count: int = 0
    last: tuple[datetime, int, str] | None = None

    def follows(self, envelope: Envelope) -> bool:
        """Whether the event comes after every event folded so far: then applying it
        gives what folding the whole history again would. A late event does not."""
        return self.last is not None and place(envelope) > self.last

    def apply(self, envelope: Envelope) -> None:
        """Fold in the next event in order (``follows``; a whole history through
        ``fold_history``)."""
        event = known_event(envelope)
        self.timeline.append(_timeline_entry(envelope, event))
        fold_in = _FOLDS.get(type(event)) if event is not None else None
        if fold_in is not None:
            fold_in(self, event, envelope.occurred_at)
        self.clear_time_alerts(envelope.occurred_at)
        self.event_count += 1
        self.last = place(envelope)

    def streams(self) -> Streams:
        return Streams(
            referrals=list(self.referrals.values()),
            infusion_course=self.course,
            therapy_episode=self.episode,
            mdt_reviews=list(self.reviews),
        )

    def move_to(self, stage: Stage, at: datetime, *, only_from: tuple[Stage, ...]) -> None:
        if self.stage in only_from:
            self.stage, self.stage_since = stage, at

    def measure(self, name: str, at: datetime, value: float | None, source: str) -> None:
        if value is None:
            return
        self.measures[name].append(MeasurePoint(at=at, score=value, source=source))
        if name in ("phq9", "gad7"):
            self.judge_deterioration(name)

    def judge_deterioration(self, name: str) -> None:
        """CLINICAL.md, Change that matters: reliable deterioration is any score 6 (PHQ-9)
        or 4 (GAD-7) points above the first. Its alert stays, under the same id, until a
        person resolves it: a later, lower score changes nothing. Once resolved, only a
        new crossing (from below the threshold) raises another."""
        points = self.measures[name]
        if len(points) < 2:
            return
        first, last = int(points[0].score), int(points[-1].score)
        change = depression_anxiety_change(name, first, last)
        if not change.reliable_deterioration:
            return
        earlier = [
            a for a in self.alerts if a.kind == "reliable-deterioration" and a.subject == name
        ]
        if earlier:
            if self.status_of(earlier[-1]) != "resolved":
                return  # still open or acknowledged: the same alert stands
            before = depression_anxiety_change(name, first, int(points[-2].score))
            if before.reliable_deterioration:
                return  # the crossing a person resolved has not ended
        alert = reliable_deterioration_alert(name, change, points[-1].at)
        if alert is not None:
            self.raise_alert(msgspec.structs.replace(alert, subject=name))

    def durable_response(self) -> bool:
        """CLINICAL.md, Course rules: a response is judged on durable measures (pain and
        PHQ-9 recorded before the next infusion or at follow-up), never on scores taken
        straight after one: pain ≥ 30% or PHQ-9 ≥ 50% better than the first score."""
        since = self.first_infusion_at
        if since is None:
            return False
        for name in ("pain_nrs", "phq9"):
            points = self.measures[name]
            if not points:
                continue
            first = int(points[0].score)
            for point in points:
                if point.at <= since:
                    continue
                last = int(point.score)
                if name == "pain_nrs" and pain_change(first, last).meaningful_relief:
                    return True
                if name == "phq9" and depression_anxiety_change(name, first, last).response:
                    return True
        return False

    def raise_alert(self, alert: Alert) -> str:
        """Add an alert under its stable id (the same alert met twice is kept once)."""
        named = _named(self.patient_id, alert)
        if any(existing.id == named.id for existing in self.alerts):
            return named.id
        self.former_ids[_former_id(self.patient_id, alert)] = named.id
        self.alerts.append(named)
        return named.id

    def status_of(self, alert: Alert) -> AlertStatus:
        """What people have done with the alert so far, or what the events did to it."""
        if alert.status == "resolved":
            return "resolved"
        return self.handled.get(alert.id, alert.status)

    def with_status(self, alert: Alert) -> Alert:
        status = self.status_of(alert)
        if status == alert.status:
            return alert
        return msgspec.structs.replace(alert, status=status)

    def item9(self, answer: int | None, at: datetime, source: str, about: UUID) -> None:
        alert = phq9_item9_alert(answer, at, source)
        if alert is not None:
            self.raise_alert(msgspec.structs.replace(alert, subject=str(about)))

    def referral_received(self, event: ReferralReceived, at: datetime) -> None:
        referral_id = str(event.referral_id)
        self.referrals[referral_id] = ReferralStream(
            id=referral_id,
            target=event.target,
            priority=event.priority,
            status="received",
            received_at=at,
        )
        # CLINICAL.md, Waiting times: a new referral after a discharged pathway re-opens
        # it: the stage moves, and the clock (which skips discharged pathways) runs every
        # time rule again.
        self.move_to("referred", at, only_from=("registered", "discharged"))
        baseline = event.baseline or BaselineScores()
        self.measure("phq9", at, baseline.phq9_total, "referral baseline")
        self.measure("pain_nrs", at, baseline.pain_nrs, "referral baseline")
        self.item9(baseline.phq9_item9, at, "referral baseline", event.referral_id)

    def referral_status(self, event: ReferralStatusEvent, at: datetime) -> None:
        referral_id = str(event.referral_id)
        stream = self.referrals.get(referral_id) or ReferralStream(
            # The referral's own received event has not arrived (yet): keep what is known.
            id=referral_id,
            target=event.target,
            priority=event.priority if isinstance(event, ReferralAccepted) else "unknown",
            status="received",
            received_at=at,
        )
        answered = at if isinstance(event, ReferralInfoProvided) else None
        self.referrals[referral_id] = msgspec.structs.replace(
            stream,
            status=REFERRAL_STATUS_OF[type(event)],
            answered_at=answered or stream.answered_at,
        )
        if isinstance(event, ReferralAccepted):
            self.move_to("triaged", at, only_from=("registered", "referred"))
        # Every referral ended (closed after care, rejected, withdrawn) and no care going
        # on: the pathway is over, not waiting.
        if isinstance(event, ENDING) and not _open(self.referrals.values()) and not self.in_care():
            self.stage, self.stage_since = "discharged", at

    def in_care(self) -> bool:
        course, episode = self.course, self.episode
        return bool(
            (course is not None and course.status in ("planned", "active", "onhold"))
            or (episode is not None and episode.status in ("waitlist", "active", "onhold"))
        )

    def course_opened(self, event: InfusionCourseOpened, at: datetime) -> None:
        self.course = _new_course(event.course_id, at)
        self.move_to("assessment", at, only_from=("registered", "referred", "triaged"))

    def _course(self, course_id: UUID, at: datetime) -> InfusionCourseStream:
        # A late course.opened must not leave later facts without a stream to hang on.
        return self.course or _new_course(course_id, at)

    def assessment_recorded(self, event: InfusionAssessmentRecorded, at: datetime) -> None:
        course = self._course(event.course_id, at)
        self.course = msgspec.structs.replace(course, eligibility=event.outcome)
        self.measure("pain_nrs", at, event.pain_nrs, "infusion assessment")
        self.measure("phq9", at, event.phq9_total, "infusion assessment")
        self.measure("opioid_mme", at, event.opioid_mme_per_day, "infusion assessment")
        self.item9(event.phq9_item9, at, "infusion assessment", event.assessment_id)

    def opioid_use_recorded(self, event: InfusionOpioidUseRecorded, at: datetime) -> None:
        # The assessment's own event already put its MME per day in the series.
        if event.context == "follow-up":
            self.measure("opioid_mme", at, event.total_mme_per_day, "opioid use at follow-up")
        self.opioid_use = OpioidUseSummary(
            total_mme_per_day=event.total_mme_per_day,
            flags=event.flags,
            complete=event.complete,
            benzodiazepine=event.benzodiazepine,
            conversion_table=event.conversion_table,
            context=event.context,
            recorded_at=event.recorded_at,
        )

    def plan_agreed(self, event: InfusionPlanAgreed, at: datetime) -> None:
        self.course = msgspec.structs.replace(
            self._course(event.course_id, at),
            induction_count=event.induction_count,
            maintenance_interval_days=event.maintenance_interval_days,
            dose_overridden=bool(event.overridden_fields),
        )

    def course_status(self, event: InfusionCourseStatusChanged, at: datetime) -> None:
        course = self._course(event.course_id, at)
        self.course = msgspec.structs.replace(course, status=event.status)

    def session_started(self, event: InfusionSessionStarted, at: datetime) -> None:
        course = self._course(event.course_id, at)
        if course.first_session_at is None:
            self.course = msgspec.structs.replace(course, first_session_at=at)
        self.move_to("induction", at, only_from=("registered", "referred", "triaged", "assessment"))

    def session_completed(self, event: InfusionSessionCompleted, at: datetime) -> None:
        completed = event.completed_sessions
        course = msgspec.structs.replace(
            self._course(event.course_id, at),
            sessions_completed=completed,
            last_response=msgspec.to_builtins(event.response),
            maintenance_due_at=event.maintenance_due_at,
        )
        self.course = course
        # Pain before an infusion is the durable measure of the ones before it; the
        # scores straight after it are their own series (CLINICAL.md, Course rules).
        self.measure("pain_nrs", at, event.pain_before, f"before infusion {event.number}")
        source = f"after infusion {event.number}"
        self.measure("pain_after_infusion", at, event.pain_after, source)
        self.measure("phq9_after_infusion", at, event.phq9_total, source)
        self.item9(event.phq9_item9, at, source, event.session_id)
        if course.induction_count and completed >= course.induction_count:
            self.move_to("maintenance", at, only_from=("induction", "assessment", "triaged"))
            if completed == course.induction_count:
                self.induction_done_at = at
        if self.first_infusion_at is None:
            self.first_infusion_at = at
        alert = no_response_alert(completed, self.durable_response(), at)
        if alert is not None:
            self.raise_alert(msgspec.structs.replace(alert, subject=str(event.course_id)))

    def course_closed(self, event: InfusionCourseClosed, at: datetime) -> None:
        self.course = msgspec.structs.replace(
            self._course(event.course_id, at),
            status=COURSE_STATUS_AFTER_CLOSING[event.reason],
            maintenance_due_at=None,
        )

    def vitals_out_of_range(self, event: InfusionVitalsOutOfRange, at: datetime) -> None:
        """One alert per session and kind, updated by each further reading (issue 12);
        a critically abnormal reading is an urgent alert of its own."""
        critical = critical_vitals(event.systolic, event.heart_rate, event.spo2)
        kind = "vitals-critical" if critical else "vitals-out-of-range"
        found = critical or list(event.crossed)
        subject = str(event.session_id)
        for index, alert in reversed(list(enumerate(self.alerts))):
            if (alert.kind, alert.subject) != (kind, subject):
                continue
            if self.status_of(alert) == "resolved":
                break  # dealt with: a later reading is a new alert
            readings = self.vitals_readings[alert.id] = self.vitals_readings[alert.id] + 1
            reason = vitals_reason(found, event.phase, readings)
            if critical:
                reason = "critically abnormal " + reason
            self.alerts[index] = msgspec.structs.replace(alert, reason=reason)
            return
        if critical:
            alert = critical_vitals_alert(found, event.phase, at)
        else:
            alert = vitals_alert(found, event.phase, at)
        alert_id = self.raise_alert(msgspec.structs.replace(alert, subject=subject))
        self.vitals_readings[alert_id] = 1

    def adverse_event(self, event: InfusionAdverseEventRecorded, at: datetime) -> None:
        if event.serious:
            alert = serious_adverse_event_alert(event.code, at)
            self.raise_alert(msgspec.structs.replace(alert, subject=str(event.session_id)))

    def episode_opened(self, event: TherapyEpisodeOpened, at: datetime) -> None:
        self.episode = _new_episode(event.episode_id, event.referred_at)

    def _episode(self, episode_id: UUID, at: datetime) -> TherapyEpisodeStream:
        return self.episode or _new_episode(episode_id, at)

    def episode_assigned(self, event: TherapyEpisodeAssigned, at: datetime) -> None:
        episode = self._episode(event.episode_id, at)
        self.episode = msgspec.structs.replace(episode, clinician_id=event.clinician_id)

    def appointment_changed(
        self, event: AppointmentBooked | AppointmentStatusChanged, at: datetime
    ) -> None:
        episode = self._episode(event.episode_id, at)
        if isinstance(event, AppointmentAttended):
            # Psychology's own steps: an assessment, then treatment sessions (follow-up).
            early: tuple[Stage, ...] = ("registered", "referred", "triaged")
            if event.kind == "assessment":
                self.move_to("assessment", at, only_from=early)
            elif event.attended_treatment > 0:
                self.move_to("follow-up", at, only_from=(*early, "assessment"))
        # A booking counts nothing yet; a status change carries the episode's counts.
        counts = event if isinstance(event, AppointmentStatusChanged) else episode
        treated = counts.attended_treatment > 0
        self.episode = msgspec.structs.replace(
            episode,
            status="active" if episode.status == "waitlist" else episode.status,
            attended_treatment=counts.attended_treatment,
            dna_count=counts.dna_count,
            # A correction back to no treatment attended puts the wait back too.
            first_treatment_at=(episode.first_treatment_at or at) if treated else None,
        )

    def measure_recorded(self, event: MeasureRecorded, at: datetime) -> None:
        if event.instrument == "PEG":
            self.measure("peg", at, event.mean, "therapy session")
            return
        name = "phq9" if event.instrument == "PHQ-9" else "gad7"
        self.measure(name, at, event.total, "therapy session")
        self.item9(event.item9, at, "therapy session", event.appointment_id)

    def dna_threshold(self, event: TherapyDnaThresholdReached, at: datetime) -> None:
        alert = dna_review_alert(event.dna_count, event.threshold, at)
        self.raise_alert(msgspec.structs.replace(alert, subject=str(event.episode_id)))

    def episode_discharged(self, event: TherapyEpisodeDischarged, at: datetime) -> None:
        self.episode = msgspec.structs.replace(
            self._episode(event.episode_id, at),
            status="cancelled" if event.reason == "declined" else "finished",
            discharge_reason=event.reason,
        )

    def alert_handled(self, event: PathwayAlertHandled, at: datetime) -> None:
        status: AlertStatus = (
            "resolved" if isinstance(event, PathwayAlertResolved) else "acknowledged"
        )
        alert_id = self.former_ids.get(event.alert_id, event.alert_id)
        # Resolved stays resolved, whichever of the two events the fold meets first.
        if self.handled.get(alert_id) != "resolved":
            self.handled[alert_id] = status

    def alert_raised(self, event: PathwayAlertRaised, at: datetime) -> None:
        crossing = Crossing(event.kind, event.subject, event.crossed_at)
        if any(
            (a.kind, a.subject, a.raised_at)
            == (crossing.kind, crossing.subject, crossing.crossed_at)
            for a in self.alerts
        ):
            return  # the clock looked twice before the first raise came back
        if crossing.kind == ESCALATION:
            self.escalate(crossing)
            return
        streams = self.streams()
        # Events earlier than the raise may have cleared it already (they can arrive late).
        if crossing.kind in TIME_KINDS and not cleared(crossing, streams):
            self.raise_alert(time_alert(crossing, streams, seen_at=at))

    def escalate(self, crossing: Crossing) -> None:
        """The clock saw an urgent alert pass its due time unacknowledged; people may have
        acted on it since (their action is earlier in the fold): then it does not."""
        overdue = next((a for a in self.alerts if a.id == crossing.subject), None)
        if overdue is None:
            return
        current = msgspec.structs.replace(overdue, status=self.status_of(overdue))
        due = escalation_due(current)
        if due is None or due > crossing.crossed_at:
            return
        self.raise_alert(escalated_alert(current, crossing.crossed_at))

    def clear_time_alerts(self, at: datetime) -> None:
        """A time-based alert resolves itself once the events show its condition gone."""
        for index, alert in enumerate(self.alerts):
            if alert.kind not in TIME_KINDS or alert.cleared_at is not None:
                continue
            crossing = Crossing(alert.kind, alert.subject or "", alert.raised_at)
            if cleared(crossing, self.streams()):
                self.alerts[index] = msgspec.structs.replace(
                    alert, status="resolved", cleared_at=at
                )

    def review_recorded(self, event: MdtReviewRecorded, at: datetime) -> None:
        referral_id = event.referral_id
        self.reviews.append(
            MdtReviewStream(
                id=str(event.review_id),
                reviewed_at=event.reviewed_at,
                decision=event.decision,
                attendees=list(event.attendees),
                reviewed_by=event.reviewed_by,
                referral_id=str(referral_id) if referral_id is not None else None,
            )
        )


def _new_course(course_id: UUID, opened_at: datetime) -> InfusionCourseStream:
    return InfusionCourseStream(id=str(course_id), status="planned", opened_at=opened_at)


def _new_episode(episode_id: UUID, referred_at: datetime) -> TherapyEpisodeStream:
    return TherapyEpisodeStream(id=str(episode_id), status="waitlist", referred_at=referred_at)


_Folding = Callable[[Fold, Any, datetime], None]


def _on(
    kind: type[E], fold_in: Callable[[Fold, E, datetime], None]
) -> tuple[type[Event], _Folding]:
    """A row of _FOLDS; mypy checks that the method takes this kind of event."""
    return kind, fold_in


# The method that folds in each kind of event; the others are only on the timeline.
_FOLDS: dict[type[Event], _Folding] = dict(
    [
        _on(ReferralReceived, Fold.referral_received),
        _on(ReferralInfoRequested, Fold.referral_status),
        _on(ReferralInfoProvided, Fold.referral_status),
        _on(ReferralAccepted, Fold.referral_status),
        _on(ReferralRejected, Fold.referral_status),
        _on(ReferralCancelled, Fold.referral_status),
        _on(ReferralClosed, Fold.referral_status),
        _on(InfusionCourseOpened, Fold.course_opened),
        _on(InfusionAssessmentRecorded, Fold.assessment_recorded),
        _on(InfusionOpioidUseRecorded, Fold.opioid_use_recorded),
        _on(InfusionPlanAgreed, Fold.plan_agreed),
        _on(InfusionCourseStatusChanged, Fold.course_status),
        _on(InfusionSessionStarted, Fold.session_started),
        _on(InfusionSessionCompleted, Fold.session_completed),
        _on(InfusionCourseClosed, Fold.course_closed),
        _on(InfusionVitalsOutOfRange, Fold.vitals_out_of_range),
        _on(InfusionAdverseEventRecorded, Fold.adverse_event),
        _on(TherapyEpisodeOpened, Fold.episode_opened),
        _on(TherapyEpisodeAssigned, Fold.episode_assigned),
        _on(AppointmentBooked, Fold.appointment_changed),
        _on(AppointmentAttended, Fold.appointment_changed),
        _on(AppointmentMissed, Fold.appointment_changed),
        _on(AppointmentCancelled, Fold.appointment_changed),
        _on(AppointmentCorrected, Fold.appointment_changed),
        _on(MeasureRecorded, Fold.measure_recorded),
        _on(TherapyDnaThresholdReached, Fold.dna_threshold),
        _on(TherapyEpisodeDischarged, Fold.episode_discharged),
        _on(PathwayAlertAcknowledged, Fold.alert_handled),
        _on(PathwayAlertResolved, Fold.alert_handled),
        _on(PathwayAlertRaised, Fold.alert_raised),
        _on(MdtReviewRecorded, Fold.review_recorded),
    ]
)


def _outcomes(fold: Fold) -> dict[str, MeasureOutcome]:
    """First-to-last change of each series with two or more scores (a reliable
    deterioration raised its alert when the score came: Fold.judge_deterioration)."""
    outcomes: dict[str, MeasureOutcome] = {}
    for name in ("phq9", "gad7", "pain_nrs"):
        points = fold.measures[name]
        if len(points) < 2:
            continue
        first, last = int(points[0].score), int(points[-1].score)
        change = (
            pain_change(first, last)
            if name == "pain_nrs"
            else depression_anxiety_change(name, first, last)
        )
        outcomes[name] = change
    return outcomes


def _named(patient_id: UUID, alert: Alert) -> Alert:
    """An alert's id is a function of what raised it (its kind, what it is about and
    when), never of its wording, so a rebuild names it the same, people's actions find it
    again, and an alert whose reason is updated keeps its id."""
    key = f"{alert.kind}|{alert.subject or ''}|{alert.raised_at.isoformat()}"
    return msgspec.structs.replace(alert, id=str(uuid5(patient_id, key)))


def _former_id(patient_id: UUID, alert: Alert) -> str:
    """The id an alert had before issue 12, built from its reason: kept only so that the
    acknowledgements already in the event store still find their alerts."""
    key = f"{alert.kind}|{alert.raised_at.isoformat()}|{alert.reason}"
    if alert.kind in TIME_KINDS and alert.subject is not None:
        key += f"|{alert.subject}"
    return str(uuid5(patient_id, key))


ReferralStatusEvent = (
    ReferralAccepted
    | ReferralRejected
    | ReferralInfoRequested
    | ReferralInfoProvided
    | ReferralCancelled
    | ReferralClosed
)
# The status each triage or closing event leaves its referral in.
REFERRAL_STATUS_OF: dict[type[ReferralStatusEvent], str] = {
    ReferralInfoRequested: "info-requested",
    ReferralInfoProvided: "received",
    ReferralAccepted: "accepted",
    ReferralRejected: "rejected",
    ReferralCancelled: "cancelled",
    ReferralClosed: "closed",
}
ReferralEvent = ReferralReceived | ReferralStatusEvent
OPEN_REFERRAL = ("received", "info-requested", "accepted")
ENDING = (ReferralClosed, ReferralRejected, ReferralCancelled)


# The team each care stream belongs to.
COURSE_TEAM, EPISODE_TEAM = "ketamine-infusion", "psychology"
TEAM_OF_OWNER: dict[str, str] = {
    role: team for team, role in ROLE_OF_TARGET.items() if role != "mdt"
}


def active_teams(pathway: Pathway) -> list[str]:
    """The teams with an active part in the pathway, which are the teams that may see it
    (issue 12): a referral still waiting or accepted, care going on (a course or an
    episode not ended), or an alert their role owns still to deal with. A rejected or
    withdrawn referral, or care that has ended, no longer grants access."""
    teams: set[str] = set()
    streams = pathway.streams
    teams.update(r.target for r in streams.referrals if r.status in OPEN_REFERRAL)
    course, episode = streams.infusion_course, streams.therapy_episode
    if course is not None and course.status in ("planned", "active", "onhold"):
        teams.add(COURSE_TEAM)
    if episode is not None and episode.status in ("waitlist", "active", "onhold"):
        teams.add(EPISODE_TEAM)
    for alert in pathway.alerts:
        team = TEAM_OF_OWNER.get(alert.owner_role)
        if team is not None and alert.status != "resolved":
            teams.add(team)
    return sorted(teams)


def _open(streams: Iterable[ReferralStream]) -> bool:
    return any(stream.status in OPEN_REFERRAL for stream in streams)


def _next_action(stream: ReferralStream, streams: Streams) -> NextAction | None:
    team = TEAM_OF_TARGET.get(stream.target, stream.target)
    role = ROLE_OF_TARGET.get(stream.target, "mdt")
    if stream.status == "received":
        return NextAction(
            action=f"triage the {stream.priority} {stream.target} referral",
            owner_role=role,
            due=triage_due(stream.triage_from, stream.priority),
        )
    if stream.status == "info-requested":
        return NextAction(
            action=f"answer the {team}'s question about the {stream.target} referral",
            owner_role="referrer",
            due=triage_due(stream.triage_from, stream.priority),
        )
    if stream.status == "accepted" and not treatment_started(streams, stream):
        return NextAction(
            action=f"start treatment for the {stream.target} referral",
            owner_role=role,
            due=treatment_due(stream.received_at, stream.target),
        )
    return None


def _psychology_suggestion(streams: Streams) -> NextAction | None:
    """CLINICAL.md, Waiting times: an infusion course started with no psychology referral
    → suggest one within 14 days (local policy)."""
    course = streams.infusion_course
    if course is None or course.first_session_at is None or has_psychology(streams):
        return None
    if course.status not in ("planned", "active"):
        return None
    return NextAction(
        action="refer to psychology for CBT alongside the infusions",
        owner_role="mdt",
        due=psychology_suggestion_due(course.first_session_at),
    )


def _review_due(fold: Fold, alerts: list[Alert]) -> ReviewDue | None:
    """The MDT reviews a pathway when an alert it owns is open, or when the induction
    series has ended and nobody has decided on maintenance since."""
    last_review = max((r.reviewed_at for r in fold.reviews), default=None)
    waiting = [
        a
        for a in alerts
        if a.owner_role == "mdt"
        and a.status != "resolved"
        and (last_review is None or a.raised_at > last_review)
    ]
    if waiting:
        first = min(waiting, key=lambda a: (SEVERITY_RANK[a.severity], a.due))
        return ReviewDue(due=first.due, reason=first.reason, severity=first.severity)
    done = fold.induction_done_at
    if done is not None and (last_review is None or last_review < done):
        return ReviewDue(
            due=done + timedelta(days=clinical_policy().alerts.maintenance_decision_due_days),
            reason="the induction series has ended: continue, maintain or stop",
        )
    return None


def _timeline_entry(envelope: Envelope, event: Event | None) -> TimelineEntry:
    return TimelineEntry(
        event_id=envelope.event_id,
        type=envelope.type,
        occurred_at=envelope.occurred_at,
        producer=envelope.producer,
        subject_type=envelope.subject.type,
        subject_id=envelope.subject.id,
        summary=_summary(event) if event is not None else envelope.type,
    )


def _summary(event: Event) -> str:
    if isinstance(event, ReferralStatusEvent):
        return f"{event.target} referral {REFERRAL_STATUS_OF[type(event)]}"
    if isinstance(event, MeasureRecorded) and event.instrument == "PEG":
        return f"PEG recorded: {event.mean}"  # its score is the mean, not the sum
    template = SUMMARIES.get(type(event))
    if template is None:
        return event.event_type()
    return template.format_map(_Blank(msgspec.structs.asdict(event)))


class _Blank(dict[str, object]):
    """An event's fields for a summary: a field the event lacks reads as blank, never an
    error (a rescheduled appointment names no kind: its words stay as stored timelines
    have them, so a rebuild matches)."""

    def __missing__(self, key: str) -> str:
        return ""


# How the timeline words each event (ids, codes and scores only, as the events carry).
SUMMARIES: dict[type[Event], str] = {
    PatientRegistered: "patient registered",
    ReferralReceived: "{priority} referral to {target} received",
    InfusionCourseOpened: "infusion course opened",
    InfusionAssessmentRecorded: "eligibility assessed: {outcome}",
    InfusionOpioidUseRecorded: "opioid use at {context}: {total_mme_per_day} MME/day",
    InfusionPlanAgreed: "dosing plan agreed",
    InfusionCourseStatusChanged: "infusion course {status}",
    InfusionSessionScheduled: "infusion {number} scheduled",
    InfusionSessionStarted: "infusion {number} started",
    InfusionSessionCompleted: "infusion {number} completed",
    InfusionSessionCancelled: "infusion {number} cancelled",
    InfusionSessionAbandoned: "infusion {number} abandoned",
    InfusionAdverseEventRecorded: "adverse event during an infusion: {code}",
    InfusionVitalsOutOfRange: "vitals out of range ({phase} the infusion)",
    InfusionCourseClosed: "infusion course closed ({reason})",
    TherapyEpisodeOpened: "therapy episode opened on the waiting list",
    TherapyEpisodeAssigned: "psychologist assigned",
    AppointmentBooked: "{kind} appointment booked",
    AppointmentRescheduled: "{kind} appointment rescheduled",
    AppointmentCheckedIn: "arrived for a {kind} appointment",
    AppointmentAttended: "{kind} appointment attended",
    AppointmentMissed: "{kind} appointment missed",
    AppointmentCancelled: "{kind} appointment cancelled",
    AppointmentCorrected: "{kind} appointment corrected to {status}",
    MeasureRecorded: "{instrument} recorded: {total}",
    MeasureRiskFlagged: "PHQ-9 item 9 answered {item9}",
    TherapyDnaThresholdReached: "{dna_count} missed appointments: discharge review",
    TherapyEpisodeDischarged: "discharged from therapy ({reason})",
    PathwayAlertRaised: "alert raised: {kind}",
    PathwayAlertAcknowledged: "alert acknowledged: {kind}",
    PathwayAlertResolved: "alert resolved: {kind}",
    MdtReviewRecorded: "MDT review: {decision}",
}
