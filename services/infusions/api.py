"""HTTP controllers of the infusions service: courses, assessments, plans, sessions.

Each route parses, calls one command (services.py) and returns a view (views.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from services.infusions import services, views
from services.infusions.schemas import (
    Abandonment,
    AdverseEventCreate,
    AssessmentCreate,
    AssessmentRead,
    CourseClosure,
    CoursePage,
    CourseRead,
    CourseStatus,
    DoseGiven,
    PlanCreate,
    PlanRead,
    Reason,
    ScoresBefore,
    SessionCompletion,
    SessionCreate,
    SessionRead,
    StartInfusion,
    VitalsCreate,
    VitalsRead,
)
from shared.auth import Role, User, requires
from shared.uow import UnitOfWork

CLINICIAN = Role.infusion_clinician
READERS = (Role.infusion_clinician, Role.mdt, Role.psychologist, Role.admin)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
        patient_id: FromQuery[UUID | None] = None,
        status: FromQuery[CourseStatus | None] = None,
        due_before: FromQuery[datetime | None] = None,
    ) -> CoursePage:
        query = services.CourseQuery(patient_id, status, due_before)
        courses = services.list_courses(query, uow, user)
        return CoursePage(items=[views.course_read(uow.session, c, user) for c in courses])

    @get(
        "/{course_id:uuid}",
        operation_id="readInfusionCourse",
        guards=[requires(*READERS)],
        sync_to_thread=True,
    )
    def read(
        self,
        course_id: FromPath[UUID],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> CourseRead:
        course = services.read_course(course_id, uow, user)
        return views.course_read(uow.session, course, user, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AssessmentRead:
        return views.assessment_read(services.assess(course_id, data, uow, user))

    @post(
        "/{course_id:uuid}/plan",
        operation_id="agreeDosingPlan",
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
        status_code=201,
        summary="Agree the dosing plan; a dose outside its band needs an override with a reason",
        description=(
            "Bands from CLINICAL.md, as the clinical policy's `dose` section sets them "
            "(`GET /api/policy`): depression in mg/kg over the infusion minutes (Sanacora "
            "2017); pain in mg/kg/h over hours (Cohen 2018). Outside a band the plan needs "
            "`override.reason` from an infusion clinician, recorded and audited. Hard "
            "ceilings, never overridable, in mg/kg (depression) and mg/kg/h (pain), are "
            "*local policy*, as are the vitals alert thresholds."
        ),
    )
    def agree_plan(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[PlanCreate],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> PlanRead:
        return views.plan_read(services.agree_plan(course_id, data, uow, user))

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        return views.session_read(uow.session, services.schedule(course_id, data, uow, user))

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> CourseRead:
        course = services.hold(course_id, data, uow, user)
        return views.course_read(uow.session, course, user, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> CourseRead:
        course = services.resume(course_id, data, uow, user)
        return views.course_read(uow.session, course, user, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> CourseRead:
        course = services.close(course_id, data, uow, user)
        return views.course_read(uow.session, course, user, detail=True)


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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.read_session(session_id, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.check_in(session_id, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.record_scores_before(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

    @post(
        "/{session_id:uuid}/start",
        operation_id="startInfusionSession",
        status_code=200,
        summary="Start the infusion, on its booked day, after the observations before it",
        description=(
            "The latest reading before the infusion at or above the start limit "
            "(`vitals.before_systolic`/`before_diastolic`, 160/100, *local policy*) is a "
            "422 on `override.reason` unless the body gives `override.reason`: the "
            "clinician starting it is named with the reason, recorded and audited."
        ),
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def start(
        self,
        session_id: FromPath[UUID],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
        data: JSONBody[StartInfusion | None] = None,
    ) -> SessionRead:
        infusion = services.start(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> VitalsRead:
        return views.vitals_read(services.record_vitals(session_id, data, uow, user))

    @post(
        "/{session_id:uuid}/dose",
        operation_id="recordDoseGiven",
        status_code=200,
        summary="Record the dose given; outside ±10% of the session's dose it needs a reason",
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def dose(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[DoseGiven],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.record_dose(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.record_adverse_event(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.complete(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.cancel(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)

    @post(
        "/{session_id:uuid}/abandon",
        operation_id="abandonInfusionSession",
        status_code=200,
        summary="Stop early with a reason and, once started, the dose given",
        guards=[requires(CLINICIAN)],
        sync_to_thread=True,
    )
    def abandon(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[Abandonment],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> SessionRead:
        infusion = services.abandon(session_id, data, uow, user)
        return views.session_read(uow.session, infusion, detail=True)


CONTROLLERS: tuple[Any, ...] = (CourseController, SessionController)
