"""Infusion commands through the service layer: what each writes, publishes (typed
events, in order) and audits, and that a refused command (an illegal transition or a
broken clinical rule) writes nothing. Who may call a command is the routes' guards,
covered over HTTP in test_infusions_api.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from services.infusions import domain, services
from services.infusions.models import (
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    VitalsReading,
)
from services.infusions.schemas import (
    Abandonment,
    AdverseEventCreate,
    AssessmentCreate,
    CautionOverride,
    ChecklistItem,
    CourseClosure,
    DoseGiven,
    DoseOverride,
    PlanCreate,
    PriorTreatment,
    Reason,
    ScoresBefore,
    SessionCompletion,
    SessionCreate,
    StartInfusion,
    StartOverride,
    VitalsCreate,
)
from services.infusions.session import Kind
from shared.auth import Role
from shared.clock import clinic_clock
from shared.domain import IllegalTransition, RuleBroken
from shared.events.catalogue import (
    BaselineScores,
    CourseCloseReason,
    InfusionAdverseEventRecorded,
    InfusionAssessmentRecorded,
    InfusionCourseClosed,
    InfusionCourseOpened,
    InfusionCourseStatusChanged,
    InfusionMaintenanceOpened,
    InfusionPlanAgreed,
    InfusionSessionAbandoned,
    InfusionSessionCancelled,
    InfusionSessionCompleted,
    InfusionSessionRedosed,
    InfusionSessionStarted,
    InfusionVitalsOutOfRange,
    MdtDecision,
    MdtReviewRecorded,
    ReferralAccepted,
)
from shared.policy import clinical_policy
from shared.tables import utcnow

from .conftest import Store, user

CLINICIAN = user(Role.infusion_clinician, "ketamine-1")
MDT = user(Role.mdt, "mdt-1")
TABLES = (InfusionCourse, EligibilityAssessment, DosingPlan, InfusionSession, VitalsReading)


@pytest.fixture
def clinic(store: Callable[[str], Store]) -> Store:
    return store("infusions")


def _accepted() -> ReferralAccepted:
    return ReferralAccepted(
        referral_id=uuid4(),
        target="ketamine-infusion",
        priority="urgent",
        conditions=["crps"],
        accepted_at=utcnow(),
        baseline=BaselineScores(phq9_total=12, phq9_item9=0, pain_nrs=8),
    )


def _open(clinic: Store, accepted: ReferralAccepted) -> InfusionCourse | None:
    """As the handler does: in the consuming transaction, committed by the caller."""
    uow = clinic.uow(CLINICIAN)
    with uow:
        opened = services.open_course(accepted, uuid4(), uow, causation_id="event-1")
        uow.commit()
    return opened


def _assessment(**changes: Any) -> AssessmentCreate:
    fields: dict[str, Any] = {
        "weight_kg": 80,
        "systolic": 125,
        "diastolic": 80,
        "heart_rate": 70,
        "opioid_mme_per_day": 0,
        "pain_nrs": 8,
        "phq9_items": [2, 2, 1, 1, 1, 1, 1, 1, 0],
        "prior_treatments": [PriorTreatment(name="amitriptyline", kind="medicine")],
        "checklist": {item: ChecklistItem(present=False) for item in domain.CHECKLIST},
    }
    return AssessmentCreate(**(fields | changes))


def _course(clinic: Store, *, planned: bool = True, **plan: Any) -> InfusionCourse:
    """A course opened, assessed eligible and (unless not planned) with a plan of 0.5
    mg/kg over 40 minutes for 80 kg: 40 mg."""
    opened = _open(clinic, _accepted())
    assert opened is not None
    services.assess(opened.id, _assessment(), clinic.uow(CLINICIAN), CLINICIAN)
    if planned:
        data = PlanCreate(
            indication="depression",
            weight_kg=80,
            dose_mg_per_kg=0.5,
            infusion_minutes=40,
            **plan,
        )
        services.agree_plan(opened.id, data, clinic.uow(CLINICIAN), CLINICIAN)
    return opened


def _schedule(clinic: Store, course: InfusionCourse, days: int = 1) -> InfusionSession:
    start = utcnow() + timedelta(days=days)
    data = SessionCreate(start=start, end=start + timedelta(hours=2))
    return services.schedule(course.id, data, clinic.uow(CLINICIAN), CLINICIAN)


def _vitals(systolic: int = 125) -> VitalsCreate:
    return VitalsCreate(systolic=systolic, diastolic=80, heart_rate=70, spo2=98)


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    """A test that moves the clinic clock (to a booked day) puts it back."""
    yield
    clinic_clock().reset()


def _on_the_day(booked: InfusionSession) -> None:
    """The clinic clock moved to the booked start: an infusion starts on its day."""
    clinic_clock().set(booked.scheduled_start)


def _started(clinic: Store, course: InfusionCourse) -> InfusionSession:
    booked = _schedule(clinic, course)
    _on_the_day(booked)
    services.check_in(booked.id, clinic.uow(CLINICIAN), CLINICIAN)
    services.record_vitals(booked.id, _vitals(), clinic.uow(CLINICIAN), CLINICIAN)
    return services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN)


def _written(clinic: Store) -> tuple[int, ...]:
    return (
        len(clinic.events()),
        len(clinic.audit()),
        *(len(clinic.rows(table)) for table in TABLES),
    )


def test_an_accepted_referral_opens_one_planned_course_with_its_baseline(clinic: Store) -> None:
    accepted = _accepted()
    opened = _open(clinic, accepted)
    assert opened is not None
    assert _open(clinic, accepted) is None  # a replay opens nothing more
    assert clinic.events() == [
        InfusionCourseOpened(
            course_id=opened.id,
            referral_id=accepted.referral_id,
            priority="urgent",
            opened_at=opened.opened_at,
        )
    ]
    (stored,) = clinic.rows(InfusionCourse)
    assert (stored.status, stored.conditions) == ("planned", ["crps"])
    assert stored.referral_baseline == {"phq9_total": 12, "phq9_item9": 0, "pain_nrs": 8}
    assert clinic.audit() == []  # a worker's unit of work audits nothing of its own


def test_an_assessment_with_an_overridden_caution_is_eligible_and_audited_so(
    clinic: Store,
) -> None:
    opened = _open(clinic, _accepted())
    assert opened is not None
    checklist = {item: ChecklistItem(present=False) for item in domain.CHECKLIST}
    checklist["controlled-hypertension"] = ChecklistItem(present=True)
    override = CautionOverride(caution="controlled-hypertension", reason="well controlled")
    data = _assessment(checklist=checklist, overrides=[override])
    stored, _ = services.assess(opened.id, data, clinic.uow(CLINICIAN), CLINICIAN)

    assert stored.outcome == "eligible"
    assert stored.overrides == [
        {
            "caution": "controlled-hypertension",
            "reason": "well controlled",
            "clinician": "ketamine-1",
        }
    ]
    recorded = clinic.events()[-1]
    assert isinstance(recorded, InfusionAssessmentRecorded)
    assert (recorded.outcome, recorded.cautions_overridden) == (
        "eligible",
        ["controlled-hypertension"],
    )
    assert (recorded.phq9_total, recorded.phq9_item9) == (10, 0)
    assert clinic.audit()[-1] == (
        "C",
        "EligibilityAssessment",
        "caution override: controlled-hypertension",
    )


def test_the_first_plan_activates_the_course_then_publishes_the_plan(clinic: Store) -> None:
    course = _course(clinic)
    changed, agreed = clinic.events()[-2:]
    assert isinstance(changed, InfusionCourseStatusChanged)
    assert (changed.course_id, changed.status, changed.previous_status) == (
        course.id,
        "active",
        "planned",
    )
    assert isinstance(agreed, InfusionPlanAgreed)
    assert (agreed.total_mg, agreed.rate_mg_per_h, agreed.overridden_fields) == (40.0, 60.0, [])
    (stored,) = clinic.rows(InfusionCourse)
    assert (stored.status, stored.status_reason) == ("active", "dosing plan agreed")
    assert clinic.audit()[-1] == ("C", "DosingPlan", None)


def test_a_dose_outside_the_band_without_an_override_writes_nothing(clinic: Store) -> None:
    course = _course(clinic, planned=False)
    before = _written(clinic)
    data = PlanCreate(
        indication="depression", weight_kg=80, dose_mg_per_kg=0.9, infusion_minutes=40
    )
    with pytest.raises(RuleBroken) as refused:
        services.agree_plan(course.id, data, clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "dose_mg_per_kg"
    assert _written(clinic) == before
    assert clinic.rows(InfusionCourse)[0].status == "planned"


def test_a_held_course_takes_no_bookings_and_the_refusal_writes_nothing(clinic: Store) -> None:
    course = _course(clinic)
    services.hold(course.id, Reason(reason="MDT review"), clinic.uow(MDT), MDT)
    assert clinic.audit()[-1] == ("U", "EpisodeOfCare", "status onhold")
    before = _written(clinic)
    with pytest.raises(IllegalTransition) as refused:
        _schedule(clinic, course)
    assert (refused.value.thing, refused.value.current) == ("course", "onhold")
    with pytest.raises(IllegalTransition):
        services.hold(course.id, Reason(reason="twice"), clinic.uow(MDT), MDT)
    assert _written(clinic) == before


def test_starting_without_vitals_before_breaks_a_rule_and_writes_nothing(clinic: Store) -> None:
    booked = _schedule(clinic, _course(clinic))
    _on_the_day(booked)
    services.check_in(booked.id, clinic.uow(CLINICIAN), CLINICIAN)
    before = _written(clinic)
    with pytest.raises(RuleBroken) as refused:
        services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "vitals"
    assert _written(clinic) == before
    assert clinic.rows(InfusionSession)[0].status == "checked-in"


def test_vitals_over_the_threshold_are_stored_and_published_with_what_crossed(
    clinic: Store,
) -> None:
    booked = _schedule(clinic, _course(clinic))
    services.check_in(booked.id, clinic.uow(CLINICIAN), CLINICIAN)
    limit = clinical_policy().vitals.before_systolic
    reading = services.record_vitals(
        booked.id, _vitals(systolic=limit + 5), clinic.uow(CLINICIAN), CLINICIAN
    )
    crossed = [f"systolic {limit + 5} ≥ {limit}"]
    assert reading.out_of_range == crossed
    event = clinic.events()[-1]
    assert isinstance(event, InfusionVitalsOutOfRange)
    assert (event.session_id, event.phase, event.crossed) == (booked.id, "before", crossed)
    assert clinic.audit()[-1] == ("C", "Observation", "vitals out of range")
    services.record_vitals(booked.id, _vitals(), clinic.uow(CLINICIAN), CLINICIAN)
    assert clinic.events()[-1] == event  # a reading in range publishes nothing


def test_a_completed_session_publishes_its_response_and_the_maintenance_due(
    clinic: Store,
) -> None:
    course = _course(clinic, induction_count=1, maintenance_interval_days=28)
    started = _started(clinic, course)
    assert isinstance(clinic.events()[-1], InfusionSessionStarted)
    services.record_scores_before(
        started.id, ScoresBefore(pain_nrs=8, mood=3), clinic.uow(CLINICIAN), CLINICIAN
    )
    services.record_dose(started.id, DoseGiven(given_mg=42), clinic.uow(CLINICIAN), CLINICIAN)
    done = services.complete(
        started.id,
        SessionCompletion(pain_nrs=4, mood=6, phq9_items=[1, 1, 0, 1, 0, 1, 0, 1, 0]),
        clinic.uow(CLINICIAN),
        CLINICIAN,
    )
    completed = clinic.events()[-1]
    assert isinstance(completed, InfusionSessionCompleted)
    assert (completed.given_mg, completed.pain_before, completed.pain_after) == (42, 8, 4)
    assert completed.response.pain_change_fraction == 0.5  # from the course baseline, 8
    assert completed.response.phq9_change_fraction == 0.5  # 10 at assessment, 5 now
    assert completed.completed_sessions == 1
    assert done.ended_at is not None
    assert completed.maintenance_due_at == done.ended_at + timedelta(days=28)
    assert clinic.rows(InfusionCourse)[0].maintenance_due_at == completed.maintenance_due_at
    details = [detail for _, entity, detail in clinic.audit() if entity == "Procedure"]
    assert details == ["checked in", "started", "scores before", "completed"]


def test_a_serious_adverse_event_abandons_the_session_it_happened_in(clinic: Store) -> None:
    started = _started(clinic, _course(clinic))
    serious = AdverseEventCreate(code="hypertension", severity="serious")
    ended = services.record_adverse_event(started.id, serious, clinic.uow(CLINICIAN), CLINICIAN)
    assert (ended.status, ended.status_reason) == (
        "abandoned",
        "serious adverse event: hypertension",
    )
    recorded, abandoned, held = clinic.events()[-3:]
    assert isinstance(recorded, InfusionAdverseEventRecorded) and recorded.serious
    assert isinstance(held, InfusionCourseStatusChanged) and held.status == "onhold"
    assert isinstance(abandoned, InfusionSessionAbandoned)
    assert abandoned.previous_status == "in-progress"
    assert clinic.audit()[-1] == ("C", "AdverseEvent", "hypertension serious")


@pytest.mark.parametrize(
    ("reason", "status"), [("completed", "finished"), ("declined", "cancelled")]
)
def test_closing_cancels_the_booked_sessions_then_closes_the_course(
    clinic: Store, reason: CourseCloseReason, status: str
) -> None:
    course = _course(clinic)
    booked = _schedule(clinic, course)
    closure = CourseClosure(reason=reason)
    closed = services.close(course.id, closure, clinic.uow(CLINICIAN), CLINICIAN)
    assert (closed.status, closed.close_reason) == (status, reason)
    assert domain.status_after_closing(reason) == status  # the rule the coordinator can import
    cancelled, changed, closing = clinic.events()[-3:]
    assert isinstance(cancelled, InfusionSessionCancelled) and cancelled.session_id == booked.id
    assert isinstance(changed, InfusionCourseStatusChanged) and changed.status == status
    assert isinstance(closing, InfusionCourseClosed)
    assert (closing.course_id, closing.referral_id, closing.reason) == (
        course.id,
        course.referral_id,
        reason,
    )
    assert closing.closed_at == closed.closed_at
    assert clinic.rows(InfusionSession)[0].status == "cancelled"
    assert clinic.audit()[-1] == ("U", "EpisodeOfCare", f"closed: {reason}")


def test_a_course_with_an_infusion_running_is_not_closed_and_nothing_is_written(
    clinic: Store,
) -> None:
    course = _course(clinic)
    _started(clinic, course)
    before = _written(clinic)
    with pytest.raises(IllegalTransition) as refused:
        services.close(course.id, CourseClosure(reason="stopped"), clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.current == "in-progress"
    assert _written(clinic) == before
    assert clinic.rows(InfusionCourse)[0].status == "active"


# --- issue 12: the infusion-side safety rules ------------------------------------------


def _refused_plan(clinic: Store, course: InfusionCourse, data: PlanCreate) -> RuleBroken:
    before = _written(clinic)
    with pytest.raises(RuleBroken) as refused:
        services.agree_plan(course.id, data, clinic.uow(CLINICIAN), CLINICIAN)
    assert _written(clinic) == before
    return refused.value


def test_a_depression_plan_faster_than_the_policy_rate_is_refused_unless_overridden(
    clinic: Store,
) -> None:
    """Issue 12; CLINICAL.md "Dosing plan": 0.5 mg/kg over 40 minutes (Sanacora 2017) is
    0.75 mg/kg/h (dose.depression_max_mg_per_kg_per_h); 0.75 mg/kg over 10 minutes passed."""
    course = _course(clinic, planned=False)
    fast = PlanCreate(
        indication="depression", weight_kg=80, dose_mg_per_kg=0.75, infusion_minutes=10
    )
    refused = _refused_plan(clinic, course, fast)
    assert refused.field == "infusion_minutes"
    assert "over at least 60 minutes" in refused.message
    overridden = PlanCreate(
        indication="depression",
        weight_kg=80,
        dose_mg_per_kg=0.75,
        infusion_minutes=10,
        override=DoseOverride(reason="trial protocol agreed at MDT"),
    )
    plan = services.agree_plan(course.id, overridden, clinic.uow(CLINICIAN), CLINICIAN)
    assert plan.override is not None
    assert (plan.override["clinician"], plan.override["fields"]) == (
        "ketamine-1",
        ["infusion_minutes"],
    )


def test_an_override_does_not_pass_the_hard_duration_ceiling(clinic: Store) -> None:
    """Issue 12 (local policy, dose.pain_ceiling_hours): 1 mg/kg/h x 48 h with an override
    passed."""
    course = _course(clinic, planned=False)
    data = PlanCreate(
        indication="pain",
        weight_kg=80,
        rate_mg_per_kg_per_h=1.0,
        duration_hours=48,
        override=DoseOverride(reason="asked for"),
    )
    assert _refused_plan(clinic, course, data).field == "duration_hours"


def test_a_plan_weight_in_pounds_is_refused(clinic: Store) -> None:
    """Issue 12; CLINICAL.md "Dosing plan": the weight used is the patient's, within
    dose.plan_weight_difference_fraction (10%) of the latest assessment's 80 kg."""
    course = _course(clinic, planned=False)
    pounds = PlanCreate(
        indication="depression", weight_kg=176, dose_mg_per_kg=0.5, infusion_minutes=40
    )
    refused = _refused_plan(clinic, course, pounds)
    assert refused.field == "weight_kg"
    assert "80 kg" in refused.message
    close = PlanCreate(
        indication="depression", weight_kg=88, dose_mg_per_kg=0.5, infusion_minutes=40
    )
    assert services.agree_plan(course.id, close, clinic.uow(CLINICIAN), CLINICIAN).total_mg == 44


def test_a_serious_adverse_event_holds_the_course_until_an_mdt_review_resumes_it(
    clinic: Store,
) -> None:
    """Issue 12; CLINICAL.md "Course rules": a serious adverse event puts the course on
    hold until an MDT review resumes it; a clinician's resume is refused."""
    course = _course(clinic)
    started = _started(clinic, course)
    serious = AdverseEventCreate(code="hypertension", severity="serious")
    services.record_adverse_event(started.id, serious, clinic.uow(CLINICIAN), CLINICIAN)
    held = clinic.events()[-1]
    assert isinstance(held, InfusionCourseStatusChanged)
    assert (held.status, held.previous_status) == ("onhold", "active")
    (stored,) = clinic.rows(InfusionCourse)
    assert (stored.status, stored.held_for_mdt) == ("onhold", True)
    before = _written(clinic)
    with pytest.raises(RuleBroken) as refused:
        services.resume(course.id, Reason(reason="fine now"), clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "reason" and "MDT" in refused.value.message
    assert _written(clinic) == before
    resumed = services.resume(course.id, Reason(reason="MDT: continue"), clinic.uow(MDT), MDT)
    assert (resumed.status, resumed.held_for_mdt) == ("active", False)


def _review(decision: MdtDecision, referral_id: Any = None) -> MdtReviewRecorded:
    return MdtReviewRecorded(
        review_id=uuid4(),
        decision=decision,
        attendees=["Dr Pain"],
        reviewed_by="mdt-1",
        reviewed_at=utcnow(),
        referral_id=referral_id,
    )


def _act(clinic: Store, course: InfusionCourse, review: MdtReviewRecorded) -> None:
    uow = clinic.uow(MDT)
    with uow:
        services.act_on_review(review, course.patient_id, uow, causation_id=str(review.review_id))
        uow.commit()


def test_an_mdt_decision_to_stop_infusions_closes_the_course_once(clinic: Store) -> None:
    """Issue 12: the infusions service consumes mdt.review.recorded; stop-infusions closes
    the course (stopped, its booked sessions cancelled); acting twice adds nothing."""
    course = _course(clinic)
    booked = _schedule(clinic, course)
    review = _review("stop-infusions", course.referral_id)
    _act(clinic, course, review)
    (stored,) = clinic.rows(InfusionCourse)
    assert (stored.status, stored.close_reason) == ("finished", "stopped")
    assert clinic.rows(InfusionSession)[0].status == "cancelled"
    cancelled, _, closed = clinic.events()[-3:]
    assert isinstance(cancelled, InfusionSessionCancelled) and cancelled.session_id == booked.id
    assert isinstance(closed, InfusionCourseClosed) and closed.reason == "stopped"
    before = _written(clinic)
    _act(clinic, course, review)
    assert _written(clinic) == before


def test_an_mdt_stop_while_an_infusion_runs_holds_the_course_for_the_mdt(clinic: Store) -> None:
    course = _course(clinic)
    _started(clinic, course)
    _act(clinic, course, _review("stop-infusions"))
    (stored,) = clinic.rows(InfusionCourse)
    assert (stored.status, stored.held_for_mdt) == ("onhold", True)


def test_the_mdt_decision_to_continue_resumes_a_course_held_after_a_serious_event(
    clinic: Store,
) -> None:
    """Issue 12; CLINICAL.md "Course rules": the MDT review (decision continue) resumes it."""
    course = _course(clinic)
    started = _started(clinic, course)
    serious = AdverseEventCreate(code="sedation", severity="serious")
    services.record_adverse_event(started.id, serious, clinic.uow(CLINICIAN), CLINICIAN)
    _act(clinic, course, _review("continue"))
    (stored,) = clinic.rows(InfusionCourse)
    assert (stored.status, stored.held_for_mdt) == ("active", False)
    resumed = clinic.events()[-1]
    assert isinstance(resumed, InfusionCourseStatusChanged) and resumed.status == "active"
    before = _written(clinic)
    _act(clinic, course, _review("continue"))  # nothing held: nothing to do
    assert _written(clinic) == before


def test_the_mdt_decision_to_start_maintenance_opens_it(clinic: Store) -> None:
    course = _course(clinic)
    review = _review("start-maintenance")
    _act(clinic, course, review)
    opened = clinic.events()[-1]
    assert isinstance(opened, InfusionMaintenanceOpened)
    assert (opened.course_id, opened.review_id) == (course.id, review.review_id)
    (stored,) = clinic.rows(InfusionCourse)
    assert stored.maintenance_due_at == opened.maintenance_due_at


def _checked_in_with(clinic: Store, systolic: int, diastolic: int) -> InfusionSession:
    booked = _schedule(clinic, _course(clinic))
    _on_the_day(booked)
    services.check_in(booked.id, clinic.uow(CLINICIAN), CLINICIAN)
    reading = VitalsCreate(systolic=systolic, diastolic=diastolic, heart_rate=70, spo2=98)
    services.record_vitals(booked.id, reading, clinic.uow(CLINICIAN), CLINICIAN)
    return booked


@pytest.mark.parametrize(("systolic", "diastolic"), [(160, 80), (130, 100), (185, 115)])
def test_a_reading_at_the_start_limit_blocks_the_start_without_an_override(
    clinic: Store, systolic: int, diastolic: int
) -> None:
    """Issue 12; CLINICAL.md "During a session": systolic >= 160 or diastolic >= 100
    before starting (local policy, vitals.before_systolic/before_diastolic)."""
    booked = _checked_in_with(clinic, systolic, diastolic)
    before = _written(clinic)
    with pytest.raises(RuleBroken) as refused:
        services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "override.reason"
    assert "160/100" in refused.value.message
    assert _written(clinic) == before
    override = StartInfusion(override=StartOverride(reason="anxious; repeat BP at 10 min"))
    started = services.start(booked.id, override, clinic.uow(CLINICIAN), CLINICIAN)
    assert started.status == "in-progress"
    assert started.start_override is not None
    assert (started.start_override["clinician"], started.start_override["reading"]) == (
        "ketamine-1",
        f"{systolic}/{diastolic}",
    )
    assert clinic.audit()[-1] == ("U", "Procedure", "started over a high reading (override)")


def test_a_reading_just_below_the_start_limit_starts(clinic: Store) -> None:
    booked = _checked_in_with(clinic, 159, 99)
    started = services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN)
    assert (started.status, started.start_override) == ("in-progress", None)


def test_the_latest_reading_before_decides_the_start(clinic: Store) -> None:
    booked = _checked_in_with(clinic, 170, 95)
    services.record_vitals(booked.id, _vitals(140), clinic.uow(CLINICIAN), CLINICIAN)
    assert services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN).status == (
        "in-progress"
    )


def test_the_vitals_phase_follows_the_session(clinic: Store) -> None:
    """Issue 12: the phase is derived from the session's state; an old client's phase is
    accepted when it agrees and refused (naming the phase) when it contradicts."""
    started = _started(clinic, _course(clinic))
    during = services.record_vitals(started.id, _vitals(), clinic.uow(CLINICIAN), CLINICIAN)
    assert during.phase == "during"
    agreed = VitalsCreate(phase="during", systolic=130, diastolic=80, heart_rate=70, spo2=97)
    assert services.record_vitals(started.id, agreed, clinic.uow(CLINICIAN), CLINICIAN).phase == (
        "during"
    )
    stale = VitalsCreate(phase="before", systolic=130, diastolic=80, heart_rate=70, spo2=97)
    with pytest.raises(RuleBroken) as refused:
        services.record_vitals(started.id, stale, clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "phase"


def test_an_infusion_is_not_started_before_its_booked_day(clinic: Store) -> None:
    """Issue 12: not before its scheduled day, in the clinic's time zone (Europe/London)."""
    booked = _schedule(clinic, _course(clinic), days=2)
    clinic_clock().set(booked.scheduled_start - timedelta(days=1))
    services.check_in(booked.id, clinic.uow(CLINICIAN), CLINICIAN)
    services.record_vitals(booked.id, _vitals(), clinic.uow(CLINICIAN), CLINICIAN)
    with pytest.raises(RuleBroken) as refused:
        services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "scheduled_start"
    _on_the_day(booked)
    assert services.start(booked.id, None, clinic.uow(CLINICIAN), CLINICIAN).status == (
        "in-progress"
    )


def test_a_dose_outside_the_tolerance_is_recorded_with_a_reason(clinic: Store) -> None:
    """Issue 12; CLINICAL.md "Dosing plan": a dose more than 10% from the plan's
    (dose.given_tolerance_fraction) needs a reason; it is never unrecordable."""
    started = _started(clinic, _course(clinic))  # 40 mg planned
    before = _written(clinic)
    with pytest.raises(RuleBroken) as refused:
        services.record_dose(started.id, DoseGiven(given_mg=44.1), clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "reason"
    assert _written(clinic) == before
    services.record_dose(started.id, DoseGiven(given_mg=44), clinic.uow(CLINICIAN), CLINICIAN)
    given = DoseGiven(given_mg=60, reason="line flushed twice")
    stored = services.record_dose(started.id, given, clinic.uow(CLINICIAN), CLINICIAN)
    assert (stored.given_mg, stored.given_reason) == (60, "line flushed twice")
    assert clinic.audit()[-1] == ("U", "MedicationAdministration", "dose given with a reason")


def test_an_abandoned_infusion_records_the_dose_it_gave(clinic: Store) -> None:
    """Issue 12: the real dose given is recordable when an infusion stops early."""
    started = _started(clinic, _course(clinic))
    stop = Abandonment(reason="vomiting at 20 min", given_mg=12)
    ended = services.abandon(started.id, stop, clinic.uow(CLINICIAN), CLINICIAN)
    assert (ended.status, ended.given_mg, ended.given_reason) == (
        "abandoned",
        12,
        "vomiting at 20 min",
    )
    abandoned = clinic.events()[-1]
    assert isinstance(abandoned, InfusionSessionAbandoned) and abandoned.given_mg == 12
    # Or afterwards, on the abandoned session: the abandon reason explains the difference.
    later = _started(clinic, _course(clinic))
    services.abandon(
        later.id, Abandonment(reason="cannula tissued"), clinic.uow(CLINICIAN), CLINICIAN
    )
    stored = services.record_dose(later.id, DoseGiven(given_mg=5), clinic.uow(CLINICIAN), CLINICIAN)
    assert (stored.given_mg, stored.given_reason) == (5, "cannula tissued")


def test_a_session_never_started_takes_no_dose_given(clinic: Store) -> None:
    booked = _schedule(clinic, _course(clinic))
    _on_the_day(booked)
    services.check_in(booked.id, clinic.uow(CLINICIAN), CLINICIAN)
    with pytest.raises(RuleBroken) as refused:
        services.abandon(
            booked.id, Abandonment(reason="x", given_mg=3), clinic.uow(CLINICIAN), CLINICIAN
        )
    assert refused.value.field == "given_mg"


def _book(clinic: Store, course: InfusionCourse, days: int, kind: Kind = "induction") -> Any:
    start = utcnow() + timedelta(days=days)
    data = SessionCreate(start=start, end=start + timedelta(hours=2), kind=kind)
    return services.schedule(course.id, data, clinic.uow(CLINICIAN), CLINICIAN)


def test_a_new_plan_redoses_every_session_not_yet_started(clinic: Store) -> None:
    """Issue 12: agreeing a new plan re-doses every session not yet started; the dose
    given is checked against the current plan."""
    course = _course(clinic, induction_count=3)  # 0.5 mg/kg x 80 kg = 40 mg
    first = _book(clinic, course, 1)
    second = _book(clinic, course, 4)
    newer = PlanCreate(
        indication="depression", weight_kg=80, dose_mg_per_kg=0.3, infusion_minutes=40
    )
    plan = services.agree_plan(course.id, newer, clinic.uow(CLINICIAN), CLINICIAN)
    stored = {s.id: s for s in clinic.rows(InfusionSession)}
    assert [(stored[s.id].planned_mg, stored[s.id].plan_id) for s in (first, second)] == [
        (24, plan.id),
        (24, plan.id),
    ]
    redosed = clinic.events()[-2:]
    assert all(isinstance(e, InfusionSessionRedosed) for e in redosed)
    assert [
        (e.previous_mg, e.planned_mg) for e in redosed if isinstance(e, InfusionSessionRedosed)
    ] == [
        (40, 24),
        (40, 24),
    ]
    clinic_clock().set(first.scheduled_start)
    services.check_in(first.id, clinic.uow(CLINICIAN), CLINICIAN)
    services.record_vitals(first.id, _vitals(), clinic.uow(CLINICIAN), CLINICIAN)
    services.start(first.id, None, clinic.uow(CLINICIAN), CLINICIAN)
    with pytest.raises(RuleBroken) as refused:  # 40 mg was the old plan's dose
        services.record_dose(first.id, DoseGiven(given_mg=40), clinic.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "reason" and "24 mg" in refused.value.message


def test_the_induction_series_count_and_spacing_are_kept_when_booking(clinic: Store) -> None:
    """Issue 12; CLINICAL.md "Course rules": the plan's induction series (count, minimum
    spacing in days) is enforced when booking."""
    course = _course(clinic, induction_count=2, induction_spacing_days=3)
    _book(clinic, course, 1)
    with pytest.raises(RuleBroken) as too_close:
        _book(clinic, course, 3)
    assert too_close.value.field == "start" and "at least 3 days" in too_close.value.message
    _book(clinic, course, 4)
    with pytest.raises(RuleBroken) as too_many:
        _book(clinic, course, 8)
    assert too_many.value.field == "kind"
    _book(clinic, course, 8, kind="maintenance")


def test_the_first_pain_infusion_is_capped_and_the_series_waits_for_its_reassessment(
    clinic: Store,
) -> None:
    """Issue 12; CLINICAL.md "Dosing plan" (Cohen 2018): a first outpatient infusion of
    about 80 mg (dose.pain_first_infusion_max_mg), then reassessment before a series."""
    course = _course(clinic, planned=False)
    pain = PlanCreate(indication="pain", weight_kg=80, rate_mg_per_kg_per_h=0.3, duration_hours=4)
    plan = services.agree_plan(course.id, pain, clinic.uow(CLINICIAN), CLINICIAN)
    assert plan.total_mg == 96
    first = _book(clinic, course, 1)
    assert first.planned_mg == clinical_policy().dose.pain_first_infusion_max_mg == 80
    with pytest.raises(RuleBroken) as waits:
        _book(clinic, course, 5)
    assert waits.value.field == "assessment"
    clinic_clock().set(first.scheduled_start)
    services.check_in(first.id, clinic.uow(CLINICIAN), CLINICIAN)
    services.record_vitals(first.id, _vitals(), clinic.uow(CLINICIAN), CLINICIAN)
    services.start(first.id, None, clinic.uow(CLINICIAN), CLINICIAN)
    services.record_dose(first.id, DoseGiven(given_mg=80), clinic.uow(CLINICIAN), CLINICIAN)
    done = SessionCompletion(pain_nrs=5, mood=5)
    services.complete(first.id, done, clinic.uow(CLINICIAN), CLINICIAN)
    with pytest.raises(RuleBroken) as reassess:
        _book(clinic, course, 5)
    assert reassess.value.field == "assessment" and "reassessment" in reassess.value.message
    services.assess(course.id, _assessment(), clinic.uow(CLINICIAN), CLINICIAN)
    assert _book(clinic, course, 5).planned_mg == 96
