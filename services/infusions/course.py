"""The infusion course aggregate: opened from an accepted referral, assessed, given a
dosing plan, booked into, held, resumed and closed with a reason.

Pure, as the session aggregate (session.py): a step takes the course row, the rows it
judges by (the latest assessment, the plan, the patient's bookings), who acts and the
time, decides through the course's state machine (domain.COURSE) and the clinical rules,
and returns the rows it makes and the events it causes. The commands (services.py) and
the event handler (handlers.py) store them in their unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from services.infusions import domain, session
from services.infusions.models import (
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    OpioidUse,
)
from services.infusions.schemas import (
    AssessmentCreate,
    CourseClosure,
    CourseStatus,
    MedicineTaken,
    PlanCreate,
)
from shared.calendar import working_calendar
from shared.domain import IllegalTransition, as_declared
from shared.events import Subject
from shared.events.catalogue import (
    Event,
    InfusionAssessmentRecorded,
    InfusionCourseClosed,
    InfusionCourseOpened,
    InfusionCourseStatusChanged,
    InfusionMaintenanceOpened,
    InfusionOpioidUseRecorded,
    InfusionPlanAgreed,
    InfusionSessionRedosed,
    InfusionSessionScheduled,
    MdtReviewRecorded,
    ReferralAccepted,
)
from shared.measures import PHQ9, InvalidItems, Score, score
from shared.opioids import (
    TABLES,
    ConversionTable,
    Medicine,
    is_benzodiazepine,
    medicine_mme,
    summarise_for,
)
from shared.policy import ClinicalPolicy, DosePolicy, OpioidPolicy

Outcome = Literal["eligible", "ineligible", "needs-override"]


def subject(course: InfusionCourse) -> Subject:
    return Subject(type="infusion-course", id=str(course.id))


def open_from_referral(
    accepted: ReferralAccepted, patient_id: UUID, now: datetime
) -> tuple[InfusionCourse, InfusionCourseOpened]:
    """An accepted ketamine-infusion referral opens a course, planned until a dosing plan
    is agreed."""
    baseline = msgspec.to_builtins(accepted.baseline) if accepted.baseline else None
    course = InfusionCourse.opened_from(
        accepted, patient_id, domain.PLANNED, referral_baseline=baseline, opened_at=now
    )
    opened = InfusionCourseOpened(
        course_id=course.id,
        referral_id=accepted.referral_id,
        priority=accepted.priority,
        opened_at=now,
    )
    return course, opened


def require_open(course: InfusionCourse, action: str) -> None:
    """A finished or cancelled course takes no more assessments or plans."""
    if course.status in domain.COURSE_CLOSED:
        raise IllegalTransition("course", course.status, action)


def require_active(course: InfusionCourse, action: str) -> None:
    """Infusions need an active course: not before its plan, not while on hold."""
    if course.status != domain.ACTIVE:
        raise IllegalTransition("course", course.status, action)


def require_ready(
    course: InfusionCourse, latest: EligibilityAssessment | None, action: str
) -> None:
    """An infusion goes ahead only on an active course whose latest assessment found
    the patient eligible."""
    require_active(course, action)
    require_eligible(latest)


def require_eligible(latest: EligibilityAssessment | None) -> None:
    """A re-assessment that finds a contraindication stops every infusion after it."""
    if latest is None or latest.outcome != "eligible":
        outcome = latest.outcome if latest else "not assessed"
        raise domain.InfusionRuleBroken(
            "assessment", f"the latest eligibility assessment is {outcome}"
        )


def score_phq9(items: Sequence[int], field: str) -> Score:
    try:
        return score(PHQ9, items, field)
    except InvalidItems as error:
        raise domain.InfusionRuleBroken(error.field, error.message) from None


def record_opioid_use(
    course: InfusionCourse,
    medicines: Sequence[MedicineTaken],
    context: Literal["assessment", "follow-up"],
    by: str,
    now: datetime,
    policy: OpioidPolicy,
) -> tuple[OpioidUse, InfusionOpioidUseRecorded]:
    """Opioid use per medicine, with MME per day from the policy's sourced table, flagged
    at 50 and 90 MME/day and for a benzodiazepine alongside (CLINICAL.md, course rules)."""
    taken = [Medicine(m.drug, m.dose, m.unit, m.route, m.doses_per_day) for m in medicines]
    summary = summarise_for(taken, policy)
    table = TABLES[policy.conversion_table]
    use = OpioidUse(
        course_id=course.id,
        context=context,
        recorded_by=by,
        recorded_at=now,
        conversion_table=summary.table,
        medicines=[
            {**msgspec.to_builtins(given), **_counted(medicine, table)}
            for given, medicine in zip(medicines, taken, strict=True)
        ],
        total_mme_per_day=summary.total_mme_per_day,
        complete=summary.complete,
        flags=list(summary.flags),
        benzodiazepine=summary.benzodiazepine,
    )
    recorded = InfusionOpioidUseRecorded(
        course_id=course.id,
        record_id=use.id,
        context=context,
        conversion_table=summary.table,
        total_mme_per_day=summary.total_mme_per_day,
        complete=summary.complete,
        flags=list(summary.flags),
        benzodiazepine=summary.benzodiazepine,
        recorded_at=now,
    )
    return use, recorded


def _counted(medicine: Medicine, table: ConversionTable) -> dict[str, object]:
    if is_benzodiazepine(medicine.drug):
        return {"mme_per_day": None, "note": "benzodiazepine: flagged with an opioid"}
    counted = medicine_mme(medicine, table)
    return {"mme_per_day": counted.mme_per_day, "note": counted.note}


def assess(
    course: InfusionCourse,
    data: AssessmentCreate,
    by: str,
    now: datetime,
    policy: ClinicalPolicy,
) -> tuple[
    EligibilityAssessment,
    InfusionAssessmentRecorded,
    tuple[OpioidUse, InfusionOpioidUseRecorded] | None,
]:
    """Record an eligibility assessment: the checklist decides eligible, ineligible or
    waiting for a clinician's override of a caution. Opioid use is recorded with it,
    per medicine when the medicines are given."""
    require_open(course, "assess")
    opioids = None
    mme_per_day = data.opioid_mme_per_day
    if data.medicines is not None:
        opioids = record_opioid_use(course, data.medicines, "assessment", by, now, policy.opioids)
        mme_per_day = _agreed_mme(mme_per_day, opioids[0].total_mme_per_day)
    elif mme_per_day is None:
        raise domain.InfusionRuleBroken(
            "medicines",
            "record the opioids the patient takes, per medicine (an empty list if none)",
        )
    dose_policy = policy.dose
    domain.check_physiological(
        {"systolic": data.systolic, "diastolic": data.diastolic, "heart_rate": data.heart_rate},
        policy.vitals,
    )
    domain.check_weight(data.weight_kg, dose_policy)
    eligibility = domain.assess_eligibility(
        {item: answer.present for item, answer in data.checklist.items()},
        [override.caution for override in data.overrides],
        len(data.prior_treatments),
    )
    phq9 = score_phq9(data.phq9_items, "phq9_items")
    assessment = EligibilityAssessment(
        course_id=course.id,
        assessed_by=by,
        assessed_at=now,
        weight_kg=data.weight_kg,
        systolic=data.systolic,
        diastolic=data.diastolic,
        heart_rate=data.heart_rate,
        opioid_mme_per_day=mme_per_day,
        pain_nrs=data.pain_nrs,
        phq9_items=list(phq9.items),
        phq9_total=phq9.total,
        prior_treatments=msgspec.to_builtins(data.prior_treatments),
        checklist=msgspec.to_builtins(data.checklist),
        # Each override names the clinician who made it: the one recording it.
        overrides=[
            {"caution": o.caution, "reason": o.reason, "clinician": by} for o in data.overrides
        ],
        outcome=eligibility.outcome,
    )
    recorded = InfusionAssessmentRecorded(
        course_id=course.id,
        assessment_id=assessment.id,
        outcome=as_declared(Outcome, eligibility.outcome),
        blocked_by=list(eligibility.blocked_by),
        cautions_overridden=list(eligibility.cautions_overridden),
        pain_nrs=data.pain_nrs,
        phq9_total=phq9.total,
        phq9_item9=phq9.items[8],
        opioid_mme_per_day=mme_per_day,
        assessed_at=now,
    )
    return assessment, recorded, opioids


def _agreed_mme(stated: float | None, computed: float) -> float:
    """MME per day sent beside the medicines must be what they come to: two numbers for
    one fact would leave the reader to guess which is true."""
    if stated is not None and abs(stated - computed) > 1:
        raise domain.InfusionRuleBroken(
            "opioid_mme_per_day",
            f"the medicines come to {computed:g} MME per day, not {stated:g}; "
            "leave opioid_mme_per_day out and the service computes it",
        )
    return computed


def preview_plan(
    course: InfusionCourse,
    latest: EligibilityAssessment | None,
    data: PlanCreate,
    policy: DosePolicy,
) -> domain.DoseCheck:
    """What agreeing this plan would give, checked as agreeing checks it (a refusal is
    raised the same way), with nothing saved: the clinician sees the dose first."""
    require_open(course, "agree a plan")
    require_eligible(latest)
    assert latest is not None  # require_eligible
    dose = _checked_dose(data, policy)
    domain.check_plan_weight(data.weight_kg, latest.weight_kg, policy)
    return dose


def _checked_dose(data: PlanCreate, policy: DosePolicy) -> domain.DoseCheck:
    return domain.check_dose(
        indication=data.indication,
        weight_kg=data.weight_kg,
        dose_mg_per_kg=data.dose_mg_per_kg,
        infusion_minutes=data.infusion_minutes,
        rate_mg_per_kg_per_h=data.rate_mg_per_kg_per_h,
        duration_hours=data.duration_hours,
        policy=policy,
    )


def agree_plan(
    course: InfusionCourse,
    latest: EligibilityAssessment | None,
    data: PlanCreate,
    by: str,
    now: datetime,
    policy: DosePolicy,
    sessions: Sequence[InfusionSession] = (),
) -> tuple[DosingPlan, list[Event]]:
    """Agree the dosing plan: a dose outside its band needs an override with a reason,
    above the hard ceiling never. The first plan makes a planned course active; every
    session of the course not yet started (``sessions`` are all of them) is re-dosed
    from it, so a dose is always checked against the current plan."""
    dose = preview_plan(course, latest, data, policy)
    if dose.outside_band and data.override is None:
        raise domain.InfusionRuleBroken(
            dose.outside_band[0],
            f"outside the CLINICAL.md band (acceptable: {dose.why[0]}), or a clinician's "
            "override with a reason",
        )
    override = None
    if dose.outside_band and data.override is not None:
        override = {
            "clinician": by,
            "reason": data.override.reason,
            "fields": list(dose.outside_band),
            "at": now.isoformat(),
        }
    # The plan keeps every value asked for (its fields are the request's), the override
    # as recorded, and the dose they come to.
    asked: dict[str, Any] = {**msgspec.structs.asdict(data), "override": override}
    plan = DosingPlan(
        **asked,
        course_id=course.id,
        total_mg=dose.total_mg,
        rate_mg_per_h=dose.rate_mg_per_h,
        agreed_by=by,
        agreed_at=now,
    )
    events: list[Event] = []
    if course.status == domain.PLANNED:
        events.append(change_status(course, "activate", "dosing plan agreed", now))
    events.append(
        InfusionPlanAgreed(
            course_id=course.id,
            plan_id=plan.id,
            indication=data.indication,
            total_mg=dose.total_mg,
            rate_mg_per_h=dose.rate_mg_per_h,
            induction_count=data.induction_count,
            induction_spacing_days=data.induction_spacing_days,
            maintenance_interval_days=data.maintenance_interval_days,
            overridden_fields=list(dose.outside_band) if override else [],
            agreed_at=now,
        )
    )
    events += redose(plan, sessions, now, policy)
    return plan, events


def session_dose(plan: DosingPlan, first_infusion: bool, policy: DosePolicy) -> float:
    """The dose of one infusion: the plan's, but a chronic-pain course's first outpatient
    infusion is capped at the policy's first-dose limit (Cohen 2018: about 80 mg)."""
    if first_infusion and plan.indication != "depression":
        return min(plan.total_mg, policy.pain_first_infusion_max_mg)
    return plan.total_mg


def redose(
    plan: DosingPlan, sessions: Sequence[InfusionSession], now: datetime, policy: DosePolicy
) -> list[Event]:
    """Every session not yet started takes the new plan and its dose."""
    first = not any(s.status == domain.COMPLETED for s in sessions)
    events: list[Event] = []
    for pending in sessions:
        if pending.status not in (domain.SCHEDULED, domain.CHECKED_IN):
            continue
        previous = pending.planned_mg
        pending.plan_id = plan.id
        pending.planned_mg = session_dose(plan, first, policy)
        events.append(
            InfusionSessionRedosed(
                course_id=pending.course_id,
                session_id=pending.id,
                plan_id=plan.id,
                planned_mg=pending.planned_mg,
                previous_mg=previous,
                redosed_at=now,
            )
        )
    return events


def schedule(
    course: InfusionCourse,
    plan: DosingPlan | None,
    latest: EligibilityAssessment | None,
    booked: Sequence[InfusionSession],
    sessions: Sequence[InfusionSession],
    slot: tuple[datetime, datetime],
    kind: session.Kind,
    now: datetime,
    policy: DosePolicy,
) -> tuple[InfusionSession, InfusionSessionScheduled]:
    """Book the course's next infusion at the plan's dose, in a free slot of the
    patient's (``booked`` are the patient's sessions that hold a slot; ``sessions`` the
    course's). The induction series keeps the plan's count and spacing; a chronic-pain
    series waits for the first infusion and its reassessment (Cohen 2018)."""
    if plan is None:
        raise domain.InfusionRuleBroken("plan", "no dosing plan is agreed for this course yet")
    require_ready(course, latest, "schedule a session")
    start, end = slot
    domain.check_schedule(start, end, now, policy.session_max_hours)
    if domain.overlaps(start, end, [(s.scheduled_start, s.scheduled_end) for s in booked]):
        raise domain.InfusionRuleBroken(
            "start", "overlaps another infusion session of this patient"
        )
    held = [s for s in sessions if s.status in (*domain.OPEN_SESSION, domain.COMPLETED)]
    completed = [s for s in sessions if s.status == domain.COMPLETED]
    if plan.indication != "depression":
        _require_first_infusion_reassessed(held, completed, latest)
    if kind == "induction":
        _check_induction(plan, held, start)
    new = InfusionSession(
        course_id=course.id,
        patient_id=course.patient_id,
        plan_id=plan.id,
        number=len(sessions) + 1,
        kind=kind,
        status=domain.SCHEDULED,
        scheduled_start=start,
        scheduled_end=end,
        planned_mg=session_dose(plan, not completed, policy),
    )
    scheduled = InfusionSessionScheduled(
        **session.about(new),
        number=new.number,
        kind=kind,
        scheduled_start=start,
        scheduled_end=end,
    )
    return new, scheduled


def _require_first_infusion_reassessed(
    held: Sequence[InfusionSession],
    completed: Sequence[InfusionSession],
    latest: EligibilityAssessment | None,
) -> None:
    """CLINICAL.md, "Dosing plan" (Cohen 2018): a first outpatient infusion, then
    reassessment before a series."""
    if not completed:
        if held:
            raise domain.InfusionRuleBroken(
                "assessment",
                "the series waits for the first infusion and its reassessment: book the next "
                "infusion once the first is done and a new assessment is recorded",
            )
        return
    first_ended = min(s.ended_at or s.scheduled_end for s in completed)
    if latest is None or latest.assessed_at < first_ended:
        raise domain.InfusionRuleBroken(
            "assessment",
            "record the reassessment after the first infusion before booking the series",
        )


def _check_induction(plan: DosingPlan, held: Sequence[InfusionSession], start: datetime) -> None:
    """The plan's induction series: at most its count, each at least its spacing apart
    (in days of the clinic's calendar)."""
    inductions = [s for s in held if s.kind == "induction"]
    if len(inductions) >= plan.induction_count:
        raise domain.InfusionRuleBroken(
            "kind",
            f"the induction series of {plan.induction_count} is fully booked: book a "
            "maintenance infusion, or agree a plan with a longer series",
        )
    calendar = working_calendar()
    day = calendar.day_of(start)
    for other in inductions:
        other_day = calendar.day_of(other.scheduled_start)
        if abs((day - other_day).days) < plan.induction_spacing_days:
            raise domain.InfusionRuleBroken(
                "start",
                f"at least {plan.induction_spacing_days} days from the induction infusion on "
                f"{other_day.isoformat()} (the plan's spacing)",
            )


def change_status(
    course: InfusionCourse, action: str, reason: str, now: datetime
) -> InfusionCourseStatusChanged:
    """Move the course through its state machine: activate, hold, resume, finish, cancel."""
    previous = course.status
    course.status = domain.COURSE.next_status(course.status, action)
    course.status_reason = reason
    return InfusionCourseStatusChanged(
        course_id=course.id,
        status=as_declared(CourseStatus, course.status),
        previous_status=previous,
        changed_at=now,
    )


def hold_after_serious_event(course: InfusionCourse, code: str, now: datetime) -> list[Event]:
    """CLINICAL.md, "Course rules": a serious adverse event puts the course on hold until
    an MDT review resumes it (a course already on hold stays so, now held for the MDT)."""
    if course.status not in (domain.ACTIVE, domain.ONHOLD):
        return []
    course.held_for_mdt = True
    if course.status == domain.ONHOLD:
        return []
    reason = f"serious adverse event ({code}): on hold until an MDT review resumes it"
    return [change_status(course, "hold", reason, now)]


def resume(course: InfusionCourse, reason: str, by_mdt: bool, now: datetime) -> list[Event]:
    """Resume a held course; one held for the MDT only by the MDT (its review's decision
    or an MDT member's request)."""
    if course.held_for_mdt and not by_mdt:
        raise domain.InfusionRuleBroken(
            "reason",
            "the course is on hold after a serious adverse event: only an MDT review "
            "resumes it (the MDT's decision to continue, or an MDT member)",
        )
    changed = change_status(course, "resume", reason, now)
    course.held_for_mdt = False
    return [changed]


def act_on_review(
    course: InfusionCourse,
    review: MdtReviewRecorded,
    open_sessions: Sequence[InfusionSession],
    now: datetime,
) -> list[Event]:
    """What the MDT decided, done: ``stop-infusions`` closes the course (stopped), or holds
    it for the MDT while an infusion still runs (its clinician ends it); ``continue``
    resumes a held course; ``start-maintenance`` resumes a held course and opens
    maintenance (due now unless already due). Anything else is not the clinic's to act
    on. A decision already in effect changes nothing, so acting twice is acting once."""
    if course.status in domain.COURSE_CLOSED:
        return []
    note = f"MDT review {review.review_id}: {review.decision}"
    if review.decision == "stop-infusions":
        if any(s.status == domain.IN_PROGRESS for s in open_sessions):
            course.held_for_mdt = True
            if course.status != domain.ACTIVE:
                return []
            return [change_status(course, "hold", f"{note}, once the running infusion ends", now)]
        return close(course, open_sessions, CourseClosure(reason="stopped", note=note), now)
    if review.decision not in ("continue", "start-maintenance"):
        return []
    events: list[Event] = []
    if course.status == domain.ONHOLD:
        events += resume(course, note, True, now)
    if review.decision == "start-maintenance" and course.status == domain.ACTIVE:
        course.maintenance_due_at = course.maintenance_due_at or now
        events.append(
            InfusionMaintenanceOpened(
                course_id=course.id,
                review_id=review.review_id,
                maintenance_due_at=course.maintenance_due_at,
                opened_at=now,
            )
        )
    return events


def close(
    course: InfusionCourse,
    open_sessions: Sequence[InfusionSession],
    closure: CourseClosure,
    now: datetime,
) -> list[Event]:
    """Close with a reason (which decides finished or cancelled); the sessions still
    booked will not happen now, so they are cancelled first."""
    require_open(course, "close")
    if any(s.status == domain.IN_PROGRESS for s in open_sessions):
        # An infusion running now is ended by its clinician, never by a closing course.
        raise IllegalTransition("infusion", domain.IN_PROGRESS, "close the course")
    cancelled = [session.end(booked, "cancel", "course closed", now) for booked in open_sessions]
    action = domain.close_action(closure.reason)
    changed = change_status(course, action, closure.note or closure.reason, now)
    course.closed_at, course.close_reason, course.maintenance_due_at = now, closure.reason, None
    closed = InfusionCourseClosed(
        course_id=course.id, referral_id=course.referral_id, reason=closure.reason, closed_at=now
    )
    return [*cancelled, changed, closed]
