"""The infusions service's commands: courses, assessments, plans, sessions.

Each command is ``(command, uow, user) -> result``: it loads and locks through the
repository, asks the course or session aggregate (course.py, session.py) to decide, and
stores the rows, the events and the audit of what it touched in one unit of work. A
command that raises has written nothing. Controllers (api.py) only parse, call one of
these and return a view (views.py). Who may call which command is the routes' guards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlmodel import SQLModel

from services.infusions import course, domain, repository, session
from services.infusions.models import (
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    OpioidUse,
    VitalsReading,
)
from services.infusions.schemas import (
    Abandonment,
    AdverseEventCreate,
    AssessmentCreate,
    CourseClosure,
    DoseGiven,
    OpioidUseCreate,
    PlanCreate,
    PlanPreview,
    Reason,
    ScoresBefore,
    SessionCompletion,
    SessionCreate,
    StartInfusion,
    VitalsCreate,
)
from shared import urgent_alerts
from shared.audit import AuditAction
from shared.auth import Role, User
from shared.clock import now
from shared.events.catalogue import Event, MdtReviewRecorded, ReferralAccepted
from shared.policy import clinical_policy
from shared.tables import as_utc
from shared.uow import UnitOfWork

# --- courses ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CourseQuery:
    patient_id: UUID | None = None
    status: str | None = None
    due_before: datetime | None = None


def list_courses(query: CourseQuery, uow: UnitOfWork, user: User) -> Sequence[InfusionCourse]:
    with uow:
        found = repository.courses(uow.session, query.patient_id, query.status, query.due_before)
        detail = f"list of {len(found)}"
        uow.commit_read("EpisodeOfCare", None, query.patient_id, detail=detail)
    return found


def read_course(course_id: UUID, uow: UnitOfWork, user: User) -> InfusionCourse:
    with uow:
        found = repository.course(uow.session, course_id)
        uow.commit_read("EpisodeOfCare", str(found.id), found.patient_id)
    return found


def assess(
    course_id: UUID, data: AssessmentCreate, uow: UnitOfWork, user: User
) -> tuple[EligibilityAssessment, OpioidUse | None]:
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        assessment, recorded, opioids = course.assess(
            found, data, user.id, now(), clinical_policy()
        )
        rows: list[SQLModel] = []
        events: list[Event] = [recorded]
        if opioids is not None:
            rows.append(opioids[0])
            events.append(opioids[1])
        detail = _overrides("caution", recorded.cautions_overridden)
        _store_created(
            uow, found, assessment, "EligibilityAssessment", events, rows=rows, detail=detail
        )
    return assessment, opioids[0] if opioids else None


def record_opioid_use(
    course_id: UUID, data: OpioidUseCreate, uow: UnitOfWork, user: User
) -> OpioidUse:
    """Opioid use at a follow-up, per medicine, with its MME per day."""
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        course.require_open(found, "record opioid use on")
        use, recorded = course.record_opioid_use(
            found, data.medicines, "follow-up", user.id, now(), clinical_policy().opioids
        )
        _store_created(uow, found, use, "MedicationStatement", [recorded])
    return use


def preview_plan(course_id: UUID, data: PlanCreate, uow: UnitOfWork, user: User) -> PlanPreview:
    with uow:
        found = repository.course(uow.session, course_id)
        latest = repository.latest_assessment(uow.session, found.id)
        dose = course.preview_plan(found, latest, data, clinical_policy().dose)
        uow.commit_read("InfusionCourse", str(found.id), found.patient_id, detail="plan preview")
    return PlanPreview(
        total_mg=dose.total_mg,
        rate_mg_per_h=dose.rate_mg_per_h,
        outside_band=list(dose.outside_band),
        why=list(dose.why),
    )


def agree_plan(course_id: UUID, data: PlanCreate, uow: UnitOfWork, user: User) -> DosingPlan:
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        latest = repository.latest_assessment(uow.session, found.id)
        sessions = repository.sessions(uow.session, found.id)
        plan, events = course.agree_plan(
            found, latest, data, user.id, now(), clinical_policy().dose, sessions
        )
        # The course and its sessions are kept too: the plan may activate and re-dose them.
        detail = _overrides("dose", plan.override["fields"] if plan.override else [])
        _store_created(
            uow, found, plan, "DosingPlan", events, rows=[found, *sessions], detail=detail
        )
    return plan


def schedule(course_id: UUID, data: SessionCreate, uow: UnitOfWork, user: User) -> InfusionSession:
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        new, scheduled = course.schedule(
            found,
            repository.latest_plan(uow.session, found.id),
            repository.latest_assessment(uow.session, found.id),
            repository.slots_held(uow.session, found.patient_id),
            repository.sessions(uow.session, found.id),
            # The request's times may be naive or in another zone: the event carries
            # them in UTC, as the row does (the column converts only what it stores).
            (as_utc(data.start), as_utc(data.end)),
            data.kind,
            now(),
            clinical_policy().dose,
        )
        _store_created(uow, found, new, "Appointment", [scheduled])
    return new


def hold(course_id: UUID, data: Reason, uow: UnitOfWork, user: User) -> InfusionCourse:
    return _change_status(course_id, "hold", data.reason, uow)


def resume(course_id: UUID, data: Reason, uow: UnitOfWork, user: User) -> InfusionCourse:
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        events = course.resume(found, data.reason, user.role == Role.mdt, now())
        _store_course(uow, found, events, f"status {found.status}")
    return found


def close(course_id: UUID, data: CourseClosure, uow: UnitOfWork, user: User) -> InfusionCourse:
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        urgent_alerts.refuse_while_open(uow.session, found.patient_id, "close the course")
        open_sessions = repository.sessions(uow.session, found.id, domain.OPEN_SESSION)
        events = course.close(found, open_sessions, data, now())
        _store_course(uow, found, events, f"closed: {data.reason}", rows=open_sessions)
    return found


def _change_status(course_id: UUID, action: str, reason: str, uow: UnitOfWork) -> InfusionCourse:
    with uow:
        found = repository.course(uow.session, course_id, lock=True)
        changed = course.change_status(found, action, reason, now())
        _store_course(uow, found, [changed], f"status {found.status}")
    return found


def _store_created(
    uow: UnitOfWork,
    found: InfusionCourse,
    created: EligibilityAssessment | OpioidUse | DosingPlan | InfusionSession,
    entity: str,
    events: Iterable[Event],
    *,
    rows: Iterable[SQLModel] = (),
    detail: str | None = None,
) -> None:
    """Keep what a step made on the course: the new row (audited as created), any other
    rows it touched and its events."""
    uow.session.add_all([created, *rows])
    _publish(uow, found, events)
    uow.audit(AuditAction.create, entity, str(created.id), found.patient_id, detail=detail)
    uow.commit()


def _overrides(kind: str, overridden: Sequence[str]) -> str | None:
    return f"{kind} override: {', '.join(overridden)}" if overridden else None


def _store_course(
    uow: UnitOfWork,
    found: InfusionCourse,
    events: Iterable[Event],
    detail: str,
    *,
    rows: Iterable[SQLModel] = (),
) -> None:
    """Keep what a step did to the course: its rows, its events and the audit of the
    course changed (as _store does at a session)."""
    uow.session.add_all([found, *rows])
    _publish(uow, found, events)
    uow.audit(AuditAction.update, "EpisodeOfCare", str(found.id), found.patient_id, detail=detail)
    uow.commit()


# --- sessions --------------------------------------------------------------------------


def read_session(session_id: UUID, uow: UnitOfWork, user: User) -> InfusionSession:
    with uow:
        found = repository.infusion_session(uow.session, session_id)
        uow.commit_read("Procedure", str(found.id), found.patient_id)
    return found


def check_in(session_id: UUID, uow: UnitOfWork, user: User) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        course.require_ready(of, repository.latest_assessment(uow.session, of.id), "check in")
        session.check_in(found)
        _store(uow, found, of, [], "checked in")
    return found


def record_scores_before(
    session_id: UUID, data: ScoresBefore, uow: UnitOfWork, user: User
) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        session.record_scores_before(found, data.pain_nrs, data.mood)
        _store(uow, found, of, [], "scores before")
    return found


def start(
    session_id: UUID, data: StartInfusion | None, uow: UnitOfWork, user: User
) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        latest = repository.latest_assessment(uow.session, of.id)
        course.require_ready(of, latest, "start an infusion")
        started = session.start(
            found,
            repository.latest_vitals_before(uow.session, found.id),
            data.override if data else None,
            user.id,
            now(),
            clinical_policy().vitals,
        )
        overridden = found.start_override is not None
        detail = "started over a high reading (override)" if overridden else "started"
        _store(uow, found, of, [started], detail)
    return found


def record_vitals(
    session_id: UUID, data: VitalsCreate, uow: UnitOfWork, user: User
) -> VitalsReading:
    with _at_session(uow, session_id) as (found, of):
        at = as_utc(data.at) if data.at else now()  # from the request: as schedule()
        reading, out_of_range = session.record_vitals(
            found, data, at, user.id, clinical_policy().vitals
        )
        events = [out_of_range] if out_of_range else []
        detail = "vitals" + (" out of range" if out_of_range else "")
        observed = (AuditAction.create, "Observation")
        _store(uow, found, of, events, detail, rows=[reading], audit=observed)
    return reading


def record_dose(session_id: UUID, data: DoseGiven, uow: UnitOfWork, user: User) -> InfusionSession:
    # The course is locked too (the lock order), though the dose concerns the session.
    with _at_session(uow, session_id) as (found, of):
        session.record_dose(found, data.given_mg, data.reason, clinical_policy().dose)
        administered = (AuditAction.update, "MedicationAdministration")
        detail = "dose given" + (" with a reason" if data.reason else "")
        _store(uow, found, of, [], detail, audit=administered)
    return found


def record_adverse_event(
    session_id: UUID, data: AdverseEventCreate, uow: UnitOfWork, user: User
) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        at = now()
        adverse, events = session.record_adverse_event(found, data, user.id, at)
        if data.severity == "serious":
            events += course.hold_after_serious_event(of, data.code, at)
        detail = f"{data.code} {data.severity}"
        recorded = (AuditAction.create, "AdverseEvent")
        _store(uow, found, of, events, detail, rows=[adverse, of], audit=recorded)
    return found


def complete(
    session_id: UUID, data: SessionCompletion, uow: UnitOfWork, user: User
) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        phq9 = None
        if data.phq9_items is not None:
            phq9 = course.score_phq9(data.phq9_items, "phq9_items")
        plan = repository.plan(uow.session, found.plan_id)
        completed = session.complete(
            found,
            of,
            plan,
            repository.baseline(uow.session, of.id),
            (data.pain_nrs, data.mood, phq9),
            len(repository.sessions(uow.session, of.id, (domain.COMPLETED,))),
            now(),
            clinical_policy().change,
        )
        # The course is kept too: completing an infusion moves its next maintenance date.
        _store(uow, found, of, [completed], "completed", rows=[of])
    return found


def cancel(session_id: UUID, data: Reason, uow: UnitOfWork, user: User) -> InfusionSession:
    return _end(session_id, "cancel", data.reason, uow)


def abandon(session_id: UUID, data: Abandonment, uow: UnitOfWork, user: User) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        ended = session.abandon(found, data.given_mg, data.reason, now())
        detail = "abandon" + (" with the dose given" if data.given_mg is not None else "")
        _store(uow, found, of, [ended], detail)
    return found


def _end(session_id: UUID, action: session.Ending, reason: str, uow: UnitOfWork) -> InfusionSession:
    with _at_session(uow, session_id) as (found, of):
        ended = session.end(found, action, reason, now())
        _store(uow, found, of, [ended], action)
    return found


@contextmanager
def _at_session(
    uow: UnitOfWork, session_id: UUID
) -> Iterator[tuple[InfusionSession, InfusionCourse]]:
    """A command at a session: its unit of work, with the session and its course loaded
    and locked (the course first: repository.session_and_course)."""
    with uow:
        yield repository.session_and_course(uow.session, session_id)


def _store(
    uow: UnitOfWork,
    found: InfusionSession,
    of: InfusionCourse,
    events: Iterable[Event],
    detail: str,
    *,
    rows: Iterable[SQLModel] = (),
    audit: tuple[AuditAction, str] = (AuditAction.update, "Procedure"),
) -> None:
    """Keep what a step did at the session: its rows, its events and the audit (by
    default, of the session changed)."""
    uow.session.add_all([found, *rows])
    _publish(uow, of, events)
    action, entity = audit
    uow.audit(action, entity, str(found.id), found.patient_id, detail=detail)
    uow.commit()


def _publish(
    uow: UnitOfWork,
    of: InfusionCourse,
    events: Iterable[Event],
    causation_id: str | None = None,
) -> None:
    # Every infusion event is about the course: one subject, so its events keep order.
    for event in events:
        uow.publish(
            event, patient_id=of.patient_id, subject=course.subject(of), causation_id=causation_id
        )


# --- events ----------------------------------------------------------------------------


def act_on_review(
    review: MdtReviewRecorded, patient_id: UUID, uow: UnitOfWork, causation_id: str
) -> InfusionCourse | None:
    """The MDT's decision acts on the patient's course (the one of the review's referral,
    else the patient's open course), in the consuming transaction. None if there is no
    course to act on."""
    found = (
        repository.course_of_referral(uow.session, review.referral_id)
        if (review.referral_id)
        else None
    )
    if found is None or found.patient_id != patient_id:
        found = repository.open_course_of(uow.session, patient_id)
    if found is None:
        return None
    found = repository.course(uow.session, found.id, lock=True)
    open_sessions = repository.sessions(uow.session, found.id, domain.OPEN_SESSION)
    events = course.act_on_review(found, review, open_sessions, now())
    uow.session.add_all([found, *open_sessions])
    _publish(uow, found, events, causation_id)
    return found


def open_course(
    accepted: ReferralAccepted, patient_id: UUID, uow: UnitOfWork, causation_id: str
) -> InfusionCourse | None:
    """An accepted ketamine-infusion referral opens a course, in the consuming
    transaction (committed with the inbox row). None if it is already open."""
    # The inbox stops a redelivery; the unique referral_id stops a second course from a
    # re-sent event with a new id (an operator's replay of an old message, say).
    if repository.course_of_referral(uow.session, accepted.referral_id) is not None:
        return None
    new, opened = course.open_from_referral(accepted, patient_id, now())
    uow.session.add(new)
    _publish(uow, new, [opened], causation_id)
    return new
