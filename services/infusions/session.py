"""The infusion session aggregate: checked in, scored, started, watched (vitals, the dose
given, adverse events) and completed, cancelled or abandoned.

Pure, as the course aggregate (course.py): a step takes the session row, the values
recorded, who acts and the time, moves the status through the session's state machine
(domain.SESSION) or checks the status allows the record, and returns the rows it makes
and the events it causes. Whether the course allows an infusion at all is the course's
to say (course.require_ready); the commands ask it first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypedDict
from uuid import UUID

import msgspec

from services.infusions import domain
from services.infusions.models import (
    AdverseEvent,
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    VitalsReading,
)
from services.infusions.schemas import AdverseEventCreate, Phase, StartOverride, VitalsCreate
from shared.calendar import working_calendar
from shared.domain import IllegalTransition, as_declared
from shared.events.catalogue import (
    Event,
    InfusionAdverseEventRecorded,
    InfusionSessionAbandoned,
    InfusionSessionCancelled,
    InfusionSessionCompleted,
    InfusionSessionEnded,
    InfusionSessionStarted,
    InfusionVitalsOutOfRange,
)
from shared.measures import Score
from shared.policy import ChangePolicy, DosePolicy, VitalsPolicy

Kind = Literal["induction", "maintenance"]

# What may be recorded against a session in each status; these record, they do not move
# it. Vitals and adverse events may still be recorded after an infusion completes.
RECORDS_ALLOWED = {
    "record scores before": (domain.CHECKED_IN, domain.IN_PROGRESS),
    "record vitals": (domain.CHECKED_IN, domain.IN_PROGRESS, domain.COMPLETED),
    # An infusion stopped early still gave a dose: it is recorded on the abandoned session.
    "record the dose given": (domain.IN_PROGRESS, domain.ABANDONED),
    "record an adverse event": (domain.CHECKED_IN, domain.IN_PROGRESS, domain.COMPLETED),
}


class AboutSession(TypedDict):
    """What every session event says first (the catalogue's InfusionSessionEvent)."""

    course_id: UUID
    session_id: UUID


def about(infusion: InfusionSession) -> AboutSession:
    return {"course_id": infusion.course_id, "session_id": infusion.id}


def check_in(infusion: InfusionSession) -> None:
    _move(infusion, "check-in")


def record_scores_before(infusion: InfusionSession, pain_nrs: int, mood: int) -> None:
    _require(infusion, "record scores before")
    infusion.pain_before, infusion.mood_before = pain_nrs, mood


PHASE_OF = {
    domain.CHECKED_IN: "before",
    domain.IN_PROGRESS: "during",
    domain.COMPLETED: "after",
}


def start(
    infusion: InfusionSession,
    before: VitalsReading | None,
    override: StartOverride | None,
    by: str,
    now: datetime,
    policy: VitalsPolicy,
) -> InfusionSessionStarted:
    """Start the infusion: not before the day it is booked for (the clinic's calendar);
    the observations before it come first, and the latest of them at or above the start
    limit (CLINICAL.md: 160/100 before starting) blocks the start unless the clinician
    starting it overrides with a reason (recorded on the session and audited)."""
    booked_day = working_calendar().day_of(infusion.scheduled_start)
    today = working_calendar().day_of(now)
    if today < booked_day:
        raise domain.InfusionRuleBroken(
            "scheduled_start",
            f"booked for {booked_day.isoformat()}: it starts on that day, not before "
            f"(today is {today.isoformat()} in the clinic)",
        )
    if before is None:
        raise domain.InfusionRuleBroken(
            "vitals", "record blood pressure, heart rate and SpO2 before starting"
        )
    high = domain.above_start_limit(before.systolic, before.diastolic, policy)
    if high and override is None:
        raise domain.InfusionRuleBroken(
            "override.reason",
            f"the latest reading before the infusion, {before.systolic}/{before.diastolic} "
            f"mmHg, is at or above the start limit of {policy.before_systolic}/"
            f"{policy.before_diastolic}: record a reading below it, or give a clinician's "
            "override with a reason",
        )
    _move(infusion, "start")
    if high and override is not None:
        infusion.start_override = {
            "clinician": by,
            "reason": override.reason,
            "reading": f"{before.systolic}/{before.diastolic}",
            "at": now.isoformat(),
        }
    infusion.started_at = now
    return InfusionSessionStarted(**about(infusion), number=infusion.number, started_at=now)


def record_vitals(
    infusion: InfusionSession,
    data: VitalsCreate,
    at: datetime,
    by: str,
    policy: VitalsPolicy,
) -> tuple[VitalsReading, InfusionVitalsOutOfRange | None]:
    """Record a set of observations; one that crosses an alert threshold publishes an
    event (the coordinator raises the alert from it)."""
    values = {
        "systolic": data.systolic,
        "diastolic": data.diastolic,
        "heart_rate": data.heart_rate,
        "spo2": data.spo2,
    }
    domain.check_physiological(values, policy)
    _require(infusion, "record vitals")
    phase = PHASE_OF[infusion.status]
    if data.phase is not None and data.phase != phase:
        raise domain.InfusionRuleBroken(
            "phase",
            f"the session is {infusion.status}, so this reading is {phase!r}: leave the "
            "phase out (the session decides it) or send that",
        )
    crossed = domain.vitals_out_of_range(phase, values, policy)
    reading = VitalsReading(
        session_id=infusion.id,
        at=at,
        phase=phase,
        **values,
        out_of_range=crossed,
        recorded_by=by,
    )
    if not crossed:
        return reading, None
    out_of_range = InfusionVitalsOutOfRange(
        **about(infusion), phase=_valid_phase(phase), **values, crossed=crossed, measured_at=at
    )
    return reading, out_of_range


def record_dose(
    infusion: InfusionSession, given_mg: float, reason: str | None, policy: DosePolicy
) -> None:
    """Record the dose given, compared with the session's dose, which follows the current
    plan: outside the policy's tolerance it needs a reason, and is then recorded."""
    _require(infusion, "record the dose given")
    if infusion.status == domain.ABANDONED and infusion.started_at is None:
        raise domain.InfusionRuleBroken("given_mg", "the infusion was never started")
    within = domain.check_dose_given(given_mg, infusion.planned_mg, policy)
    if not within and not reason and infusion.status != domain.ABANDONED:
        raise domain.InfusionRuleBroken(
            "reason",
            f"{given_mg:g} mg differs from the plan's {infusion.planned_mg:g} mg by more than "
            f"{policy.given_tolerance_fraction:.0%}: record it with a reason",
        )
    infusion.given_mg = given_mg
    if reason:
        infusion.given_reason = reason
    elif infusion.status == domain.ABANDONED:
        infusion.given_reason = infusion.status_reason


def record_adverse_event(
    infusion: InfusionSession, data: AdverseEventCreate, by: str, now: datetime
) -> tuple[AdverseEvent, list[Event]]:
    """Record an adverse event; a serious one during the session ends it."""
    _require(infusion, "record an adverse event")
    adverse = AdverseEvent(
        session_id=infusion.id,
        at=now,
        code=data.code,
        severity=data.severity,
        note=data.note or None,
        recorded_by=by,
    )
    serious = data.severity == "serious"
    events: list[Event] = [
        InfusionAdverseEventRecorded(
            **about(infusion),
            code=data.code,
            severity=data.severity,
            serious=serious,
            recorded_at=now,
        )
    ]
    if serious and infusion.status in (domain.CHECKED_IN, domain.IN_PROGRESS):
        # CLINICAL.md: a serious adverse event closes the session (and the coordinator
        # raises the MDT alert from the event).
        events.append(end(infusion, "abandon", f"serious adverse event: {data.code}", now))
    return adverse, events


def complete(
    infusion: InfusionSession,
    course: InfusionCourse,
    plan: DosingPlan,
    baseline: EligibilityAssessment | None,
    scores: tuple[int, int, Score | None],
    completed_before: int,
    now: datetime,
    policy: ChangePolicy,
) -> InfusionSessionCompleted:
    """Complete with the scores after (pain, mood, PHQ-9 if asked): the response is
    measured against the course baseline, the first assessment, and after the induction
    series the next maintenance infusion falls due."""
    pain_nrs, mood, phq9 = scores
    if infusion.given_mg is None and infusion.status == domain.IN_PROGRESS:
        raise domain.InfusionRuleBroken(
            "given_mg", "record the dose given before completing the session"
        )
    _move(infusion, "complete")
    infusion.ended_at = now
    infusion.pain_after, infusion.mood_after = pain_nrs, mood
    if phq9 is not None:
        infusion.phq9_items, infusion.phq9_total = list(phq9.items), phq9.total
    response = domain.response(
        baseline.pain_nrs if baseline else None,
        pain_nrs,
        baseline.phq9_total if baseline else None,
        phq9.total if phq9 else None,
        policy,
    )
    completed = completed_before + 1
    due = domain.maintenance_due(
        now, completed, plan.induction_count, plan.maintenance_interval_days
    )
    course.maintenance_due_at = due
    return InfusionSessionCompleted(
        **about(infusion),
        number=infusion.number,
        kind=as_declared(Kind, infusion.kind),
        completed_at=now,
        given_mg=infusion.given_mg,
        pain_before=infusion.pain_before,
        pain_after=pain_nrs,
        phq9_total=phq9.total if phq9 else None,
        phq9_item9=phq9.items[8] if phq9 else None,
        response=response,
        completed_sessions=completed,
        maintenance_due_at=due,
    )


Ending = Literal["cancel", "abandon"]


def end(
    infusion: InfusionSession, action: Ending, reason: str, now: datetime
) -> InfusionSessionEnded:
    """Cancel (before the infusion starts) or abandon (once the patient is in) with a
    reason; the reason's words stay in the service, the event carries the statuses."""
    previous = infusion.status
    _move(infusion, action)
    infusion.ended_at, infusion.status_reason = now, reason
    if action == "cancel":
        return InfusionSessionCancelled(
            **about(infusion), number=infusion.number, previous_status=previous, ended_at=now
        )
    return InfusionSessionAbandoned(
        **about(infusion),
        number=infusion.number,
        previous_status=previous,
        ended_at=now,
        given_mg=infusion.given_mg,
    )


def abandon(
    infusion: InfusionSession, given_mg: float | None, reason: str, now: datetime
) -> InfusionSessionEnded:
    """Stop early with a reason; an infusion that had started records the dose it gave
    (the abandon reason is why it differs from the plan's)."""
    if given_mg is not None and infusion.status != domain.IN_PROGRESS:
        raise domain.InfusionRuleBroken(
            "given_mg", "no infusion was started: leave the dose given out"
        )
    if given_mg is not None:
        infusion.given_mg, infusion.given_reason = given_mg, reason
    return end(infusion, "abandon", reason, now)


def _valid_phase(phase: str) -> Phase:
    valid: Phase = msgspec.convert(phase, Phase)
    return valid


def _move(infusion: InfusionSession, action: str) -> None:
    infusion.status = domain.next_session_status(infusion.status, action)


def _require(infusion: InfusionSession, action: str) -> None:
    if infusion.status not in RECORDS_ALLOWED[action]:
        raise IllegalTransition("session", infusion.status, action)
