"""Loads and locks of the infusions service's rows; no rule lives here.

The database session is ``db`` throughout: in this service a "session" is an infusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from sqlmodel import Session, col, select

from services.infusions import domain
from services.infusions.models import (
    AdverseEvent,
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    OpioidUse,
    VitalsReading,
)
from shared.db import first_row, load_or_404, rows, where_given


def course(db: Session, course_id: UUID, *, lock: bool = False) -> InfusionCourse:
    # Locked, two clinicians acting on one course take turns.
    return load_or_404(db, InfusionCourse, course_id, "infusion course", lock=lock)


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
    statement = where_given(
        select(InfusionCourse),
        (InfusionCourse.patient_id, patient_id),
        (InfusionCourse.status, status),
    )
    if due_before is not None:
        statement = statement.where(
            col(InfusionCourse.maintenance_due_at) < due_before,
            col(InfusionCourse.status).in_((domain.ACTIVE, domain.ONHOLD)),
        )
    return db.exec(statement.order_by(col(InfusionCourse.opened_at))).all()


def infusion_session(db: Session, session_id: UUID, *, lock: bool = False) -> InfusionSession:
    return load_or_404(db, InfusionSession, session_id, "infusion session", lock=lock)


def session_and_course(db: Session, session_id: UUID) -> tuple[InfusionSession, InfusionCourse]:
    """Lock the course, then the session: the order every writer takes (closing a course
    locks the course, then its sessions), so two writers cannot deadlock."""
    unlocked = infusion_session(db, session_id)
    of = course(db, unlocked.course_id, lock=True)
    db.expire_all()  # read the session again under the lock, not the unlocked copy
    return infusion_session(db, session_id, lock=True), of


def sessions(
    db: Session, course_id: UUID, statuses: Sequence[str] | None = None
) -> Sequence[InfusionSession]:
    """A course's sessions in number order; with statuses, only those in one of them."""
    statement = select(InfusionSession).where(InfusionSession.course_id == course_id)
    if statuses is not None:
        statement = statement.where(col(InfusionSession.status).in_(statuses))
    return db.exec(statement.order_by(col(InfusionSession.number))).all()


def slots_held(db: Session, patient_id: UUID) -> Sequence[InfusionSession]:
    """The patient's sessions that hold their slot: booked, under way or done."""
    return db.exec(
        select(InfusionSession).where(
            InfusionSession.patient_id == patient_id,
            col(InfusionSession.status).in_((*domain.OPEN_SESSION, domain.COMPLETED)),
        )
    ).all()


def latest_assessment(db: Session, course_id: UUID) -> EligibilityAssessment | None:
    return _assessment(db, course_id, col(EligibilityAssessment.assessed_at).desc())


def baseline(db: Session, course_id: UUID) -> EligibilityAssessment | None:
    """The course baseline is the first assessment: a re-assessment must not move it."""
    return _assessment(db, course_id, col(EligibilityAssessment.assessed_at))


def _assessment(db: Session, course_id: UUID, order_by: object) -> EligibilityAssessment | None:
    return first_row(
        db, EligibilityAssessment, EligibilityAssessment.course_id == course_id, order_by=order_by
    )


def opioid_use(db: Session, course_id: UUID) -> Sequence[OpioidUse]:
    """Every record of opioid use on the course, oldest first: the MME trend."""
    return rows(
        db, OpioidUse, OpioidUse.course_id == course_id, order_by=col(OpioidUse.recorded_at)
    )


def latest_plan(db: Session, course_id: UUID) -> DosingPlan | None:
    return first_row(
        db, DosingPlan, DosingPlan.course_id == course_id, order_by=col(DosingPlan.agreed_at).desc()
    )


def plan(db: Session, plan_id: UUID) -> DosingPlan:
    # Never missing: a session is always booked from a plan (a foreign key).
    return load_or_404(db, DosingPlan, plan_id, "dosing plan")


def latest_vitals_before(db: Session, session_id: UUID) -> VitalsReading | None:
    """The last reading taken before the infusion: the one the start is judged by."""
    return db.exec(
        select(VitalsReading)
        .where(VitalsReading.session_id == session_id, VitalsReading.phase == "before")
        .order_by(col(VitalsReading.at).desc(), col(VitalsReading.id).desc())
    ).first()


def vitals(db: Session, session_id: UUID) -> Sequence[VitalsReading]:
    return _in_time_order(db, VitalsReading, session_id)


def adverse_events(db: Session, session_id: UUID) -> Sequence[AdverseEvent]:
    return _in_time_order(db, AdverseEvent, session_id)


Recorded = TypeVar("Recorded", VitalsReading, AdverseEvent)


def _in_time_order(db: Session, table: type[Recorded], session_id: UUID) -> Sequence[Recorded]:
    """What was recorded during an infusion, in the order it happened."""
    return rows(db, table, table.session_id == session_id, order_by=col(table.at))
