"""The therapy service's commands: diaries, episodes, appointments, measures.

Each command is ``(command, uow, user) -> result``: it loads and locks through the
repository, checks who may act, asks the episode or appointment aggregate (episode.py,
appointment.py) to decide, and stores the rows, the events and the audit of what it
touched in one unit of work. A command that raises has written nothing. Controllers
(api.py) only parse, call one of these and return a view (views.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

from litestar.exceptions import PermissionDeniedException
from sqlalchemy.exc import IntegrityError

from services.therapy import appointment, domain, episode, repository
from services.therapy.models import (
    Appointment,
    Clinician,
    ClinicianLeave,
    SessionMeasure,
    TherapyEpisode,
    WorkingHoursBlock,
)
from services.therapy.schemas import (
    AppointmentCancellation,
    AppointmentCreate,
    Assignment,
    ClinicianCreate,
    Correction,
    Discharge,
    LeaveCreate,
    MeasureCreate,
    Reschedule,
    WorkingHoursSet,
)
from shared import urgent_alerts
from shared.audit import AuditAction
from shared.auth import Role, User
from shared.db import load_or_404
from shared.domain import IllegalTransition
from shared.errors import Conflict
from shared.events.catalogue import Event, ReferralAccepted
from shared.policy import clinical_policy
from shared.tables import as_utc, utcnow
from shared.uow import UnitOfWork

PSY = Role.psychologist

# --- clinicians and their diaries --------------------------------------------------------


def add_clinician(data: ClinicianCreate, uow: UnitOfWork, user: User) -> Clinician:
    with uow:
        _may_edit_diary(user, data.id)
        if repository.clinician(uow.session, data.id) is not None:
            raise Conflict("this clinician is already in the service")
        clinician = Clinician(id=data.id, display_name=data.display_name)
        uow.session.add(clinician)
        uow.commit()
    return clinician


def read_clinician(clinician_id: str, uow: UnitOfWork) -> Clinician:
    return _clinician(uow, clinician_id)


def set_working_hours(
    clinician_id: str, data: WorkingHoursSet, uow: UnitOfWork, user: User
) -> Clinician:
    with uow:
        _may_edit_diary(user, clinician_id)
        clinician = _clinician(uow, clinician_id)
        blocks = [domain.WorkingHours(b.weekday, b.start, b.end) for b in data.hours]
        domain.check_working_hours(blocks)
        for old in repository.working_hours(uow.session, clinician_id):
            uow.session.delete(old)
        uow.session.add_all(
            WorkingHoursBlock(
                clinician_id=clinician_id, weekday=block.weekday, start=block.start, end=block.end
            )
            for block in blocks
        )
        uow.commit()
    return clinician


def add_leave(clinician_id: str, data: LeaveCreate, uow: UnitOfWork, user: User) -> Clinician:
    with uow:
        _may_edit_diary(user, clinician_id)
        clinician = _clinician(uow, clinician_id)
        domain.check_leave(data.first_day, data.last_day)
        uow.session.add(
            ClinicianLeave(
                clinician_id=clinician_id, first_day=data.first_day, last_day=data.last_day
            )
        )
        uow.commit()
    return clinician


def free_slots(
    clinician_id: str, from_day: date | None, days: int, uow: UnitOfWork
) -> list[datetime]:
    """Free slots from working hours, leave and bookings, from now on."""
    _clinician(uow, clinician_id)
    if not 1 <= days <= 62:
        raise domain.TherapyRuleBroken("days", "must be 1 to 62")
    now = utcnow()
    first = from_day or now.date()
    hours, leave = _diary(uow, clinician_id)
    booked = [a.start for a in repository.holding(uow.session, clinician_id=clinician_id)]
    last = first + timedelta(days=days - 1)
    return [
        s
        for s in domain.slots(hours, leave, booked, first, last, clinical_policy().therapy)
        if s > now
    ]


def _may_edit_diary(user: User, clinician_id: str) -> None:
    if user.role is not Role.admin and user.id != clinician_id:
        raise PermissionDeniedException("a psychologist keeps their own diary")


def _clinician(uow: UnitOfWork, clinician_id: str) -> Clinician:
    return load_or_404(uow.session, Clinician, clinician_id, "clinician")


def _diary(
    uow: UnitOfWork, clinician_id: str
) -> tuple[list[domain.WorkingHours], list[tuple[date, date]]]:
    hours = [
        domain.WorkingHours(b.weekday, b.start, b.end)
        for b in repository.working_hours(uow.session, clinician_id)
    ]
    leave = [(off.first_day, off.last_day) for off in repository.leave(uow.session, clinician_id)]
    return hours, leave


# --- episodes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeQuery:
    patient_id: UUID | None = None
    status: str | None = None
    clinician_id: str | None = None


def list_episodes(query: EpisodeQuery, uow: UnitOfWork, user: User) -> Sequence[TherapyEpisode]:
    with uow:
        found = repository.episodes(uow.session, query.patient_id, query.status, query.clinician_id)
        detail = f"list of {len(found)}"
        uow.commit_read("EpisodeOfCare", None, query.patient_id, detail=detail)
    return found


def read_episode(episode_id: UUID, uow: UnitOfWork, user: User) -> TherapyEpisode:
    with uow:
        found = repository.episode(uow.session, episode_id)
        uow.commit_read("EpisodeOfCare", str(found.id), found.patient_id)
    return found


def assign(episode_id: UUID, data: Assignment, uow: UnitOfWork, user: User) -> TherapyEpisode:
    with uow:
        found = repository.episode(uow.session, episode_id, lock=True)
        # A psychologist takes a patient from the waiting list onto their own caseload;
        # the MDT may assign anyone.
        if user.role is PSY and data.clinician_id != user.id:
            raise PermissionDeniedException("a psychologist assigns episodes to themselves")
        if user.role is PSY and found.clinician_id not in (None, user.id):
            raise PermissionDeniedException("this episode is on another psychologist's caseload")
        _clinician(uow, data.clinician_id)
        assigned = episode.assign(found, data.clinician_id, utcnow())
        uow.session.add(found)
        _publish(uow, found, [assigned])
        _audit_episode(uow, found, "assigned")
        uow.commit()
    return found


def book(episode_id: UUID, data: AppointmentCreate, uow: UnitOfWork, user: User) -> Appointment:
    with uow:
        found = repository.episode(uow.session, episode_id, lock=True)
        _own_caseload(user, found)
        new, booked = episode.book(
            found,
            data.kind,
            data.mode,
            data.location,
            # The request's time may be naive or in another zone: the event carries it
            # in UTC, as the row does (the column converts only what it stores).
            as_utc(data.start),
            user.id,
            clinical_policy().therapy,
        )
        _check_slot(uow, new.clinician_id, new.start, patient_id=new.patient_id)
        uow.session.add(new)
        _hold_slot(uow)
        uow.session.add(found)
        _publish(uow, found, [booked])
        uow.audit(AuditAction.create, "Appointment", str(new.id), found.patient_id)
        _commit_booking(uow)
    return new


def discharge(episode_id: UUID, data: Discharge, uow: UnitOfWork, user: User) -> TherapyEpisode:
    with uow:
        found = repository.episode(uow.session, episode_id, lock=True)
        if user.role is PSY:
            _own_caseload(user, found)
        urgent_alerts.refuse_while_open(uow.session, found.patient_id, "discharge")
        appointments = repository.appointments(uow.session, found.id)
        events = episode.discharge(
            found, appointments, data.reason, data.note, utcnow(), clinical_policy().therapy
        )
        uow.session.add_all([found, *appointments])
        _publish(uow, found, events)
        _audit_episode(uow, found, f"discharged: {data.reason}")
        uow.commit()
    return found


def _own_caseload(user: User, found: TherapyEpisode) -> None:
    if found.clinician_id is not None and found.clinician_id != user.id:
        raise PermissionDeniedException("this episode is on another psychologist's caseload")


def _audit_episode(uow: UnitOfWork, found: TherapyEpisode, detail: str) -> None:
    uow.audit(AuditAction.update, "EpisodeOfCare", str(found.id), found.patient_id, detail=detail)


# --- appointments ----------------------------------------------------------------------------


def reschedule(appointment_id: UUID, data: Reschedule, uow: UnitOfWork, user: User) -> Appointment:
    with uow:
        found, of = _appointment(uow, user, appointment_id, "reschedule")
        # From the request: in UTC for the event, as in book().
        moved = appointment.reschedule(found, as_utc(data.start), clinical_policy().therapy)
        _check_slot(uow, found.clinician_id, found.start, patient_id=of.patient_id, moving=found.id)
        uow.session.add(found)
        _hold_slot(uow)
        _publish(uow, of, [moved])
        _audit_appointment(uow, found, "rescheduled")
        _commit_booking(uow)
    return found


def act(appointment_id: UUID, action: str, uow: UnitOfWork, user: User) -> Appointment:
    """Check in, attend or miss (action "check-in", "attend" or "miss")."""
    return _act(appointment_id, action, uow, user)


def cancel(
    appointment_id: UUID, data: AppointmentCancellation, uow: UnitOfWork, user: User
) -> Appointment:
    return _act(appointment_id, "cancel", uow, user, cancelled_by=data.by, reason=data.reason)


def correct(appointment_id: UUID, data: Correction, uow: UnitOfWork, user: User) -> Appointment:
    with uow:
        # A record can be put right after discharge (a no-show that led to a discharge
        # for non-attendance, say); only re-booking needs the episode open.
        found, of = _appointment(
            uow, user, appointment_id, "correct", open_episode=data.status == domain.BOOKED
        )
        appointments = repository.appointments(uow.session, of.id)
        previous = found.status
        try:
            events = appointment.correct(
                found, appointments, data.status, data.reason, utcnow(), clinical_policy().therapy
            )
        except IllegalTransition as error:
            # A correction's refusal has its own wording: "an appointment that is
            # fulfilled cannot be corrected to booked".
            raise Conflict(str(error), current_status=error.current) from None
        uow.session.add(found)
        if appointment.takes_a_slot_back(previous, found.status):
            _hold_slot(uow)
        _publish(uow, of, events)
        _audit_appointment(uow, found, f"corrected to {found.status}")
        _commit_booking(uow)
    return found


def record_measure(
    appointment_id: UUID, data: MeasureCreate, uow: UnitOfWork, user: User
) -> SessionMeasure:
    with uow:
        found, of = _appointment(uow, user, appointment_id, "record measures")
        try:
            measure, events = appointment.record_measure(
                found, data.instrument, data.items, user.id, utcnow()
            )
        except IllegalTransition as error:
            raise Conflict(
                "measures are recorded at an attended appointment", current_status=error.current
            ) from None
        uow.session.add(measure)
        _publish(uow, of, events)
        uow.audit(
            AuditAction.create,
            "QuestionnaireResponse",
            str(measure.id),
            of.patient_id,
            detail=data.instrument,
        )
        uow.commit()
    return measure


def _act(
    appointment_id: UUID,
    action: str,
    uow: UnitOfWork,
    user: User,
    *,
    cancelled_by: appointment.CancelledBy | None = None,
    reason: str | None = None,
) -> Appointment:
    with uow:
        found, of = _appointment(uow, user, appointment_id, action)
        appointments = repository.appointments(uow.session, of.id)
        events = appointment.act(
            found,
            appointments,
            action,
            utcnow(),
            clinical_policy().therapy,
            cancelled_by=cancelled_by,
            reason=reason,
        )
        uow.session.add(found)
        _publish(uow, of, events)
        _audit_appointment(uow, found, action)
        uow.commit()
    return found


def _appointment(
    uow: UnitOfWork, user: User, appointment_id: UUID, action: str, *, open_episode: bool = True
) -> tuple[Appointment, TherapyEpisode]:
    """The appointment and its episode, locked, for a psychologist whose caseload it is."""
    found = repository.appointment_and_episode(uow.session, appointment_id)
    _own_caseload(user, found[1])
    if open_episode:
        episode.require_open(found[1], action)
    return found


def _audit_appointment(uow: UnitOfWork, found: Appointment, detail: str) -> None:
    uow.audit(AuditAction.update, "Appointment", str(found.id), found.patient_id, detail=detail)


def _check_slot(
    uow: UnitOfWork,
    clinician_id: str,
    start: datetime,
    *,
    patient_id: UUID,
    moving: UUID | None = None,
) -> None:
    """The start is one of the clinician's slots, and neither the clinician nor the
    patient is booked then (the appointment being moved aside)."""
    # Judge against what is stored: a move not yet written must not be flushed by these
    # reads, or the unique slot index would refuse it before the clash could be named.
    with uow.session.no_autoflush:
        hours, leave = _diary(uow, clinician_id)
        domain.check_bookable(start, utcnow(), hours, leave, clinical_policy().therapy)
        if _others(repository.holding(uow.session, clinician_id=clinician_id, start=start), moving):
            raise Conflict("the clinician is already booked at that time", field="start")
        if _others(repository.holding(uow.session, patient_id=patient_id, start=start), moving):
            raise Conflict("the patient has another appointment at that time", field="start")


def _others(appointments: Iterable[Appointment], moving: UUID | None) -> list[Appointment]:
    return [a for a in appointments if a.id != moving]


def _hold_slot(uow: UnitOfWork) -> None:
    """Write the appointment now, so the partial unique indexes judge it here: a clash
    becomes a 409 naming the slot, not an error later in the transaction."""
    try:
        uow.session.flush()
    except IntegrityError:
        uow.rollback()
        raise Conflict(
            "this slot is taken (by the clinician's or the patient's other "
            "appointment); choose another",
            field="start",
        ) from None


def _commit_booking(uow: UnitOfWork) -> None:
    try:
        uow.commit()
    except IntegrityError:
        # The partial unique indexes: another booking took this slot first.
        raise Conflict(
            "this slot was booked by someone else a moment ago; choose another", field="start"
        ) from None


def _publish(uow: UnitOfWork, of: TherapyEpisode, events: Iterable[Event]) -> None:
    for event in events:
        uow.publish(event, patient_id=of.patient_id, subject=episode.subject(of))


# --- events ----------------------------------------------------------------------------------


def open_episode(
    accepted: ReferralAccepted,
    patient_id: UUID,
    referred_at: datetime,
    uow: UnitOfWork,
    causation_id: str,
) -> TherapyEpisode | None:
    """An accepted psychology referral opens an episode on the waiting list, in the
    consuming transaction (committed with the inbox row). None if it is already open."""
    # The inbox stops a redelivery; the unique referral_id stops a replayed message.
    if repository.episode_of_referral(uow.session, accepted.referral_id) is not None:
        return None
    new, opened = episode.open_from_referral(accepted, patient_id, referred_at, utcnow())
    uow.session.add(new)
    uow.publish(
        opened, patient_id=patient_id, subject=episode.subject(new), causation_id=causation_id
    )
    return new
