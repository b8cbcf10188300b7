"""HTTP controllers of the infusions service: courses, assessments, plans, sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody
from sqlmodel import Session, col, select

from services.infusions import domain
from services.infusions.models import (
    AdverseEvent,
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    VitalsReading,
)
from services.infusions.schemas import (
    AdverseEventCreate,
    AdverseEventRead,
    AssessmentCreate,
    AssessmentRead,
    ChecklistItem,
    CourseClosure,
    CoursePage,
    CourseRead,
    DoseGiven,
    PlanCreate,
    PlanRead,
    PriorTreatment,
    Reason,
    ScoresBefore,
    SessionCompletion,
    SessionCreate,
    SessionRead,
    VitalsCreate,
    VitalsRead,
)
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, User, requires
from shared.errors import Conflict, FieldProblem
from shared.events import Actor, Subject
from shared.events.catalogue import (
    Event,
    InfusionAdverseEventRecorded,
    InfusionAssessmentRecorded,
    InfusionCourseClosed,
    InfusionCourseStatusChanged,
    InfusionPlanAgreed,
    InfusionResponse,
    InfusionSessionCompleted,
    InfusionSessionEnded,
    InfusionSessionScheduled,
    InfusionSessionStarted,
    InfusionVitalsOutOfRange,
)
from shared.measures import PHQ9, InvalidItems, score
from shared.outbox import publish
from shared.tables import as_utc

SERVICE = "infusions"
CLINICIAN = Role.infusion_clinician
READERS = (Role.infusion_clinician, Role.mdt, Role.psychologist, Role.admin)
DOSE_POLICY = domain.DosePolicy()
VITALS_POLICY = domain.VitalsPolicy()
RESPONSE_POLICY = domain.ResponsePolicy()


def _rule(error: domain.InfusionRuleBroken) -> FieldProblem:
    return FieldProblem(error.field, error.message)


def _now() -> datetime:
    return datetime.now(UTC)


def _publish(
    db: Session,
    user: User,
    course: InfusionCourse,
    event_type: str,
    payload: type[Event],
    **fields: Any,
) -> None:
    """Write an event about this course to the outbox, checked against the catalogue."""
    publish(
        db,
        event_type=event_type,
        payload=payload,
        fields={"course_id": course.id, **fields},
        producer=SERVICE,
        patient_id=course.patient_id,
        subject=Subject(type="infusion-course", id=str(course.id)),
        actor=Actor(user_id=user.id, role=user.role.value),
    )


def _course(db: Session, course_id: UUID, *, lock: bool = False) -> InfusionCourse:
    course = db.get(InfusionCourse, course_id, with_for_update=lock)
    if course is None:
        raise NotFoundException(f"no infusion course {course_id}")
    return course


def _open_course(course: InfusionCourse) -> None:
    if course.status in domain.COURSE_CLOSED:
        raise Conflict(f"the course is {course.status}", current_status=course.status)


def _active_course(course: InfusionCourse) -> None:
    if course.status != "active":
        raise Conflict(
            f"the course is {course.status}: infusions need an active course",
            current_status=course.status,
        )


def _still_eligible(db: Session, course: InfusionCourse) -> None:
    """A re-assessment that finds a contraindication stops every infusion after it."""
    latest = _assessment(db, course.id)
    if latest is None or latest.outcome != "eligible":
        outcome = latest.outcome if latest else "not assessed"
        raise FieldProblem("assessment", f"the latest eligibility assessment is {outcome}")


def _baseline(db: Session, course_id: UUID) -> EligibilityAssessment | None:
    """The course baseline is the first assessment: a re-assessment must not move it."""
    first: EligibilityAssessment | None = db.exec(
        select(EligibilityAssessment)
        .where(EligibilityAssessment.course_id == course_id)
        .order_by(col(EligibilityAssessment.assessed_at))
    ).first()
    return first


def _latest(db: Session, model: Any, course_id: UUID, order: Any) -> Any:
    return db.exec(select(model).where(model.course_id == course_id).order_by(order.desc())).first()


def _plan(db: Session, course_id: UUID) -> DosingPlan | None:
    plan: DosingPlan | None = _latest(db, DosingPlan, course_id, col(DosingPlan.agreed_at))
    return plan


def _assessment(db: Session, course_id: UUID) -> EligibilityAssessment | None:
    found: EligibilityAssessment | None = _latest(
        db, EligibilityAssessment, course_id, col(EligibilityAssessment.assessed_at)
    )
    return found


def _phq9(items: list[int], field: str) -> Any:
    try:
        return score(PHQ9, items, field)
    except InvalidItems as error:
        raise FieldProblem(error.field, error.message) from None


# --- courses -----------------------------------------------------------------------------


class CourseController(Controller):
    path = "/api/infusion-courses"
    tags = ["infusion courses"]
    opt = {"resource": "EpisodeOfCare"}

    @get(
        operation_id="listInfusionCourses",
        guards=[requires(*READERS)],
        sync_to_thread=True,
        summary="Courses by patient or status; due_before lists maintenance infusions due",
    )
    def list_courses(
        self,
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
        patient_id: FromQuery[UUID | None] = None,
        status: FromQuery[str | None] = None,
        due_before: FromQuery[datetime | None] = None,
    ) -> CoursePage:
        statement = select(InfusionCourse)
        if patient_id is not None:
            statement = statement.where(InfusionCourse.patient_id == patient_id)
        if status is not None:
            if status not in domain.COURSE_STATUSES:
                raise FieldProblem("status", f"must be one of: {', '.join(domain.COURSE_STATUSES)}")
            statement = statement.where(InfusionCourse.status == status)
        if due_before is not None:
            due = as_utc(due_before)
            statement = statement.where(
                col(InfusionCourse.maintenance_due_at) < due,
                col(InfusionCourse.status).in_(("active", "onhold")),
            )
        courses = db.exec(statement.order_by(col(InfusionCourse.opened_at))).all()
        audit.record(
            db,
            AuditAction.read,
            "EpisodeOfCare",
            None,
            patient_id,
            detail=f"list of {len(courses)}",
        )
        db.commit()
        return CoursePage(items=[_course_read(db, course, user) for course in courses])

    @get(
        "/{course_id:uuid}",
        operation_id="readInfusionCourse",
        guards=[requires(*READERS)],
        sync_to_thread=True,
    )
    def read(
        self,
        course_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> CourseRead:
        course = _course(db, course_id)
        audit.record(db, AuditAction.read, "EpisodeOfCare", str(course.id), course.patient_id)
        db.commit()
        return _course_read(db, course, user, detail=True)

    @post(
        "/{course_id:uuid}/assessments",
        operation_id="recordEligibilityAssessment",
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
        status_code=201,
    )
    def assess(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[AssessmentCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AssessmentRead:
        course = _course(db, course_id, lock=True)
        _open_course(course)
        try:
            domain.check_physiological(
                {
                    "systolic": data.systolic,
                    "diastolic": data.diastolic,
                    "heart_rate": data.heart_rate,
                }
            )
            if not 20 <= data.weight_kg <= 300:
                raise domain.InfusionRuleBroken("weight_kg", "must be between 20 and 300 kg")
            eligibility = domain.assess_eligibility(
                {item: answer.present for item, answer in data.checklist.items()},
                [override.caution for override in data.overrides],
                len(data.prior_treatments),
            )
        except domain.InfusionRuleBroken as error:
            raise _rule(error) from None
        phq9 = _phq9(data.phq9_items, "phq9_items")
        now = _now()
        assessment = EligibilityAssessment(
            course_id=course.id,
            assessed_by=user.id,
            assessed_at=now,
            weight_kg=data.weight_kg,
            systolic=data.systolic,
            diastolic=data.diastolic,
            heart_rate=data.heart_rate,
            opioid_mme_per_day=data.opioid_mme_per_day,
            pain_nrs=data.pain_nrs,
            phq9_items=list(phq9.items),
            phq9_total=phq9.total,
            prior_treatments=msgspec.to_builtins(data.prior_treatments),
            checklist=msgspec.to_builtins(data.checklist),
            # Each override names the clinician who made it: the one recording it.
            overrides=[
                {"caution": o.caution, "reason": o.reason, "clinician": user.id}
                for o in data.overrides
            ],
            outcome=eligibility.outcome,
        )
        db.add(assessment)
        _publish(
            db,
            user,
            course,
            "infusion.assessment.recorded",
            InfusionAssessmentRecorded,
            assessment_id=assessment.id,
            outcome=eligibility.outcome,
            blocked_by=list(eligibility.blocked_by),
            cautions_overridden=list(eligibility.cautions_overridden),
            pain_nrs=data.pain_nrs,
            phq9_total=phq9.total,
            phq9_item9=phq9.items[8],
            opioid_mme_per_day=data.opioid_mme_per_day,
            assessed_at=now,
        )
        audit.record(
            db,
            AuditAction.create,
            "EligibilityAssessment",
            str(assessment.id),
            course.patient_id,
            detail=_override_detail(eligibility.cautions_overridden),
        )
        db.commit()
        return _assessment_read(assessment)

    @post(
        "/{course_id:uuid}/plan",
        operation_id="agreeDosingPlan",
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
        status_code=201,
        summary="Agree the dosing plan; a dose outside its band needs an override with a reason",
        description=(
            "Bands from CLINICAL.md: depression 0.1 to 0.75 mg/kg over the infusion minutes "
            "(Sanacora 2017); pain up to 0.35 mg/kg/h for 2 to 4 hours (Cohen 2018). Outside "
            "a band the plan needs `override.reason` from an infusion clinician, recorded and "
            "audited. Hard ceilings, never overridable: 1 mg/kg (depression) and 1 mg/kg/h "
            "(pain), both *local policy*, as are the vitals alert thresholds."
        ),
    )
    def agree_plan(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[PlanCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> PlanRead:
        course = _course(db, course_id, lock=True)
        _open_course(course)
        assessment = _assessment(db, course.id)
        if assessment is None or assessment.outcome != "eligible":
            outcome = assessment.outcome if assessment else "not assessed"
            raise FieldProblem("assessment", f"the latest eligibility assessment is {outcome}")
        try:
            dose = domain.check_dose(
                indication=data.indication,
                weight_kg=data.weight_kg,
                dose_mg_per_kg=data.dose_mg_per_kg,
                infusion_minutes=data.infusion_minutes,
                rate_mg_per_kg_per_h=data.rate_mg_per_kg_per_h,
                duration_hours=data.duration_hours,
                policy=DOSE_POLICY,
            )
        except domain.InfusionRuleBroken as error:
            raise _rule(error) from None
        if dose.outside_band and data.override is None:
            raise FieldProblem(
                dose.outside_band[0],
                "outside the CLINICAL.md band: a clinician's override with a reason is needed",
            )
        override = None
        if dose.outside_band and data.override is not None:
            override = {
                "clinician": user.id,
                "reason": data.override.reason,
                "fields": list(dose.outside_band),
                "at": _now().isoformat(),
            }
        now = _now()
        plan = DosingPlan(
            course_id=course.id,
            indication=data.indication,
            weight_kg=data.weight_kg,
            dose_mg_per_kg=data.dose_mg_per_kg,
            infusion_minutes=data.infusion_minutes,
            rate_mg_per_kg_per_h=data.rate_mg_per_kg_per_h,
            duration_hours=data.duration_hours,
            total_mg=dose.total_mg,
            rate_mg_per_h=dose.rate_mg_per_h,
            induction_count=data.induction_count,
            induction_spacing_days=data.induction_spacing_days,
            maintenance_interval_days=data.maintenance_interval_days,
            override=override,
            agreed_by=user.id,
            agreed_at=now,
        )
        db.add(plan)
        if course.status == "planned":
            _set_course_status(db, user, course, "active", "dosing plan agreed")
        _publish(
            db,
            user,
            course,
            "infusion.plan.agreed",
            InfusionPlanAgreed,
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
        audit.record(
            db,
            AuditAction.create,
            "DosingPlan",
            str(plan.id),
            course.patient_id,
            detail=("dose override: " + ", ".join(dose.outside_band)) if override else None,
        )
        db.commit()
        return _plan_read(plan)

    @post(
        "/{course_id:uuid}/sessions",
        operation_id="scheduleInfusionSession",
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
        status_code=201,
    )
    def schedule(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[SessionCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        course = _course(db, course_id, lock=True)
        plan = _plan(db, course.id)
        if plan is None:
            raise FieldProblem("plan", "no dosing plan is agreed for this course yet")
        _active_course(course)
        _still_eligible(db, course)
        start, end = as_utc(data.start), as_utc(data.end)
        try:
            domain.check_schedule(start, end, _now())
        except domain.InfusionRuleBroken as error:
            raise _rule(error) from None
        booked = db.exec(
            select(InfusionSession).where(
                InfusionSession.patient_id == course.patient_id,
                col(InfusionSession.status).in_((*domain.OPEN_SESSION, domain.COMPLETED)),
            )
        ).all()
        if domain.overlaps(
            start, end, [(as_utc(s.scheduled_start), as_utc(s.scheduled_end)) for s in booked]
        ):
            raise FieldProblem("start", "overlaps another infusion session of this patient")
        number = 1 + len(
            db.exec(select(InfusionSession.id).where(InfusionSession.course_id == course.id)).all()
        )
        session = InfusionSession(
            course_id=course.id,
            patient_id=course.patient_id,
            plan_id=plan.id,
            number=number,
            kind=data.kind,
            status=domain.SCHEDULED,
            scheduled_start=start,
            scheduled_end=end,
            planned_mg=plan.total_mg,
        )
        db.add(session)
        _publish(
            db,
            user,
            course,
            "infusion.session.scheduled",
            InfusionSessionScheduled,
            session_id=session.id,
            number=number,
            kind=data.kind,
            scheduled_start=start,
            scheduled_end=end,
        )
        audit.record(db, AuditAction.create, "Appointment", str(session.id), course.patient_id)
        db.commit()
        return _session_read(db, session)

    @post(
        "/{course_id:uuid}/hold",
        operation_id="holdInfusionCourse",
        status_code=200,
        guards=[requires(CLINICIAN, Role.mdt)],
        sync_to_thread=True,
    )
    def hold(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[Reason],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> CourseRead:
        return self._change(db, user, audit, course_id, "onhold", ("active",), data.reason)

    @post(
        "/{course_id:uuid}/resume",
        operation_id="resumeInfusionCourse",
        status_code=200,
        guards=[requires(CLINICIAN, Role.mdt)],
        sync_to_thread=True,
    )
    def resume(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[Reason],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> CourseRead:
        return self._change(db, user, audit, course_id, "active", ("onhold",), data.reason)

    def _change(
        self,
        db: Session,
        user: User,
        audit: AccessTrail,
        course_id: UUID,
        status: str,
        allowed_from: tuple[str, ...],
        reason: str,
    ) -> CourseRead:
        course = _course(db, course_id, lock=True)
        if course.status not in allowed_from:
            raise Conflict(f"the course is {course.status}", current_status=course.status)
        _set_course_status(db, user, course, status, reason)
        audit.record(
            db,
            AuditAction.update,
            "EpisodeOfCare",
            str(course.id),
            course.patient_id,
            detail=f"status {status}",
        )
        db.commit()
        return _course_read(db, course, user, detail=True)

    @post(
        "/{course_id:uuid}/close",
        operation_id="closeInfusionCourse",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def close(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[CourseClosure],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> CourseRead:
        course = _course(db, course_id, lock=True)
        _open_course(course)
        open_sessions = db.exec(
            select(InfusionSession).where(
                InfusionSession.course_id == course.id,
                col(InfusionSession.status).in_(domain.OPEN_SESSION),
            )
        ).all()
        if any(s.status == domain.IN_PROGRESS for s in open_sessions):
            raise Conflict("an infusion is in progress: end it first", current_status="in-progress")
        now = _now()
        for session in open_sessions:  # booked sessions of a closed course will not happen
            _end(db, user, course, session, "cancel", "course closed")
        status = "finished" if data.reason in ("completed", "stopped") else "cancelled"
        _set_course_status(db, user, course, status, data.note or data.reason)
        course.closed_at, course.close_reason, course.maintenance_due_at = now, data.reason, None
        db.add(course)
        _publish(
            db,
            user,
            course,
            "infusion.course.closed",
            InfusionCourseClosed,
            referral_id=course.referral_id,
            reason=data.reason,
            closed_at=now,
        )
        audit.record(
            db,
            AuditAction.update,
            "EpisodeOfCare",
            str(course.id),
            course.patient_id,
            detail=f"closed: {data.reason}",
        )
        db.commit()
        return _course_read(db, course, user, detail=True)


def _set_course_status(
    db: Session, user: User, course: InfusionCourse, status: str, reason: str
) -> None:
    previous = course.status
    course.status, course.status_reason = status, reason
    db.add(course)
    _publish(
        db,
        user,
        course,
        "infusion.course.status_changed",
        InfusionCourseStatusChanged,
        status=status,
        previous_status=previous,
        changed_at=_now(),
    )


def _override_detail(overridden: tuple[str, ...]) -> str | None:
    return ("caution override: " + ", ".join(overridden)) if overridden else None


# --- sessions ----------------------------------------------------------------------------


class SessionController(Controller):
    path = "/api/infusion-sessions"
    tags = ["infusion sessions"]
    opt = {"resource": "Procedure"}

    @get(
        "/{session_id:uuid}",
        operation_id="readInfusionSession",
        guards=[requires(CLINICIAN, Role.mdt)],
        sync_to_thread=True,
    )
    def read(
        self,
        session_id: FromPath[UUID],
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session = _session(db, session_id)
        audit.record(db, AuditAction.read, "Procedure", str(session.id), session.patient_id)
        db.commit()
        return _session_read(db, session, detail=True)

    @post(
        "/{session_id:uuid}/check-in",
        operation_id="checkInInfusionSession",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def check_in(
        self,
        session_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session, course = _session_and_course(db, session_id)
        _active_course(course)
        _still_eligible(db, course)
        _move(session, "check-in")
        return _session_done(db, audit, session, AuditAction.update, "checked in")

    @post(
        "/{session_id:uuid}/scores-before",
        operation_id="recordScoresBefore",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def scores_before(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[ScoresBefore],
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session, _course_row = _session_and_course(db, session_id)
        if session.status not in (domain.CHECKED_IN, domain.IN_PROGRESS):
            raise Conflict(f"the session is {session.status}", current_status=session.status)
        session.pain_before, session.mood_before = data.pain_nrs, data.mood
        db.add(session)
        return _session_done(db, audit, session, AuditAction.update, "scores before")

    @post(
        "/{session_id:uuid}/start",
        operation_id="startInfusionSession",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def start(
        self,
        session_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session, course = _session_and_course(db, session_id)
        _active_course(course)
        _still_eligible(db, course)
        before = db.exec(
            select(VitalsReading).where(
                VitalsReading.session_id == session.id, VitalsReading.phase == "before"
            )
        ).first()
        if before is None:
            raise FieldProblem(
                "vitals", "record blood pressure, heart rate and SpO2 before starting"
            )
        _move(session, "start")
        session.started_at = _now()
        _publish(
            db,
            user,
            course,
            "infusion.session.started",
            InfusionSessionStarted,
            session_id=session.id,
            number=session.number,
            started_at=session.started_at,
        )
        return _session_done(db, audit, session, AuditAction.update, "started")

    @post(
        "/{session_id:uuid}/vitals",
        operation_id="recordVitals",
        status_code=201,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def vitals(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[VitalsCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> VitalsRead:
        session, course = _session_and_course(db, session_id)
        values = {
            "systolic": data.systolic,
            "diastolic": data.diastolic,
            "heart_rate": data.heart_rate,
            "spo2": data.spo2,
        }
        try:
            domain.check_physiological(values)
        except domain.InfusionRuleBroken as error:
            raise _rule(error) from None
        if session.status not in (domain.CHECKED_IN, domain.IN_PROGRESS, domain.COMPLETED):
            raise Conflict(f"the session is {session.status}", current_status=session.status)
        crossed = domain.vitals_out_of_range(data.phase, values, VITALS_POLICY)
        reading = VitalsReading(
            session_id=session.id,
            at=as_utc(data.at or _now()),
            phase=data.phase,
            out_of_range=crossed,
            recorded_by=user.id,
            **values,
        )
        db.add(reading)
        if crossed:
            _publish(
                db,
                user,
                course,
                "infusion.vitals.out_of_range",
                InfusionVitalsOutOfRange,
                session_id=session.id,
                phase=data.phase,
                crossed=crossed,
                measured_at=reading.at,
                **values,
            )
        audit.record(
            db,
            AuditAction.create,
            "Observation",
            str(session.id),
            session.patient_id,
            detail="vitals" + (" out of range" if crossed else ""),
        )
        db.commit()
        return _vitals_read(reading)

    @post(
        "/{session_id:uuid}/dose",
        operation_id="recordDoseGiven",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def dose(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[DoseGiven],
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session, _course_row = _session_and_course(db, session_id)
        if session.status != domain.IN_PROGRESS:
            raise Conflict(f"the session is {session.status}", current_status=session.status)
        if not domain.check_dose_given(data.given_mg, session.planned_mg):
            raise FieldProblem(
                "given_mg", f"differs from the plan's {session.planned_mg} mg by more than 10%"
            )
        session.given_mg = data.given_mg
        db.add(session)
        audit.record(
            db,
            AuditAction.update,
            "MedicationAdministration",
            str(session.id),
            session.patient_id,
            detail="dose given",
        )
        db.commit()
        return _session_read(db, session, detail=True)

    @post(
        "/{session_id:uuid}/adverse-events",
        operation_id="recordAdverseEvent",
        status_code=201,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
        summary="Record an adverse event; a serious one ends the session",
    )
    def adverse_event(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[AdverseEventCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session, course = _session_and_course(db, session_id)
        if session.status not in (domain.CHECKED_IN, domain.IN_PROGRESS, domain.COMPLETED):
            raise Conflict(f"the session is {session.status}", current_status=session.status)
        now = _now()
        db.add(
            AdverseEvent(
                session_id=session.id,
                at=now,
                code=data.code,
                severity=data.severity,
                note=data.note or None,
                recorded_by=user.id,
            )
        )
        serious = data.severity == "serious"
        _publish(
            db,
            user,
            course,
            "infusion.adverse_event.recorded",
            InfusionAdverseEventRecorded,
            session_id=session.id,
            code=data.code,
            severity=data.severity,
            serious=serious,
            recorded_at=now,
        )
        if serious and session.status in (domain.CHECKED_IN, domain.IN_PROGRESS):
            # CLINICAL.md: a serious adverse event closes the session (and the coordinator
            # raises the MDT alert from the event).
            _end(db, user, course, session, "abandon", f"serious adverse event: {data.code}")
        audit.record(
            db,
            AuditAction.create,
            "AdverseEvent",
            str(session.id),
            session.patient_id,
            detail=f"{data.code} {data.severity}",
        )
        db.commit()
        return _session_read(db, session, detail=True)

    @post(
        "/{session_id:uuid}/complete",
        operation_id="completeInfusionSession",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
        summary="Complete with scores after; the response to the course baseline is computed",
    )
    def complete(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[SessionCompletion],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        session, course = _session_and_course(db, session_id)
        phq9 = _phq9(data.phq9_items, "phq9_items") if data.phq9_items is not None else None
        if session.given_mg is None and session.status == domain.IN_PROGRESS:
            raise FieldProblem("given_mg", "record the dose given before completing the session")
        _move(session, "complete")
        now = _now()
        session.ended_at = now
        session.pain_after, session.mood_after = data.pain_nrs, data.mood
        if phq9 is not None:
            session.phq9_items, session.phq9_total = list(phq9.items), phq9.total
        db.add(session)
        db.flush()
        baseline = _baseline(db, course.id)
        result = domain.response(
            baseline.pain_nrs if baseline else None,
            data.pain_nrs,
            baseline.phq9_total if baseline else None,
            phq9.total if phq9 else None,
            RESPONSE_POLICY,
        )
        completed = db.exec(
            select(InfusionSession).where(
                InfusionSession.course_id == course.id, InfusionSession.status == domain.COMPLETED
            )
        ).all()
        plan = db.get(DosingPlan, session.plan_id)
        assert plan is not None
        due = domain.maintenance_due(
            now, len(completed), plan.induction_count, plan.maintenance_interval_days
        )
        course.maintenance_due_at = due
        db.add(course)
        _publish(
            db,
            user,
            course,
            "infusion.session.completed",
            InfusionSessionCompleted,
            session_id=session.id,
            number=session.number,
            kind=session.kind,
            completed_at=now,
            given_mg=session.given_mg,
            pain_before=session.pain_before,
            pain_after=data.pain_nrs,
            phq9_total=phq9.total if phq9 else None,
            phq9_item9=phq9.items[8] if phq9 else None,
            response=msgspec.structs.asdict(_response_struct(result)),
            completed_sessions=len(completed),
            maintenance_due_at=due,
        )
        return _session_done(db, audit, session, AuditAction.update, "completed")

    @post(
        "/{session_id:uuid}/cancel",
        operation_id="cancelInfusionSession",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def cancel(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[Reason],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        return self._end(db, user, audit, session_id, "cancel", data.reason)

    @post(
        "/{session_id:uuid}/abandon",
        operation_id="abandonInfusionSession",
        status_code=200,
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def abandon(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[Reason],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> SessionRead:
        return self._end(db, user, audit, session_id, "abandon", data.reason)

    def _end(
        self,
        db: Session,
        user: User,
        audit: AccessTrail,
        session_id: UUID,
        action: str,
        reason: str,
    ) -> SessionRead:
        session, course = _session_and_course(db, session_id)
        _end(db, user, course, session, action, reason)
        audit.record(
            db, AuditAction.update, "Procedure", str(session.id), session.patient_id, detail=action
        )
        db.commit()
        return _session_read(db, session, detail=True)


def _response_struct(result: domain.Response) -> InfusionResponse:
    return InfusionResponse(
        pain_change_fraction=result.pain_change_fraction,
        phq9_change_fraction=result.phq9_change_fraction,
        pain_meaningful=result.pain_meaningful,
        pain_substantial=result.pain_substantial,
        phq9_response=result.phq9_response,
        responded=result.responded,
    )


def _end(
    db: Session,
    user: User,
    course: InfusionCourse,
    session: InfusionSession,
    action: str,
    reason: str,
) -> None:
    previous = session.status
    _move(session, action)
    session.ended_at, session.status_reason = _now(), reason
    db.add(session)
    event = "infusion.session.cancelled" if action == "cancel" else "infusion.session.abandoned"
    _publish(
        db,
        user,
        course,
        event,
        InfusionSessionEnded,
        session_id=session.id,
        number=session.number,
        previous_status=previous,
        ended_at=session.ended_at,
    )


def _move(session: InfusionSession, action: str) -> None:
    try:
        session.status = domain.next_session_status(session.status, action)
    except domain.IllegalTransition as error:
        raise Conflict(
            f"the session is {error.current}; '{action}' is not allowed from that status",
            current_status=error.current,
        ) from None


def _session(db: Session, session_id: UUID, *, lock: bool = False) -> InfusionSession:
    session = db.get(InfusionSession, session_id, with_for_update=lock)
    if session is None:
        raise NotFoundException(f"no infusion session {session_id}")
    return session


def _session_and_course(db: Session, session_id: UUID) -> tuple[InfusionSession, InfusionCourse]:
    """Lock the course, then the session: the order every writer takes (closing a course
    locks the course, then its sessions), so two writers cannot deadlock."""
    course_id = _session(db, session_id).course_id
    course = _course(db, course_id, lock=True)
    db.expire_all()  # read the session again under the lock, not the unlocked copy
    return _session(db, session_id, lock=True), course


# --- reads -------------------------------------------------------------------------------


def _course_read(
    db: Session, course: InfusionCourse, user: User, *, detail: bool = False
) -> CourseRead:
    sessions = db.exec(
        select(InfusionSession)
        .where(InfusionSession.course_id == course.id)
        .order_by(col(InfusionSession.number))
    ).all()
    read = CourseRead(
        id=course.id,
        patient_id=course.patient_id,
        referral_id=course.referral_id,
        status=course.status,
        priority=course.priority,
        opened_at=as_utc(course.opened_at),
        completed_sessions=sum(1 for s in sessions if s.status == domain.COMPLETED),
        maintenance_due_at=as_utc(course.maintenance_due_at) if course.maintenance_due_at else None,
        closed_at=as_utc(course.closed_at) if course.closed_at else None,
        close_reason=course.close_reason,
    )
    # Psychologists read the summary, admins the statuses; the clinical detail is for the
    # infusion clinic and the MDT.
    if detail and user.role in (Role.infusion_clinician, Role.mdt):
        read.status_reason = course.status_reason
        assessment = _assessment(db, course.id)
        plan = _plan(db, course.id)
        read.assessment = _assessment_read(assessment) if assessment else None
        read.plan = _plan_read(plan) if plan else None
        read.sessions = [_session_read(db, s) for s in sessions]
    return read


def _assessment_read(assessment: EligibilityAssessment) -> AssessmentRead:
    findings = {item: bool(answer["present"]) for item, answer in assessment.checklist.items()}
    eligibility = domain.assess_eligibility(
        findings,
        [o["caution"] for o in assessment.overrides],
        len(assessment.prior_treatments),
    )
    return AssessmentRead(
        id=assessment.id,
        assessed_by=assessment.assessed_by,
        assessed_at=as_utc(assessment.assessed_at),
        outcome=assessment.outcome,
        blocked_by=list(eligibility.blocked_by),
        cautions_without_override=list(eligibility.cautions_without_override),
        weight_kg=assessment.weight_kg,
        systolic=assessment.systolic,
        diastolic=assessment.diastolic,
        heart_rate=assessment.heart_rate,
        opioid_mme_per_day=assessment.opioid_mme_per_day,
        pain_nrs=assessment.pain_nrs,
        phq9_total=assessment.phq9_total,
        checklist=msgspec.convert(assessment.checklist, dict[str, ChecklistItem]),
        overrides=assessment.overrides,
        prior_treatments=msgspec.convert(assessment.prior_treatments, list[PriorTreatment]),
    )


def _plan_read(plan: DosingPlan) -> PlanRead:
    return PlanRead(
        id=plan.id,
        indication=plan.indication,
        weight_kg=plan.weight_kg,
        dose_mg_per_kg=plan.dose_mg_per_kg,
        infusion_minutes=plan.infusion_minutes,
        rate_mg_per_kg_per_h=plan.rate_mg_per_kg_per_h,
        duration_hours=plan.duration_hours,
        total_mg=plan.total_mg,
        rate_mg_per_h=plan.rate_mg_per_h,
        induction_count=plan.induction_count,
        induction_spacing_days=plan.induction_spacing_days,
        maintenance_interval_days=plan.maintenance_interval_days,
        override=plan.override,
        agreed_by=plan.agreed_by,
        agreed_at=as_utc(plan.agreed_at),
    )


def _vitals_read(reading: VitalsReading) -> VitalsRead:
    return VitalsRead(
        at=as_utc(reading.at),
        phase=reading.phase,
        systolic=reading.systolic,
        diastolic=reading.diastolic,
        heart_rate=reading.heart_rate,
        spo2=reading.spo2,
        out_of_range=list(reading.out_of_range),
    )


def _session_done(
    db: Session, audit: AccessTrail, session: InfusionSession, action: AuditAction, detail: str
) -> SessionRead:
    """Audit what was done to the session, commit, and answer with the session."""
    audit.record(db, action, "Procedure", str(session.id), session.patient_id, detail=detail)
    db.commit()
    return _session_read(db, session, detail=True)


def _session_read(db: Session, session: InfusionSession, *, detail: bool = False) -> SessionRead:
    read = SessionRead(
        id=session.id,
        course_id=session.course_id,
        patient_id=session.patient_id,
        number=session.number,
        kind=session.kind,
        status=session.status,
        scheduled_start=as_utc(session.scheduled_start),
        scheduled_end=as_utc(session.scheduled_end),
        planned_mg=session.planned_mg,
        started_at=as_utc(session.started_at) if session.started_at else None,
        ended_at=as_utc(session.ended_at) if session.ended_at else None,
        given_mg=session.given_mg,
        pain_before=session.pain_before,
        pain_after=session.pain_after,
        mood_before=session.mood_before,
        mood_after=session.mood_after,
        phq9_total=session.phq9_total,
        status_reason=session.status_reason,
    )
    if detail:
        read.vitals = [
            _vitals_read(v)
            for v in db.exec(
                select(VitalsReading)
                .where(VitalsReading.session_id == session.id)
                .order_by(col(VitalsReading.at))
            ).all()
        ]
        read.adverse_events = [
            AdverseEventRead(at=as_utc(a.at), code=a.code, severity=a.severity, note=a.note)
            for a in db.exec(
                select(AdverseEvent)
                .where(AdverseEvent.session_id == session.id)
                .order_by(col(AdverseEvent.at))
            ).all()
        ]
    return read


CONTROLLERS: tuple[Any, ...] = (CourseController, SessionController)
