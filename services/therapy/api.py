"""HTTP controllers of the therapy service: diaries, episodes, appointments, measures.

Each route parses, calls one command (services.py) and returns a view (views.py).
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from services.therapy import services, views
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
    EpisodeStatus,
    LeaveCreate,
    MeasureCreate,
    MeasureRead,
    Reschedule,
    SlotsRead,
    WorkingHoursSet,
)
from shared.auth import Role, User, requires
from shared.uow import UnitOfWork

PSY = Role.psychologist
READERS = (Role.psychologist, Role.mdt, Role.admin)

# --- clinicians and their diaries --------------------------------------------------------


class ClinicianController(Controller):
    path = "/api/clinicians"
    tags = ["clinicians"]
    opt = {"resource": "PractitionerRole"}

    @post(operation_id="addClinician", guards=[requires(Role.admin, PSY)], sync_to_thread=True)
    def add(
        self,
        data: JSONBody[ClinicianCreate],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ClinicianRead:
        return views.clinician_read(uow.session, services.add_clinician(data, uow, user))

    @get(
        "/{clinician_id:str}",
        operation_id="readClinician",
        guards=[requires(*READERS)],
        sync_to_thread=True,
    )
    def read(self, clinician_id: FromPath[str], uow: NamedDependency[UnitOfWork]) -> ClinicianRead:
        return views.clinician_read(uow.session, services.read_clinician(clinician_id, uow))

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ClinicianRead:
        clinician = services.set_working_hours(clinician_id, data, uow, user)
        return views.clinician_read(uow.session, clinician)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ClinicianRead:
        clinician = services.add_leave(clinician_id, data, uow, user)
        return views.clinician_read(uow.session, clinician)

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
        uow: NamedDependency[UnitOfWork],
        from_day: FromQuery[date | None] = None,
        days: FromQuery[int] = 14,
    ) -> SlotsRead:
        slots = services.free_slots(clinician_id, from_day, days, uow)
        return views.slots_read(clinician_id, slots)


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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
        patient_id: FromQuery[UUID | None] = None,
        status: FromQuery[EpisodeStatus | None] = None,
        clinician_id: FromQuery[str | None] = None,
    ) -> EpisodePage:
        query = services.EpisodeQuery(patient_id, status, clinician_id)
        episodes = services.list_episodes(query, uow, user)
        return EpisodePage(items=[views.episode_read(uow.session, e, user) for e in episodes])

    @get(
        "/{episode_id:uuid}",
        operation_id="readTherapyEpisode",
        guards=[requires(*READERS)],
        sync_to_thread=True,
    )
    def read(
        self,
        episode_id: FromPath[UUID],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> EpisodeRead:
        episode = services.read_episode(episode_id, uow, user)
        return views.episode_read(uow.session, episode, user, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> EpisodeRead:
        episode = services.assign(episode_id, data, uow, user)
        return views.episode_read(uow.session, episode, user, detail=True)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.book(episode_id, data, uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> EpisodeRead:
        episode = services.discharge(episode_id, data, uow, user)
        return views.episode_read(uow.session, episode, user, detail=True)


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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.reschedule(appointment_id, data, uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.act(appointment_id, "check-in", uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.act(appointment_id, "attend", uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.act(appointment_id, "miss", uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.cancel(appointment_id, data, uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> AppointmentRead:
        return views.appointment_read(services.correct(appointment_id, data, uow, user), user)

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
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> MeasureRead:
        return views.measure_read(services.record_measure(appointment_id, data, uow, user), user)


CONTROLLERS: tuple[Any, ...] = (ClinicianController, EpisodeController, AppointmentController)
