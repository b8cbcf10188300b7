"""HTTP controllers of the therapy service: diaries, episodes, appointments, measures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.therapy import domain
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
    AppointmentRead,
    Assignment,
    ClinicianCreate,
    ClinicianRead,
    Correction,
    Discharge,
    EpisodePage,
    EpisodeRead,
    HoursBlock,
    LeaveCreate,
    MeasureCreate,
    MeasureRead,
    Reschedule,
    SlotsRead,
    WaitingRead,
    WorkingHoursSet,
)
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, User, requires
from shared.errors import Conflict, FieldProblem
from shared.events import Actor, Subject
from shared.events.catalogue import (
    AppointmentBooked,
    AppointmentRescheduled,
    AppointmentStatusChanged,
    Event,
    MeasureRecorded,
    MeasureRiskFlagged,
    TherapyDnaThresholdReached,
    TherapyEpisodeAssigned,
    TherapyEpisodeDischarged,
)
from shared.measures import INSTRUMENTS, InvalidItems, peg_mean, score
from shared.outbox import publish
from shared.tables import as_utc

SERVICE = "therapy"
POLICY = domain.TherapyPolicy()
PSY = Role.psychologist
READERS = (Role.psychologist, Role.mdt, Role.admin)
TREATMENT_KINDS = ("cbt", "review")


def _now() -> datetime:
    return datetime.now(UTC)


def _rule(error: domain.TherapyRuleBroken) -> FieldProblem:
    return FieldProblem(error.field, error.message)


def _publish(
    db: Session,
    user: User,
    episode: TherapyEpisode,
    event_type: str,
    payload: type[Event],
    **fields: Any,
) -> None:
    publish(
        db,
        event_type=event_type,
        payload=payload,
        fields={"episode_id": episode.id, **fields},
        producer=SERVICE,
        patient_id=episode.patient_id,
        subject=Subject(type="therapy-episode", id=str(episode.id)),
        actor=Actor(user_id=user.id, role=user.role.value),
    )


# --- clinicians and their diaries --------------------------------------------------------


class ClinicianController(Controller):
    path = "/api/clinicians"
    tags = ["clinicians"]
    opt = {"resource": "PractitionerRole"}

    @post(operation_id="addClinician", guards=[requires(Role.admin, PSY)], sync_to_thread=True)
    def add(
        self,
        data: JSONBody[ClinicianCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
    ) -> ClinicianRead:
        _may_edit_diary(user, data.id)
        if db.get(Clinician, data.id) is not None:
            raise Conflict("this clinician is already in the service")
        clinician = Clinician(id=data.id, display_name=data.display_name)
        db.add(clinician)
        db.commit()
        return _clinician_read(db, clinician)

    @get(
        "/{clinician_id:str}",
        operation_id="readClinician",
        guards=[requires(*READERS)],
        sync_to_thread=True,
    )
    def read(self, clinician_id: FromPath[str], db: NamedDependency[Session]) -> ClinicianRead:
        return _clinician_read(db, _clinician(db, clinician_id))

    @put(
        "/{clinician_id:str}/working-hours",
        operation_id="setWorkingHours",
        guards=[requires(Role.admin, PSY)],
        sync_to_thread=True,
    )
    def set_hours(
        self,
        clinician_id: FromPath[str],
        data: JSONBody[WorkingHoursSet],
        db: NamedDependency[Session],
        user: NamedDependency[User],
    ) -> ClinicianRead:
        _may_edit_diary(user, clinician_id)
        clinician = _clinician(db, clinician_id)
        blocks = [domain.WorkingHours(b.weekday, b.start, b.end) for b in data.hours]
        try:
            domain.check_working_hours(blocks)
        except domain.TherapyRuleBroken as error:
            raise _rule(error) from None
        for old in db.exec(
            select(WorkingHoursBlock).where(WorkingHoursBlock.clinician_id == clinician_id)
        ).all():
            db.delete(old)
        for block in blocks:
            db.add(
                WorkingHoursBlock(
                    clinician_id=clinician_id,
                    weekday=block.weekday,
                    start=block.start,
                    end=block.end,
                )
            )
        db.commit()
        return _clinician_read(db, clinician)

    @post(
        "/{clinician_id:str}/leave",
        operation_id="addLeave",
        guards=[requires(Role.admin, PSY)],
        sync_to_thread=True,
    )
    def add_leave(
        self,
        clinician_id: FromPath[str],
        data: JSONBody[LeaveCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
    ) -> ClinicianRead:
        _may_edit_diary(user, clinician_id)
        clinician = _clinician(db, clinician_id)
        if data.last_day < data.first_day:
            raise FieldProblem("last_day", "must not be before the first day")
        db.add(
            ClinicianLeave(
                clinician_id=clinician_id, first_day=data.first_day, last_day=data.last_day
            )
        )
        db.commit()
        return _clinician_read(db, clinician)

    @get(
        "/{clinician_id:str}/slots",
        operation_id="freeSlots",
        guards=[requires(*READERS)],
        sync_to_thread=True,
        summary="Free slots from working hours, leave and bookings",
    )
    def free_slots(
        self,
        clinician_id: FromPath[str],
        db: NamedDependency[Session],
        from_day: FromQuery[date | None] = None,
        days: FromQuery[int] = 14,
    ) -> SlotsRead:
        _clinician(db, clinician_id)
        if not 1 <= days <= 62:
            raise FieldProblem("days", "must be 1 to 62")
        first = from_day or _now().date()
        hours, leave = _diary(db, clinician_id)
        booked = [as_utc(a.start) for a in _holding(db, clinician_id=clinician_id)]
        now = _now()
        free = [
            s
            for s in domain.slots(
                hours, leave, booked, first, first + timedelta(days=days - 1), POLICY
            )
            if s > now
        ]
        return SlotsRead(clinician_id=clinician_id, slot_minutes=POLICY.slot_minutes, slots=free)


def _may_edit_diary(user: User, clinician_id: str) -> None:
    if user.role is not Role.admin and user.id != clinician_id:
        raise PermissionDeniedException("a psychologist keeps their own diary")


def _clinician(db: Session, clinician_id: str) -> Clinician:
    clinician = db.get(Clinician, clinician_id)
    if clinician is None:
        raise NotFoundException(f"no clinician {clinician_id}")
    return clinician


def _diary(
    db: Session, clinician_id: str
) -> tuple[list[domain.WorkingHours], list[tuple[date, date]]]:
    hours = [
        domain.WorkingHours(b.weekday, b.start, b.end)
        for b in db.exec(
            select(WorkingHoursBlock).where(WorkingHoursBlock.clinician_id == clinician_id)
        ).all()
    ]
    leave = [
        (leave.first_day, leave.last_day)
        for leave in db.exec(
            select(ClinicianLeave).where(ClinicianLeave.clinician_id == clinician_id)
        ).all()
    ]
    return hours, leave


def _holding(db: Session, **where: Any) -> list[Appointment]:
    statement = select(Appointment).where(col(Appointment.status).in_(domain.HOLDS_SLOT))
    for name, value in where.items():
        statement = statement.where(getattr(Appointment, name) == value)
    return list(db.exec(statement).all())


def _clinician_read(db: Session, clinician: Clinician) -> ClinicianRead:
    hours, leave = _diary(db, clinician.id)
    return ClinicianRead(
        id=clinician.id,
        display_name=clinician.display_name,
        hours=[HoursBlock(weekday=h.weekday, start=h.start, end=h.end) for h in hours],
        leave=[LeaveCreate(first_day=first, last_day=last) for first, last in leave],
    )


# --- episodes ------------------------------------------------------------------------------


class EpisodeController(Controller):
    path = "/api/therapy-episodes"
    tags = ["therapy episodes"]
    opt = {"resource": "EpisodeOfCare"}

    @get(
        operation_id="listTherapyEpisodes",
        guards=[requires(*READERS)],
        sync_to_thread=True,
        summary="Episodes; status=waitlist gives the team's waiting list, oldest referral first",
    )
    def list_episodes(
        self,
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
        patient_id: FromQuery[UUID | None] = None,
        status: FromQuery[str | None] = None,
        clinician_id: FromQuery[str | None] = None,
    ) -> EpisodePage:
        statement = select(TherapyEpisode)
        if patient_id is not None:
            statement = statement.where(TherapyEpisode.patient_id == patient_id)
        if status is not None:
            if status not in domain.EPISODE_STATUSES:
                raise FieldProblem(
                    "status", f"must be one of: {', '.join(domain.EPISODE_STATUSES)}"
                )
            statement = statement.where(TherapyEpisode.status == status)
        if clinician_id is not None:
            statement = statement.where(TherapyEpisode.clinician_id == clinician_id)
        episodes = db.exec(statement.order_by(col(TherapyEpisode.referred_at))).all()
        audit.record(
            db,
            AuditAction.read,
            "EpisodeOfCare",
            None,
            patient_id,
            detail=f"list of {len(episodes)}",
        )
        db.commit()
        return EpisodePage(items=[_episode_read(db, e, user) for e in episodes])

    @get(
        "/{episode_id:uuid}",
        operation_id="readTherapyEpisode",
        guards=[requires(*READERS)],
        sync_to_thread=True,
    )
    def read(
        self,
        episode_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> EpisodeRead:
        episode = _episode(db, episode_id)
        audit.record(db, AuditAction.read, "EpisodeOfCare", str(episode.id), episode.patient_id)
        db.commit()
        return _episode_read(db, episode, user, detail=True)

    @post(
        "/{episode_id:uuid}/assign",
        operation_id="assignTherapist",
        status_code=200,
        guards=[requires(PSY, Role.mdt)],
        sync_to_thread=True,
    )
    def assign(
        self,
        episode_id: FromPath[UUID],
        data: JSONBody[Assignment],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> EpisodeRead:
        episode = _episode(db, episode_id, lock=True)
        _open_episode(episode)
        # A psychologist takes a patient from the waiting list onto their own caseload;
        # the MDT may assign anyone.
        if user.role is PSY and data.clinician_id != user.id:
            raise PermissionDeniedException("a psychologist assigns episodes to themselves")
        if user.role is PSY and episode.clinician_id not in (None, user.id):
            raise PermissionDeniedException("this episode is on another psychologist's caseload")
        _clinician(db, data.clinician_id)
        episode.clinician_id = data.clinician_id
        db.add(episode)
        _publish(
            db,
            user,
            episode,
            "therapy.episode.assigned",
            TherapyEpisodeAssigned,
            clinician_id=data.clinician_id,
            assigned_at=_now(),
        )
        audit.record(
            db,
            AuditAction.update,
            "EpisodeOfCare",
            str(episode.id),
            episode.patient_id,
            detail="assigned",
        )
        db.commit()
        return _episode_read(db, episode, user, detail=True)

    @post(
        "/{episode_id:uuid}/appointments",
        operation_id="bookAppointment",
        status_code=201,
        guards=[requires(PSY)],
        sync_to_thread=True,
    )
    def book(
        self,
        episode_id: FromPath[UUID],
        data: JSONBody[AppointmentCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        episode = _episode(db, episode_id, lock=True)
        _own_caseload(user, episode)
        _open_episode(episode)
        if episode.clinician_id is None:
            raise FieldProblem("clinician_id", "assign the episode to a psychologist first")
        if data.mode == "in-person" and not data.location:
            raise FieldProblem("location", "an in-person appointment needs a location")
        start = as_utc(data.start)
        _check_slot(db, episode.clinician_id, start, patient_id=episode.patient_id)
        appointment = Appointment(
            episode_id=episode.id,
            patient_id=episode.patient_id,
            clinician_id=episode.clinician_id,
            kind=data.kind,
            mode=data.mode,
            location=data.location,
            start=start,
            end=start + timedelta(minutes=POLICY.slot_minutes),
            status=domain.BOOKED,
            booked_by=user.id,
        )
        db.add(appointment)
        _hold_slot(db)
        if episode.status == "waitlist":
            episode.status = "active"
            db.add(episode)
        _publish(
            db,
            user,
            episode,
            "appointment.booked",
            AppointmentBooked,
            appointment_id=appointment.id,
            kind=data.kind,
            mode=data.mode,
            clinician_id=episode.clinician_id,
            start=start,
            end=appointment.end,
        )
        audit.record(db, AuditAction.create, "Appointment", str(appointment.id), episode.patient_id)
        _commit_booking(db)
        return _appointment_read(appointment, user)

    @post(
        "/{episode_id:uuid}/discharge",
        operation_id="dischargeTherapyEpisode",
        status_code=200,
        guards=[requires(PSY, Role.mdt)],
        sync_to_thread=True,
        summary="Discharge with a reason; after missed appointments it is never automatic",
    )
    def discharge(
        self,
        episode_id: FromPath[UUID],
        data: JSONBody[Discharge],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> EpisodeRead:
        episode = _episode(db, episode_id, lock=True)
        if user.role is PSY:
            _own_caseload(user, episode)
        _open_episode(episode)
        appointments = _appointments(db, episode.id)
        try:
            status = domain.discharge_status(
                data.reason, data.note, _attended_treatment(appointments), POLICY
            )
        except domain.TherapyRuleBroken as error:
            raise _rule(error) from None
        now = _now()
        for appointment in appointments:  # booked ones will not happen now
            if appointment.status in (domain.BOOKED, domain.ARRIVED):
                _change(
                    db,
                    user,
                    episode,
                    appointment,
                    domain.CANCELLED,
                    "appointment.cancelled",
                    appointments,
                    cancelled_by="clinic",
                    reason="episode discharged",
                )
        episode.status, episode.discharged_at = status, now
        episode.discharge_reason, episode.discharge_note = data.reason, data.note
        db.add(episode)
        _publish(
            db,
            user,
            episode,
            "therapy.episode.discharged",
            TherapyEpisodeDischarged,
            referral_id=episode.referral_id,
            reason=data.reason,
            discharged_at=now,
        )
        audit.record(
            db,
            AuditAction.update,
            "EpisodeOfCare",
            str(episode.id),
            episode.patient_id,
            detail=f"discharged: {data.reason}",
        )
        db.commit()
        return _episode_read(db, episode, user, detail=True)


def _hold_slot(db: Session) -> None:
    """Write the appointment now, so the partial unique indexes judge it here: a clash
    becomes a 409 naming the slot, not an error later in the transaction."""
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise Conflict(
            "this slot is taken (by the clinician's or the patient's other "
            "appointment); choose another",
            field="start",
        ) from None


def _commit_booking(db: Session) -> None:
    try:
        db.commit()
    except IntegrityError:
        # The partial unique indexes: another booking took this slot first.
        db.rollback()
        raise Conflict(
            "this slot was booked by someone else a moment ago; choose another", field="start"
        ) from None


def _check_slot(
    db: Session,
    clinician_id: str,
    start: datetime,
    *,
    patient_id: UUID,
    moving: UUID | None = None,
) -> None:
    hours, leave = _diary(db, clinician_id)
    try:
        domain.check_bookable(start, _now(), hours, leave, POLICY)
    except domain.TherapyRuleBroken as error:
        raise _rule(error) from None
    clash = [a for a in _holding(db, clinician_id=clinician_id, start=start) if a.id != moving]
    if clash:
        raise Conflict("the clinician is already booked at that time", field="start")
    clash = [a for a in _holding(db, patient_id=patient_id, start=start) if a.id != moving]
    if clash:
        raise Conflict("the patient has another appointment at that time", field="start")


def _episode(db: Session, episode_id: UUID, *, lock: bool = False) -> TherapyEpisode:
    episode = db.get(TherapyEpisode, episode_id, with_for_update=lock)
    if episode is None:
        raise NotFoundException(f"no therapy episode {episode_id}")
    return episode


def _own_caseload(user: User, episode: TherapyEpisode) -> None:
    if episode.clinician_id is not None and episode.clinician_id != user.id:
        raise PermissionDeniedException("this episode is on another psychologist's caseload")


def _open_episode(episode: TherapyEpisode) -> None:
    if episode.status not in domain.EPISODE_OPEN:
        raise Conflict(f"the episode is {episode.status}", current_status=episode.status)


def _appointments(db: Session, episode_id: UUID) -> list[Appointment]:
    return list(
        db.exec(
            select(Appointment)
            .where(Appointment.episode_id == episode_id)
            .order_by(col(Appointment.start))
        ).all()
    )


def _attended_treatment(appointments: list[Appointment]) -> int:
    return sum(
        1 for a in appointments if a.status == domain.FULFILLED and a.kind in TREATMENT_KINDS
    )


# --- appointments ----------------------------------------------------------------------------


class AppointmentController(Controller):
    path = "/api/appointments"
    tags = ["appointments"]
    opt = {"resource": "Appointment"}

    @post(
        "/{appointment_id:uuid}/reschedule",
        operation_id="rescheduleAppointment",
        status_code=200,
        guards=[requires(PSY)],
        sync_to_thread=True,
    )
    def reschedule(
        self,
        appointment_id: FromPath[UUID],
        data: JSONBody[Reschedule],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        appointment, episode = _appointment_and_episode(db, user, appointment_id)
        _move(appointment.status, "reschedule")
        start = as_utc(data.start)
        _check_slot(
            db,
            appointment.clinician_id,
            start,
            patient_id=appointment.patient_id,
            moving=appointment.id,
        )
        previous = as_utc(appointment.start)
        appointment.start, appointment.end = start, start + timedelta(minutes=POLICY.slot_minutes)
        db.add(appointment)
        _hold_slot(db)
        _publish(
            db,
            user,
            episode,
            "appointment.rescheduled",
            AppointmentRescheduled,
            appointment_id=appointment.id,
            previous_start=previous,
            start=start,
            end=appointment.end,
        )
        audit.record(
            db,
            AuditAction.update,
            "Appointment",
            str(appointment.id),
            episode.patient_id,
            detail="rescheduled",
        )
        _commit_booking(db)
        return _appointment_read(appointment, user)

    @post(
        "/{appointment_id:uuid}/check-in",
        operation_id="checkInAppointment",
        status_code=200,
        guards=[requires(PSY)],
        sync_to_thread=True,
    )
    def check_in(
        self,
        appointment_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        return self._act(db, user, audit, appointment_id, "check-in", "appointment.checked_in")

    @post(
        "/{appointment_id:uuid}/attend",
        operation_id="attendAppointment",
        status_code=200,
        guards=[requires(PSY)],
        sync_to_thread=True,
    )
    def attend(
        self,
        appointment_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        return self._act(db, user, audit, appointment_id, "attend", "appointment.attended")

    @post(
        "/{appointment_id:uuid}/noshow",
        operation_id="markNoShow",
        status_code=200,
        guards=[requires(PSY)],
        sync_to_thread=True,
    )
    def noshow(
        self,
        appointment_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        return self._act(db, user, audit, appointment_id, "miss", "appointment.missed")

    @post(
        "/{appointment_id:uuid}/cancel",
        operation_id="cancelAppointment",
        status_code=200,
        guards=[requires(PSY)],
        sync_to_thread=True,
    )
    def cancel(
        self,
        appointment_id: FromPath[UUID],
        data: JSONBody[AppointmentCancellation],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        return self._act(
            db,
            user,
            audit,
            appointment_id,
            "cancel",
            "appointment.cancelled",
            cancelled_by=data.by,
            reason=data.reason,
        )

    @post(
        "/{appointment_id:uuid}/correct",
        operation_id="correctAppointmentStatus",
        status_code=200,
        guards=[requires(PSY)],
        sync_to_thread=True,
        summary="Correct a mistaken status (a noshow who did attend, a booking in error)",
    )
    def correct(
        self,
        appointment_id: FromPath[UUID],
        data: JSONBody[Correction],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AppointmentRead:
        # A record can be put right after discharge (a no-show that led to a discharge
        # for non-attendance, say); only re-booking needs the episode open.
        appointment, episode = _appointment_and_episode(
            db, user, appointment_id, open_episode=data.status == domain.BOOKED
        )
        try:
            status = domain.corrected_status(appointment.status, data.status)
        except domain.IllegalTransition as error:
            raise Conflict(
                f"an appointment that is {error.current} cannot be {error.action}",
                current_status=error.current,
            ) from None
        _change(
            db,
            user,
            episode,
            appointment,
            status,
            "appointment.corrected",
            _appointments(db, episode.id),
            reason=data.reason,
        )
        audit.record(
            db,
            AuditAction.update,
            "Appointment",
            str(appointment.id),
            episode.patient_id,
            detail=f"corrected to {status}",
        )
        _commit_booking(db)
        return _appointment_read(appointment, user)

    def _act(
        self,
        db: Session,
        user: User,
        audit: AccessTrail,
        appointment_id: UUID,
        action: str,
        event_type: str,
        *,
        cancelled_by: str | None = None,
        reason: str | None = None,
    ) -> AppointmentRead:
        appointment, episode = _appointment_and_episode(db, user, appointment_id)
        status = _move(appointment.status, action)
        _change(
            db,
            user,
            episode,
            appointment,
            status,
            event_type,
            _appointments(db, episode.id),
            cancelled_by=cancelled_by,
            reason=reason,
        )
        audit.record(
            db,
            AuditAction.update,
            "Appointment",
            str(appointment.id),
            episode.patient_id,
            detail=action,
        )
        db.commit()
        return _appointment_read(appointment, user)

    @post(
        "/{appointment_id:uuid}/measures",
        operation_id="recordMeasure",
        status_code=201,
        guards=[requires(PSY)],
        sync_to_thread=True,
        summary="PHQ-9, GAD-7 or PEG items, scored by the server; PHQ-9 item 9 above 0 is flagged",
    )
    def measure(
        self,
        appointment_id: FromPath[UUID],
        data: JSONBody[MeasureCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> MeasureRead:
        appointment, episode = _appointment_and_episode(db, user, appointment_id)
        try:
            result = score(INSTRUMENTS[data.instrument], data.items, "items")
        except InvalidItems as error:
            raise FieldProblem(error.field, error.message) from None
        if appointment.status not in (domain.ARRIVED, domain.FULFILLED):
            raise Conflict(
                "measures are recorded at an attended appointment",
                current_status=appointment.status,
            )
        now = _now()
        measure = SessionMeasure(
            appointment_id=appointment.id,
            episode_id=episode.id,
            instrument=data.instrument,
            items=list(result.items),
            total=result.total,
            band=result.band,
            recorded_by=user.id,
            recorded_at=now,
        )
        db.add(measure)
        item9 = result.items[8] if data.instrument == "PHQ-9" else None
        _publish(
            db,
            user,
            episode,
            "measure.recorded",
            MeasureRecorded,
            appointment_id=appointment.id,
            instrument=data.instrument,
            total=result.total,
            band=result.band,
            item9=item9,
            recorded_at=now,
            mean=peg_mean(result) if data.instrument == "PEG" else None,
        )
        if item9:
            # CLINICAL.md: any answer above 0 → urgent safety alert, same working day.
            _publish(
                db,
                user,
                episode,
                "measure.risk_flagged",
                MeasureRiskFlagged,
                appointment_id=appointment.id,
                item9=item9,
                recorded_at=now,
            )
        audit.record(
            db,
            AuditAction.create,
            "QuestionnaireResponse",
            str(measure.id),
            episode.patient_id,
            detail=data.instrument,
        )
        db.commit()
        return _measure_read(measure, user)


def _move(current: str, action: str) -> str:
    try:
        return domain.next_appointment_status(current, action)
    except domain.IllegalTransition as error:
        raise Conflict(
            f"the appointment is {error.current}; '{action}' is not allowed from that status",
            current_status=error.current,
        ) from None


def _change(
    db: Session,
    user: User,
    episode: TherapyEpisode,
    appointment: Appointment,
    status: str,
    event_type: str,
    appointments: list[Appointment],
    *,
    cancelled_by: str | None = None,
    reason: str | None = None,
) -> None:
    """Set an appointment's status and publish it, with the episode's DNA count after it."""
    dnas_before = domain.dna_count(a.status for a in appointments)
    previous = appointment.status
    appointment.status = status
    if cancelled_by is not None:
        appointment.cancelled_by = cancelled_by
    if reason is not None:
        appointment.status_reason = reason
    db.add(appointment)
    if status in domain.HOLDS_SLOT and previous not in domain.HOLDS_SLOT:
        _hold_slot(db)  # a correction back onto a slot someone has taken since
    dnas_after = domain.dna_count(a.status for a in appointments)
    _publish(
        db,
        user,
        episode,
        event_type,
        AppointmentStatusChanged,
        appointment_id=appointment.id,
        kind=appointment.kind,
        start=as_utc(appointment.start),
        previous_status=previous,
        status=status,
        attended_treatment=_attended_treatment(appointments),
        dna_count=dnas_after,
        cancelled_by=cancelled_by,
    )
    if domain.dna_threshold_reached(dnas_before, dnas_after, POLICY):
        # A review, not a discharge: discharge after DNA is a person's decision.
        _publish(
            db,
            user,
            episode,
            "therapy.dna_threshold_reached",
            TherapyDnaThresholdReached,
            dna_count=dnas_after,
            threshold=POLICY.dna_threshold,
            reached_at=_now(),
        )


def _appointment_and_episode(
    db: Session, user: User, appointment_id: UUID, *, open_episode: bool = True
) -> tuple[Appointment, TherapyEpisode]:
    found = db.get(Appointment, appointment_id)
    if found is None:
        raise NotFoundException(f"no appointment {appointment_id}")
    # The episode first, then the appointment: one lock order for every writer.
    episode = _episode(db, found.episode_id, lock=True)
    _own_caseload(user, episode)
    if open_episode:
        _open_episode(episode)
    db.expire_all()
    appointment = db.get(Appointment, appointment_id, with_for_update=True)
    assert appointment is not None
    episode = _episode(db, found.episode_id)
    return appointment, episode


# --- reads -----------------------------------------------------------------------------------


def _sees_items(user: User) -> bool:
    # Admins see statuses, not the answers to the questionnaires.
    return user.role in (Role.psychologist, Role.mdt)


def _measure_read(measure: SessionMeasure, user: User) -> MeasureRead:
    return MeasureRead(
        id=measure.id,
        appointment_id=measure.appointment_id,
        instrument=measure.instrument,
        total=measure.total,
        band=measure.band,
        recorded_at=as_utc(measure.recorded_at),
        items=list(measure.items) if _sees_items(user) else None,
    )


def _appointment_read(
    appointment: Appointment, user: User, measures: list[SessionMeasure] | None = None
) -> AppointmentRead:
    clinical = _sees_items(user)
    return AppointmentRead(
        id=appointment.id,
        episode_id=appointment.episode_id,
        patient_id=appointment.patient_id,
        clinician_id=appointment.clinician_id,
        kind=appointment.kind,
        mode=appointment.mode,
        start=as_utc(appointment.start),
        end=as_utc(appointment.end),
        status=appointment.status,
        location=appointment.location,
        cancelled_by=appointment.cancelled_by,
        status_reason=appointment.status_reason if clinical else None,
        measures=[_measure_read(m, user) for m in measures] if measures is not None else None,
    )


def _episode_read(
    db: Session, episode: TherapyEpisode, user: User, *, detail: bool = False
) -> EpisodeRead:
    appointments = _appointments(db, episode.id)
    treated = [
        as_utc(a.start)
        for a in appointments
        if a.status == domain.FULFILLED and a.kind in TREATMENT_KINDS
    ]
    until = min(treated) if treated else as_utc(episode.discharged_at or _now())
    days, state = domain.waiting(as_utc(episode.referred_at), until, POLICY)
    read = EpisodeRead(
        id=episode.id,
        patient_id=episode.patient_id,
        referral_id=episode.referral_id,
        status=episode.status,
        priority=episode.priority,
        referred_at=as_utc(episode.referred_at),
        opened_at=as_utc(episode.opened_at),
        waiting=WaitingRead(
            days_waiting=days,
            state=state,  # type: ignore[arg-type]
            standard=f"first treatment within {POLICY.wait_alert_weeks} weeks "
            f"(breach at {POLICY.wait_breach_weeks}); NHS Talking Therapies",
        ),
        dna_count=domain.dna_count(a.status for a in appointments),
        attended_treatment=_attended_treatment(appointments),
        clinician_id=episode.clinician_id,
        discharged_at=as_utc(episode.discharged_at) if episode.discharged_at else None,
        discharge_reason=episode.discharge_reason,
        discharge_note=episode.discharge_note if _sees_items(user) else None,
    )
    # Psychologists read the team's waiting list; the clinical record of an episode is
    # for the psychologist whose caseload it is, and the MDT (admins: statuses only).
    if detail and (user.role is not Role.psychologist or episode.clinician_id == user.id):
        measures = db.exec(
            select(SessionMeasure)
            .where(SessionMeasure.episode_id == episode.id)
            .order_by(col(SessionMeasure.recorded_at))
        ).all()
        read.appointments = [
            _appointment_read(a, user, [m for m in measures if m.appointment_id == a.id])
            for a in appointments
        ]
    return read


CONTROLLERS: tuple[Any, ...] = (ClinicianController, EpisodeController, AppointmentController)
