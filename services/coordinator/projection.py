"""The pathway as a pure fold over one patient's events.

Sorted by (occurred_at, sequence, event_id), so the same events in any delivery order,
with any duplicates, give the same pathway. Types the fold does not know are kept on
the timeline and otherwise ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID, uuid5

import msgspec

from services.coordinator.domain import (
    ROLE_OF_TARGET,
    SEVERITY_RANK,
    Alert,
    InfusionCourseStream,
    MdtReviewStream,
    MeasureOutcome,
    MeasurePoint,
    NextAction,
    Pathway,
    ReferralStream,
    ReviewDue,
    Stage,
    Streams,
    TherapyEpisodeStream,
    TimelineEntry,
)
from services.coordinator.rules import (
    TIME_KINDS,
    Crossing,
    cleared,
    depression_anxiety_change,
    dna_review_alert,
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
)
from shared.events import Envelope
from shared.events.catalogue import COURSE_STATUS_AFTER_CLOSING
from shared.policy import clinical_policy

TEAM_OF_TARGET = {
    "ketamine-infusion": "infusion clinic",
    "psychology": "psychology team",
    "pain-mdt": "pain MDT",
}


def ordered(events: Iterable[Envelope]) -> list[Envelope]:
    unique = {event.event_id: event for event in events}
    return sorted(unique.values(), key=lambda e: (e.occurred_at, e.sequence, str(e.event_id)))


def project(patient_id: UUID, events: Iterable[Envelope]) -> Pathway:
    history = ordered(events)
    if not history:
        raise ValueError("a pathway needs at least one event")
    fold = _Fold(stage_since=history[0].occurred_at)
    for event in history:
        fold.timeline.append(_timeline_entry(event))
        handler = _HANDLERS.get(event.type)
        if handler is None and event.type in REFERRAL_STATUS_OF:
            handler = _Fold.referral_status
        if handler is not None:
            handler(fold, event)
        fold.clear_time_alerts(event.occurred_at)
    streams = fold.streams()
    next_actions = [a for stream in streams.referrals if (a := _next_action(stream, streams))]
    if (suggestion := _psychology_suggestion(streams)) is not None:
        next_actions.append(suggestion)
    outcomes = _outcomes(fold)
    alerts = [_handled(_named(patient_id, alert), fold.handled) for alert in fold.alerts]
    review = _review_due(fold, alerts)
    if review is not None:
        next_actions.append(
            NextAction(action=f"MDT review: {review.reason}", owner_role="mdt", due=review.due)
        )
    return Pathway(
        patient_id=patient_id,
        stage=fold.stage,
        stage_since=fold.stage_since,
        streams=streams,
        timeline=fold.timeline,
        measures=fold.measures,
        alerts=alerts,
        next_actions=sorted(next_actions, key=lambda action: action.due),
        event_count=len(history),
        last_event_at=history[-1].occurred_at,
        outcomes=outcomes,
        review_due=review,
    )


@dataclass
class _Fold:
    """What the fold knows so far; one method per kind of event."""

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
        }
    )
    alerts: list[Alert] = field(default_factory=list)
    course: InfusionCourseStream | None = None
    episode: TherapyEpisodeStream | None = None
    # Whether any infusion so far met a response threshold (pain ≥ 30% or PHQ-9 ≥ 50%).
    responded: bool = False
    # alert id → what people did with it: "acknowledged", then perhaps "resolved"
    handled: dict[str, str] = field(default_factory=dict)
    reviews: list[MdtReviewStream] = field(default_factory=list)
    # When the induction series ended: the MDT decides on maintenance after it.
    induction_done_at: datetime | None = None

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
        if value is not None:
            self.measures[name].append(MeasurePoint(at=at, score=value, source=source))

    def item9(self, answer: int | None, at: datetime, source: str) -> None:
        alert = phq9_item9_alert(answer, at, source)
        if alert is not None:
            self.alerts.append(alert)

    def referral_received(self, event: Envelope) -> None:
        data = event.data
        self.referrals[data["referral_id"]] = ReferralStream(
            id=data["referral_id"],
            target=data["target"],
            priority=data["priority"],
            status="received",
            received_at=event.occurred_at,
        )
        self.move_to("referred", event.occurred_at, only_from=("registered",))
        baseline = data.get("baseline") or {}
        self.measure("phq9", event.occurred_at, baseline.get("phq9_total"), "referral baseline")
        self.measure("pain_nrs", event.occurred_at, baseline.get("pain_nrs"), "referral baseline")
        self.item9(baseline.get("phq9_item9"), event.occurred_at, "referral baseline")

    def referral_status(self, event: Envelope) -> None:
        data = event.data
        stream = self.referrals.get(data["referral_id"]) or ReferralStream(
            # The referral's own received event has not arrived (yet): keep what is known.
            id=data["referral_id"],
            target=data["target"],
            priority=data.get("priority", "unknown"),
            status="received",
            received_at=event.occurred_at,
        )
        answered = event.occurred_at if event.type == "referral.info_provided" else None
        self.referrals[data["referral_id"]] = msgspec.structs.replace(
            stream,
            status=REFERRAL_STATUS_OF[event.type],
            answered_at=answered or stream.answered_at,
        )
        if event.type == "referral.accepted":
            self.move_to("triaged", event.occurred_at, only_from=("registered", "referred"))
        # Every referral ended (closed after care, rejected, withdrawn) and no care going
        # on: the pathway is over, not waiting.
        if event.type in ENDING and not _open(self.referrals.values()) and not self.in_care():
            self.stage, self.stage_since = "discharged", event.occurred_at

    def in_care(self) -> bool:
        course, episode = self.course, self.episode
        return bool(
            (course is not None and course.status in ("planned", "active", "onhold"))
            or (episode is not None and episode.status in ("waitlist", "active", "onhold"))
        )

    def course_opened(self, event: Envelope) -> None:
        self.course = InfusionCourseStream(
            id=event.data["course_id"], status="planned", opened_at=event.occurred_at
        )
        self.move_to(
            "assessment", event.occurred_at, only_from=("registered", "referred", "triaged")
        )

    def _course(self, event: Envelope) -> InfusionCourseStream:
        # A late course.opened must not leave later facts without a stream to hang on.
        return self.course or InfusionCourseStream(
            id=event.data["course_id"], status="planned", opened_at=event.occurred_at
        )

    def assessment_recorded(self, event: Envelope) -> None:
        data, at = event.data, event.occurred_at
        self.course = msgspec.structs.replace(self._course(event), eligibility=data["outcome"])
        self.measure("pain_nrs", at, data["pain_nrs"], "infusion assessment")
        self.measure("phq9", at, data["phq9_total"], "infusion assessment")
        self.measure("opioid_mme", at, data["opioid_mme_per_day"], "infusion assessment")
        self.item9(data["phq9_item9"], at, "infusion assessment")

    def plan_agreed(self, event: Envelope) -> None:
        data = event.data
        self.course = msgspec.structs.replace(
            self._course(event),
            induction_count=data["induction_count"],
            maintenance_interval_days=data["maintenance_interval_days"],
            dose_overridden=bool(data["overridden_fields"]),
        )

    def course_status(self, event: Envelope) -> None:
        self.course = msgspec.structs.replace(self._course(event), status=event.data["status"])

    def session_started(self, event: Envelope) -> None:
        course = self._course(event)
        if course.first_session_at is None:
            self.course = msgspec.structs.replace(course, first_session_at=event.occurred_at)
        self.move_to(
            "induction",
            event.occurred_at,
            only_from=("registered", "referred", "triaged", "assessment"),
        )

    def session_completed(self, event: Envelope) -> None:
        data, at = event.data, event.occurred_at
        course = msgspec.structs.replace(
            self._course(event),
            sessions_completed=data["completed_sessions"],
            last_response=data["response"],
            maintenance_due_at=_datetime(data.get("maintenance_due_at")),
        )
        self.course = course
        self.measure("pain_nrs", at, data.get("pain_after"), f"after infusion {data['number']}")
        self.measure("phq9", at, data.get("phq9_total"), f"after infusion {data['number']}")
        self.item9(data.get("phq9_item9"), at, f"after infusion {data['number']}")
        if course.induction_count and data["completed_sessions"] >= course.induction_count:
            self.move_to("maintenance", at, only_from=("induction", "assessment", "triaged"))
            if data["completed_sessions"] == course.induction_count:
                self.induction_done_at = at
        self.responded = self.responded or bool(data["response"]["responded"])
        alert = no_response_alert(data["completed_sessions"], self.responded, at)
        if alert is not None:
            self.alerts.append(alert)

    def vitals_out_of_range(self, event: Envelope) -> None:
        data = event.data
        self.alerts.append(vitals_alert(list(data["crossed"]), data["phase"], event.occurred_at))

    def adverse_event(self, event: Envelope) -> None:
        if event.data["serious"]:
            self.alerts.append(serious_adverse_event_alert(event.data["code"], event.occurred_at))

    def episode_opened(self, event: Envelope) -> None:
        self.episode = TherapyEpisodeStream(
            id=event.data["episode_id"],
            status="waitlist",
            referred_at=_datetime(event.data["referred_at"]) or event.occurred_at,
        )

    def _episode(self, event: Envelope) -> TherapyEpisodeStream:
        return self.episode or TherapyEpisodeStream(
            id=event.data["episode_id"], status="waitlist", referred_at=event.occurred_at
        )

    def episode_assigned(self, event: Envelope) -> None:
        self.episode = msgspec.structs.replace(
            self._episode(event), clinician_id=event.data["clinician_id"]
        )

    def appointment_changed(self, event: Envelope) -> None:
        data = event.data
        episode = self._episode(event)
        if event.type == "appointment.attended":
            # Psychology's own steps: an assessment, then treatment sessions (follow-up).
            early: tuple[Stage, ...] = ("registered", "referred", "triaged")
            if data.get("kind") == "assessment":
                self.move_to("assessment", event.occurred_at, only_from=early)
            elif data.get("attended_treatment", 0) > 0:
                self.move_to("follow-up", event.occurred_at, only_from=(*early, "assessment"))
        self.episode = msgspec.structs.replace(
            episode,
            status="active" if episode.status == "waitlist" else episode.status,
            attended_treatment=data.get("attended_treatment", episode.attended_treatment),
            dna_count=data.get("dna_count", episode.dna_count),
        )

    def measure_recorded(self, event: Envelope) -> None:
        data, at = event.data, event.occurred_at
        if data["instrument"] == "PEG":
            self.measure("peg", at, data.get("mean"), "therapy session")
            return
        name = "phq9" if data["instrument"] == "PHQ-9" else "gad7"
        self.measure(name, at, data["total"], "therapy session")
        self.item9(data.get("item9"), at, "therapy session")

    def dna_threshold(self, event: Envelope) -> None:
        data = event.data
        self.alerts.append(
            dna_review_alert(data["dna_count"], data["threshold"], event.occurred_at)
        )

    def episode_discharged(self, event: Envelope) -> None:
        reason = event.data["reason"]
        self.episode = msgspec.structs.replace(
            self._episode(event),
            status="cancelled" if reason == "declined" else "finished",
            discharge_reason=reason,
        )

    def alert_handled(self, event: Envelope) -> None:
        status = "resolved" if event.type == "pathway.alert.resolved" else "acknowledged"
        alert_id = event.data["alert_id"]
        # Resolved stays resolved, whichever of the two events the fold meets first.
        if self.handled.get(alert_id) != "resolved":
            self.handled[alert_id] = status

    def alert_raised(self, event: Envelope) -> None:
        data = event.data
        crossing = Crossing(
            data["kind"], data["subject"], _datetime(data["crossed_at"]) or event.occurred_at
        )
        if any(
            (a.kind, a.subject, a.raised_at)
            == (crossing.kind, crossing.subject, crossing.crossed_at)
            for a in self.alerts
        ):
            return  # the clock looked twice before the first raise came back
        streams = self.streams()
        # Events earlier than the raise may have cleared it already (they can arrive late).
        if crossing.kind in TIME_KINDS and not cleared(crossing, streams):
            self.alerts.append(time_alert(crossing, streams))

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

    def review_recorded(self, event: Envelope) -> None:
        data = event.data
        self.reviews.append(
            MdtReviewStream(
                id=data["review_id"],
                reviewed_at=_datetime(data["reviewed_at"]) or event.occurred_at,
                decision=data["decision"],
                attendees=list(data["attendees"]),
                reviewed_by=data["reviewed_by"],
                referral_id=data.get("referral_id"),
            )
        )

    def course_closed(self, event: Envelope) -> None:
        self.course = msgspec.structs.replace(
            self._course(event),
            status=COURSE_STATUS_AFTER_CLOSING[event.data["reason"]],
            maintenance_due_at=None,
        )


def _outcomes(fold: _Fold) -> dict[str, MeasureOutcome]:
    """First-to-last change of each series with two or more scores; a reliable
    deterioration also raises its alert."""
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
        outcomes[name] = msgspec.convert(dataclasses.asdict(change), MeasureOutcome)
        alert = reliable_deterioration_alert(name, change, points[-1].at)
        if alert is not None:
            fold.alerts.append(alert)
    return outcomes


def _handled(alert: Alert, handled: dict[str, str]) -> Alert:
    status = handled.get(alert.id)
    if status is None or alert.status == "resolved":  # cleared by the events themselves
        return alert
    return msgspec.structs.replace(alert, status=status)


def _named(patient_id: UUID, alert: Alert) -> Alert:
    """An alert's id is a function of what raised it, so a rebuild names it the same and
    people's acknowledgements find it again."""
    key = f"{alert.kind}|{alert.raised_at.isoformat()}|{alert.reason}"
    if alert.subject is not None:  # two referrals can cross a threshold at one instant
        key += f"|{alert.subject}"
    return msgspec.structs.replace(alert, id=str(uuid5(patient_id, key)))


def _datetime(value: object) -> datetime | None:
    return msgspec.convert(value, datetime) if value is not None else None


_HANDLERS: dict[str, Callable[[_Fold, Envelope], None]] = {
    "referral.received": _Fold.referral_received,
    "infusion.course.opened": _Fold.course_opened,
    "infusion.assessment.recorded": _Fold.assessment_recorded,
    "infusion.plan.agreed": _Fold.plan_agreed,
    "infusion.course.status_changed": _Fold.course_status,
    "infusion.session.started": _Fold.session_started,
    "infusion.session.completed": _Fold.session_completed,
    "infusion.course.closed": _Fold.course_closed,
    "infusion.vitals.out_of_range": _Fold.vitals_out_of_range,
    "infusion.adverse_event.recorded": _Fold.adverse_event,
    "therapy.episode.opened": _Fold.episode_opened,
    "therapy.episode.assigned": _Fold.episode_assigned,
    "appointment.booked": _Fold.appointment_changed,
    "appointment.attended": _Fold.appointment_changed,
    "appointment.missed": _Fold.appointment_changed,
    "appointment.cancelled": _Fold.appointment_changed,
    "appointment.corrected": _Fold.appointment_changed,
    "measure.recorded": _Fold.measure_recorded,
    "therapy.dna_threshold_reached": _Fold.dna_threshold,
    "therapy.episode.discharged": _Fold.episode_discharged,
    "pathway.alert.acknowledged": _Fold.alert_handled,
    "pathway.alert.resolved": _Fold.alert_handled,
    "pathway.alert.raised": _Fold.alert_raised,
    "mdt.review.recorded": _Fold.review_recorded,
}


REFERRAL_STATUS_OF = {
    "referral.info_requested": "info-requested",
    "referral.info_provided": "received",
    "referral.accepted": "accepted",
    "referral.rejected": "rejected",
    "referral.cancelled": "cancelled",
    "referral.closed": "closed",
}
OPEN_REFERRAL = ("received", "info-requested", "accepted")
ENDING = ("referral.closed", "referral.rejected", "referral.cancelled")


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


def _review_due(fold: _Fold, alerts: list[Alert]) -> ReviewDue | None:
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


def _timeline_entry(event: Envelope) -> TimelineEntry:
    return TimelineEntry(
        event_id=event.event_id,
        type=event.type,
        occurred_at=event.occurred_at,
        producer=event.producer,
        subject_type=event.subject.type,
        subject_id=event.subject.id,
        summary=_summary(event),
    )


def _summary(event: Envelope) -> str:
    data = event.data
    if event.type == "referral.received":
        return f"{data.get('priority', '')} referral to {data.get('target', '')} received"
    if event.type == "patient.registered":
        return "patient registered"
    if event.type in REFERRAL_STATUS_OF:
        return f"{data.get('target', '')} referral {REFERRAL_STATUS_OF[event.type]}"
    if event.type == "measure.recorded" and data.get("instrument") == "PEG":
        return f"PEG recorded: {data.get('mean')}"  # its score is the mean, not the sum
    template = SUMMARIES.get(event.type)
    if template is None:
        return event.type
    return template.format_map(_Blank(data))


class _Blank(dict[str, object]):
    """Event data for a summary: a field the event lacks reads as blank, never an error."""

    def __missing__(self, key: str) -> str:
        return ""


# How the timeline words each event (ids, codes and scores only, as the events carry).
SUMMARIES = {
    "infusion.course.opened": "infusion course opened",
    "infusion.assessment.recorded": "eligibility assessed: {outcome}",
    "infusion.plan.agreed": "dosing plan agreed",
    "infusion.course.status_changed": "infusion course {status}",
    "infusion.session.scheduled": "infusion {number} scheduled",
    "infusion.session.started": "infusion {number} started",
    "infusion.session.completed": "infusion {number} completed",
    "infusion.session.cancelled": "infusion {number} cancelled",
    "infusion.session.abandoned": "infusion {number} abandoned",
    "infusion.adverse_event.recorded": "adverse event during an infusion: {code}",
    "infusion.vitals.out_of_range": "vitals out of range ({phase} the infusion)",
    "infusion.course.closed": "infusion course closed ({reason})",
    "therapy.episode.opened": "therapy episode opened on the waiting list",
    "therapy.episode.assigned": "psychologist assigned",
    "appointment.booked": "{kind} appointment booked",
    "appointment.rescheduled": "{kind} appointment rescheduled",
    "appointment.checked_in": "arrived for a {kind} appointment",
    "appointment.attended": "{kind} appointment attended",
    "appointment.missed": "{kind} appointment missed",
    "appointment.cancelled": "{kind} appointment cancelled",
    "appointment.corrected": "{kind} appointment corrected to {status}",
    "measure.recorded": "{instrument} recorded: {total}",
    "measure.risk_flagged": "PHQ-9 item 9 answered {item9}",
    "therapy.dna_threshold_reached": "{dna_count} missed appointments: discharge review",
    "therapy.episode.discharged": "discharged from therapy ({reason})",
    "pathway.alert.raised": "alert raised: {kind}",
    "pathway.alert.acknowledged": "alert acknowledged: {kind}",
    "pathway.alert.resolved": "alert resolved: {kind}",
    "mdt.review.recorded": "MDT review: {decision}",
}
