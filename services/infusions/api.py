"""HTTP controllers of the infusions service: courses, assessments, plans, sessions.

Each route parses, calls one command (services.py) and returns a view (views.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller
from litestar.params import FromPath, FromQuery, JSONBody

from services.infusions import services, views
from services.infusions.models import InfusionCourse, InfusionSession
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
    OpioidUseCreate,
    OpioidUseRead,
    PlanCreate,
    PlanPreview,
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
from shared.auth import Role, User
from shared.uow import UnitOfWork
from shared.web.dependencies import UowDep, UserDep
from shared.web.handlers import command, query

CLINICIAN = (Role.infusion_clinician,)
CLINICIAN_OR_MDT = (Role.infusion_clinician, Role.mdt)
READERS = (Role.infusion_clinician, Role.mdt, Role.psychologist, Role.admin)

# --- courses -----------------------------------------------------------------------------


class CourseController(Controller):
    path = "/api/infusion-courses"
    tags = ["infusion courses"]
    opt = {"resource": "EpisodeOfCare"}

    @query(
        operation_id="listInfusionCourses",
        roles=READERS,
        summary="Courses by patient or status; due_before lists maintenance infusions due",
    )
    def list_courses(
        self,
        uow: UowDep,
        user: UserDep,
        patient_id: FromQuery[UUID | None] = None,
        status: FromQuery[CourseStatus | None] = None,
        due_before: FromQuery[datetime | None] = None,
    ) -> CoursePage:
        filters = services.CourseQuery(patient_id, status, due_before)
        courses = services.list_courses(filters, uow, user)
        return CoursePage(items=[views.course_read(uow.session, c, user) for c in courses])

    @query("/{course_id:uuid}", operation_id="readInfusionCourse", roles=READERS)
    def read(self, course_id: FromPath[UUID], uow: UowDep, user: UserDep) -> CourseRead:
        return _course(uow, user, services.read_course(course_id, uow, user))

    @command(
        "/{course_id:uuid}/assessments",
        operation_id="recordEligibilityAssessment",
        roles=CLINICIAN,
        status_code=201,
    )
    def assess(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[AssessmentCreate],
        uow: UowDep,
        user: UserDep,
    ) -> AssessmentRead:
        assessment, opioid_use = services.assess(course_id, data, uow, user)
        return views.assessment_read(assessment, opioid_use)

    @command(
        "/{course_id:uuid}/opioid-use",
        operation_id="recordOpioidUse",
        roles=CLINICIAN,
        status_code=201,
        summary="Record the opioids a patient takes now, per medicine, at a follow-up",
        description=(
            "Each medicine's MME per day comes from the clinical policy's sourced table "
            "(`opioids.conversion_table`: Opioids Aware or CDC 2022); the total is flagged "
            "at 50 and 90 MME/day and when a benzodiazepine is taken alongside "
            "(CLINICAL.md, course rules). A medicine the table has no factor for is "
            "shown as not counted and the total as incomplete. The course's "
            "`opioid_use` lists every record: the MME trend."
        ),
    )
    def record_opioid_use(
        self,
        course_id: FromPath[UUID],
        data: JSONBody[OpioidUseCreate],
        uow: UowDep,
        user: UserDep,
    ) -> OpioidUseRead:
        return views.opioid_use_read(services.record_opioid_use(course_id, data, uow, user))

    @command(
        "/{course_id:uuid}/plan",
        operation_id="agreeDosingPlan",
        roles=CLINICIAN,
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
        self, course_id: FromPath[UUID], data: JSONBody[PlanCreate], uow: UowDep, user: UserDep
    ) -> PlanRead:
        return views.plan_read(services.agree_plan(course_id, data, uow, user))

    @command(
        "/{course_id:uuid}/plan/preview",
        operation_id="previewDosingPlan",
        roles=CLINICIAN,
        idempotent=False,  # saves nothing: a repeat only computes again
        summary="The dose a plan would give, checked as agreeing it checks it; nothing saved",
    )
    def preview_plan(
        self, course_id: FromPath[UUID], data: JSONBody[PlanCreate], uow: UowDep, user: UserDep
    ) -> PlanPreview:
        return services.preview_plan(course_id, data, uow, user)

    @command(
        "/{course_id:uuid}/sessions",
        operation_id="scheduleInfusionSession",
        roles=CLINICIAN,
        status_code=201,
    )
    def schedule(
        self, course_id: FromPath[UUID], data: JSONBody[SessionCreate], uow: UowDep, user: UserDep
    ) -> SessionRead:
        return views.session_read(uow.session, services.schedule(course_id, data, uow, user))

    @command("/{course_id:uuid}/hold", operation_id="holdInfusionCourse", roles=CLINICIAN_OR_MDT)
    def hold(
        self, course_id: FromPath[UUID], data: JSONBody[Reason], uow: UowDep, user: UserDep
    ) -> CourseRead:
        return _course(uow, user, services.hold(course_id, data, uow, user))

    @command(
        "/{course_id:uuid}/resume", operation_id="resumeInfusionCourse", roles=CLINICIAN_OR_MDT
    )
    def resume(
        self, course_id: FromPath[UUID], data: JSONBody[Reason], uow: UowDep, user: UserDep
    ) -> CourseRead:
        return _course(uow, user, services.resume(course_id, data, uow, user))

    @command("/{course_id:uuid}/close", operation_id="closeInfusionCourse", roles=CLINICIAN)
    def close(
        self, course_id: FromPath[UUID], data: JSONBody[CourseClosure], uow: UowDep, user: UserDep
    ) -> CourseRead:
        return _course(uow, user, services.close(course_id, data, uow, user))


# --- sessions ----------------------------------------------------------------------------


class SessionController(Controller):
    """Every command on a session answers with the session as it now stands."""

    path = "/api/infusion-sessions"
    tags = ["infusion sessions"]
    opt = {"resource": "Procedure"}

    @query("/{session_id:uuid}", operation_id="readInfusionSession", roles=CLINICIAN_OR_MDT)
    def read(self, session_id: FromPath[UUID], uow: UowDep, user: UserDep) -> SessionRead:
        return _session(uow, services.read_session(session_id, uow, user))

    @command("/{session_id:uuid}/check-in", operation_id="checkInInfusionSession", roles=CLINICIAN)
    def check_in(self, session_id: FromPath[UUID], uow: UowDep, user: UserDep) -> SessionRead:
        return _session(uow, services.check_in(session_id, uow, user))

    @command("/{session_id:uuid}/scores-before", operation_id="recordScoresBefore", roles=CLINICIAN)
    def scores_before(
        self, session_id: FromPath[UUID], data: JSONBody[ScoresBefore], uow: UowDep, user: UserDep
    ) -> SessionRead:
        return _session(uow, services.record_scores_before(session_id, data, uow, user))

    @command(
        "/{session_id:uuid}/start",
        operation_id="startInfusionSession",
        roles=CLINICIAN,
        summary="Start the infusion, on its booked day, after the observations before it",
        description=(
            "The latest reading before the infusion at or above the start limit "
            "(`vitals.before_systolic`/`before_diastolic`, 160/100, *local policy*) is a "
            "422 on `override.reason` unless the body gives `override.reason`: the "
            "clinician starting it is named with the reason, recorded and audited."
        ),
    )
    def start(
        self,
        session_id: FromPath[UUID],
        uow: UowDep,
        user: UserDep,
        data: JSONBody[StartInfusion | None] = None,
    ) -> SessionRead:
        return _session(uow, services.start(session_id, data, uow, user))

    @command(
        "/{session_id:uuid}/vitals", operation_id="recordVitals", roles=CLINICIAN, status_code=201
    )
    def vitals(
        self, session_id: FromPath[UUID], data: JSONBody[VitalsCreate], uow: UowDep, user: UserDep
    ) -> VitalsRead:
        return views.vitals_read(services.record_vitals(session_id, data, uow, user))

    @command(
        "/{session_id:uuid}/dose",
        operation_id="recordDoseGiven",
        roles=CLINICIAN,
        summary="Record the dose given; outside ±10% of the session's dose it needs a reason",
    )
    def dose(
        self, session_id: FromPath[UUID], data: JSONBody[DoseGiven], uow: UowDep, user: UserDep
    ) -> SessionRead:
        return _session(uow, services.record_dose(session_id, data, uow, user))

    @command(
        "/{session_id:uuid}/adverse-events",
        operation_id="recordAdverseEvent",
        roles=CLINICIAN,
        status_code=201,
        summary="Record an adverse event; a serious one ends the session",
    )
    def adverse_event(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[AdverseEventCreate],
        uow: UowDep,
        user: UserDep,
    ) -> SessionRead:
        return _session(uow, services.record_adverse_event(session_id, data, uow, user))

    @command(
        "/{session_id:uuid}/complete",
        operation_id="completeInfusionSession",
        roles=CLINICIAN,
        summary="Complete with scores after; the response to the course baseline is computed",
    )
    def complete(
        self,
        session_id: FromPath[UUID],
        data: JSONBody[SessionCompletion],
        uow: UowDep,
        user: UserDep,
    ) -> SessionRead:
        return _session(uow, services.complete(session_id, data, uow, user))

    @command("/{session_id:uuid}/cancel", operation_id="cancelInfusionSession", roles=CLINICIAN)
    def cancel(
        self, session_id: FromPath[UUID], data: JSONBody[Reason], uow: UowDep, user: UserDep
    ) -> SessionRead:
        return _session(uow, services.cancel(session_id, data, uow, user))

    @command(
        "/{session_id:uuid}/abandon",
        operation_id="abandonInfusionSession",
        roles=CLINICIAN,
        summary="Stop early with a reason and, once started, the dose given",
    )
    def abandon(
        self, session_id: FromPath[UUID], data: JSONBody[Abandonment], uow: UowDep, user: UserDep
    ) -> SessionRead:
        return _session(uow, services.abandon(session_id, data, uow, user))


def _course(uow: UnitOfWork, user: User, course: InfusionCourse) -> CourseRead:
    return views.course_read(uow.session, course, user, detail=True)


def _session(uow: UnitOfWork, infusion: InfusionSession) -> SessionRead:
    return views.session_read(uow.session, infusion, detail=True)


CONTROLLERS: tuple[Any, ...] = (CourseController, SessionController)
