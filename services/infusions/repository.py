"""Loads and locks of the infusions service's rows; no rule lives here.

The database session is ``db`` throughout: in this service a "session" is an infusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

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


def course(db: Session, course_id: UUID, *, lock: bool = False) -> InfusionCourse | None:
    # The row lock makes two clinicians acting on one course take turns; the second
    # then sees the first one's change (a 409, not a second transition).
    return db.get(InfusionCourse, course_id, with_for_update=lock)


def course_of_referral(db: Session, referral_id: UUID) -> InfusionCourse | None:
    return db.exec(select(InfusionCourse).where(InfusionCourse.referral_id == referral_id)).first()


def open_course_of(db: Session, patient_id: UUID) -> InfusionCourse | None:
    """The patient's open course, the latest opened if (unusually) more than one."""
    return db.exec(
        select(InfusionCourse)
        .where(
            InfusionCourse.patient_id == patient_id,
            col(InfusionCourse.status).in_(domain.COURSE_OPEN),
        )
        .order_by(col(InfusionCourse.opened_at).desc())
    ).first()


def courses(
    db: Session, patient_id: UUID | None, status: str | None, due_before: datetime | None
) -> Sequence[InfusionCourse]:
    """Courses by patient or status; with due_before, the open ones whose maintenance
    infusion falls due before then."""
    statement = select(InfusionCourse)
    if patient_id is not None:
        statement = statement.where(InfusionCourse.patient_id == patient_id)
    if status is not None:
        statement = statement.where(InfusionCourse.status == status)
    if due_before is not None:
        statement = statement.where(
            col(InfusionCourse.maintenance_due_at) < due_before,
            col(InfusionCourse.status).in_((domain.ACTIVE, domain.ONHOLD)),
        )
    return db.exec(statement.order_by(col(InfusionCourse.opened_at))).all()


def infusion_session(
    db: Session, session_id: UUID, *, lock: bool = False
) -> InfusionSession | None:
    return db.get(InfusionSession, session_id, with_for_update=lock)


def session_and_course(
    db: Session, session_id: UUID
) -> tuple[InfusionSession, InfusionCourse] | None:
    """Lock the course, then the session: the order every writer takes (closing a course
    locks the course, then its sessions), so two writers cannot deadlock."""
    unlocked = infusion_session(db, session_id)
    if unlocked is None:
        return None
    of = course(db, unlocked.course_id, lock=True)
    db.expire_all()  # read the session again under the lock, not the unlocked copy
    found = infusion_session(db, session_id, lock=True)
    if found is None or of is None:
        return None
    return found, of


def sessions(db: Session, course_id: UUID) -> Sequence[InfusionSession]:
    return db.exec(
        select(InfusionSession)
        .where(InfusionSession.course_id == course_id)
        .order_by(col(InfusionSession.number))
    ).all()


def sessions_in(db: Session, course_id: UUID, statuses: Sequence[str]) -> Sequence[InfusionSession]:
    return db.exec(
        select(InfusionSession).where(
            InfusionSession.course_id == course_id, col(InfusionSession.status).in_(statuses)
        )
    ).all()


def slots_held(db: Session, patient_id: UUID) -> Sequence[InfusionSession]:
    """The patient's sessions that hold their slot: booked, under way or done."""
    return db.exec(
        select(InfusionSession).where(
            InfusionSession.patient_id == patient_id,
            col(InfusionSession.status).in_((*domain.OPEN_SESSION, domain.COMPLETED)),
        )
    ).all()


def latest_assessment(db: Session, course_id: UUID) -> EligibilityAssessment | None:
    return db.exec(
        select(EligibilityAssessment)
        .where(EligibilityAssessment.course_id == course_id)
        .order_by(col(EligibilityAssessment.assessed_at).desc())
    ).first()


def baseline(db: Session, course_id: UUID) -> EligibilityAssessment | None:
    """The course baseline is the first assessment: a re-assessment must not move it."""
    return db.exec(
        select(EligibilityAssessment)
        .where(EligibilityAssessment.course_id == course_id)
        .order_by(col(EligibilityAssessment.assessed_at))
    ).first()


def latest_plan(db: Session, course_id: UUID) -> DosingPlan | None:
    return db.exec(
        select(DosingPlan)
        .where(DosingPlan.course_id == course_id)
        .order_by(col(DosingPlan.agreed_at).desc())
    ).first()


def plan(db: Session, plan_id: UUID) -> DosingPlan | None:
    return db.get(DosingPlan, plan_id)


def latest_vitals_before(db: Session, session_id: UUID) -> VitalsReading | None:
    """The last reading taken before the infusion: the one the start is judged by."""
    return db.exec(
        select(VitalsReading)
        .where(VitalsReading.session_id == session_id, VitalsReading.phase == "before")
        .order_by(col(VitalsReading.at).desc(), col(VitalsReading.id).desc())
    ).first()


def vitals(db: Session, session_id: UUID) -> Sequence[VitalsReading]:
    return db.exec(
        select(VitalsReading)
        .where(VitalsReading.session_id == session_id)
        .order_by(col(VitalsReading.at))
    ).all()


def adverse_events(db: Session, session_id: UUID) -> Sequence[AdverseEvent]:
    return db.exec(
        select(AdverseEvent)
        .where(AdverseEvent.session_id == session_id)
        .order_by(col(AdverseEvent.at))
    ).all()
