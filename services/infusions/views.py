"""Rows as the infusions API answers them, shaped by who is asking: the clinical detail of
a course (assessment, plan, sessions) goes to the infusion clinic and the MDT only."""

from __future__ import annotations

import msgspec
from sqlmodel import Session

from services.infusions import domain, models, repository
from services.infusions.schemas import (
    AdverseEventRead,
    AssessmentRead,
    CourseRead,
    OpioidUseRead,
    PlanRead,
    SessionRead,
    VitalsRead,
)
from shared.auth import Role, User

# Psychologists read the summary, admins the statuses.
SEES_CLINICAL_DETAIL = (Role.infusion_clinician, Role.mdt)


def course_read(
    db: Session, course: models.InfusionCourse, user: User, *, detail: bool = False
) -> CourseRead:
    sessions = repository.sessions(db, course.id)
    completed = sum(1 for s in sessions if s.status == domain.COMPLETED)
    read = msgspec.convert({**course.model_dump(), "completed_sessions": completed}, CourseRead)
    if not (detail and user.role in SEES_CLINICAL_DETAIL):
        read.status_reason = None  # why a course was held or stopped is clinical detail
        return read
    assessment = repository.latest_assessment(db, course.id)
    plan = repository.latest_plan(db, course.id)
    read.assessment = assessment_read(assessment) if assessment else None
    read.plan = plan_read(plan) if plan else None
    read.sessions = [session_read(db, s) for s in sessions]
    read.opioid_use = [opioid_use_read(use) for use in repository.opioid_use(db, course.id)]
    return read


def opioid_use_read(use: models.OpioidUse) -> OpioidUseRead:
    return msgspec.convert(use, OpioidUseRead, from_attributes=True)


def assessment_read(
    assessment: models.EligibilityAssessment, opioid_use: models.OpioidUse | None = None
) -> AssessmentRead:
    # What blocks and what still waits for an override is derived again from the stored
    # answers, so the answer shows the rule as it stands.
    findings = {item: bool(answer["present"]) for item, answer in assessment.checklist.items()}
    eligibility = domain.assess_eligibility(
        findings,
        [o["caution"] for o in assessment.overrides],
        len(assessment.prior_treatments),
    )
    derived = {
        "blocked_by": list(eligibility.blocked_by),
        "cautions_without_override": list(eligibility.cautions_without_override),
        "opioid_use": opioid_use_read(opioid_use) if opioid_use else None,
    }
    return msgspec.convert({**assessment.model_dump(), **derived}, AssessmentRead)


def plan_read(plan: models.DosingPlan) -> PlanRead:
    return msgspec.convert(plan, PlanRead, from_attributes=True)


def vitals_read(reading: models.VitalsReading) -> VitalsRead:
    return msgspec.convert(reading, VitalsRead, from_attributes=True)


def session_read(
    db: Session, infusion: models.InfusionSession, *, detail: bool = False
) -> SessionRead:
    read = msgspec.convert(infusion, SessionRead, from_attributes=True)
    if detail:
        read.vitals = [vitals_read(v) for v in repository.vitals(db, infusion.id)]
        read.adverse_events = [
            msgspec.convert(a, AdverseEventRead, from_attributes=True)
            for a in repository.adverse_events(db, infusion.id)
        ]
    return read
