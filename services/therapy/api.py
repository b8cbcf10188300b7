"""HTTP controllers of the therapy service: diaries, episodes, appointments, measures.

Each route parses, calls one command (services.py) and returns a view (views.py).
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from litestar import Controller
from litestar.params import FromPath, FromQuery, JSONBody

from services.therapy import services, views
from services.therapy.models import TherapyEpisode
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
from shared.web.dependencies import UowDep, UserDep
from shared.web.handlers import command, query

PSY = (Role.psychologist,)
PSY_OR_MDT = (Role.psychologist, Role.mdt)
DIARY_KEEPERS = (Role.admin, Role.psychologist)
READERS = (Role.psychologist, Role.mdt, Role.admin)

# --- clinicians and their diaries --------------------------------------------------------


class ClinicianController(Controller):
    path = "/api/clinicians"
    tags = ["clinicians"]
    opt = {"resource": "PractitionerRole"}

    @command(operation_id="addClinician", roles=DIARY_KEEPERS, status_code=201)
    def add(self, data: JSONBody[ClinicianCreate], uow: UowDep, user: UserDep) -> ClinicianRead:
        return views.clinician_read(uow.session, services.add_clinician(data, uow, user))

    @query("/{clinician_id:str}", operation_id="readClinician", roles=READERS)
    def read(self, clinician_id: FromPath[str], uow: UowDep) -> ClinicianRead:
        return views.clinician_read(uow.session, services.read_clinician(clinician_id, uow))

    @command(
        "/{clinician_id:str}/working-hours",
        operation_id="setWorkingHours",
        roles=DIARY_KEEPERS,
        method="PUT",
    )
    def set_hours(
        self,
        clinician_id: FromPath[str],
        data: JSONBody[WorkingHoursSet],
        uow: UowDep,
        user: UserDep,
    ) -> ClinicianRead:
        clinician = services.set_working_hours(clinician_id, data, uow, user)
        return views.clinician_read(uow.session, clinician)

    @command(
        "/{clinician_id:str}/leave", operation_id="addLeave", roles=DIARY_KEEPERS, status_code=201
    )
    def add_leave(
        self, clinician_id: FromPath[str], data: JSONBody[LeaveCreate], uow: UowDep, user: UserDep
    ) -> ClinicianRead:
        clinician = services.add_leave(clinician_id, data, uow, user)
        return views.clinician_read(uow.session, clinician)

    @query(
        "/{clinician_id:str}/slots",
        operation_id="freeSlots",
        roles=READERS,
        summary="Free slots from working hours, leave and bookings",
    )
    def free_slots(
        self,
        clinician_id: FromPath[str],
        uow: UowDep,
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

    @query(
        operation_id="listTherapyEpisodes",
        roles=READERS,
        summary="Episodes; status=waitlist gives the team's waiting list, oldest referral first",
    )
    def list_episodes(
        self,
        uow: UowDep,
        user: UserDep,
        patient_id: FromQuery[UUID | None] = None,
        status: FromQuery[EpisodeStatus | None] = None,
        clinician_id: FromQuery[str | None] = None,
    ) -> EpisodePage:
        filters = services.EpisodeQuery(patient_id, status, clinician_id)
        episodes = services.list_episodes(filters, uow, user)
        return EpisodePage(items=[views.episode_read(uow.session, e, user) for e in episodes])

    @query("/{episode_id:uuid}", operation_id="readTherapyEpisode", roles=READERS)
    def read(self, episode_id: FromPath[UUID], uow: UowDep, user: UserDep) -> EpisodeRead:
        return _episode(uow, user, services.read_episode(episode_id, uow, user))

    @command("/{episode_id:uuid}/assign", operation_id="assignTherapist", roles=PSY_OR_MDT)
    def assign(
        self, episode_id: FromPath[UUID], data: JSONBody[Assignment], uow: UowDep, user: UserDep
    ) -> EpisodeRead:
        return _episode(uow, user, services.assign(episode_id, data, uow, user))

    @command(
        "/{episode_id:uuid}/appointments",
        operation_id="bookAppointment",
        roles=PSY,
        status_code=201,
    )
    def book(
        self,
        episode_id: FromPath[UUID],
        data: JSONBody[AppointmentCreate],
        uow: UowDep,
        user: UserDep,
    ) -> AppointmentRead:
        return views.appointment_read(services.book(episode_id, data, uow, user), user)

    @command(
        "/{episode_id:uuid}/discharge",
        operation_id="dischargeTherapyEpisode",
        roles=PSY_OR_MDT,
        summary="Discharge with a reason; after missed appointments it is never automatic",
    )
    def discharge(
        self, episode_id: FromPath[UUID], data: JSONBody[Discharge], uow: UowDep, user: UserDep
    ) -> EpisodeRead:
        return _episode(uow, user, services.discharge(episode_id, data, uow, user))


# --- appointments ----------------------------------------------------------------------------


class AppointmentController(Controller):
    """The psychologist's own work: every route is theirs alone."""

    path = "/api/appointments"
    tags = ["appointments"]
    opt = {"resource": "Appointment"}
    guards = [requires(*PSY)]

    @command("/{appointment_id:uuid}/reschedule", operation_id="rescheduleAppointment")
    def reschedule(
        self, appointment_id: FromPath[UUID], data: JSONBody[Reschedule], uow: UowDep, user: UserDep
    ) -> AppointmentRead:
        return views.appointment_read(services.reschedule(appointment_id, data, uow, user), user)

    @command("/{appointment_id:uuid}/check-in", operation_id="checkInAppointment")
    def check_in(
        self, appointment_id: FromPath[UUID], uow: UowDep, user: UserDep
    ) -> AppointmentRead:
        return views.appointment_read(services.act(appointment_id, "check-in", uow, user), user)

    @command("/{appointment_id:uuid}/attend", operation_id="attendAppointment")
    def attend(self, appointment_id: FromPath[UUID], uow: UowDep, user: UserDep) -> AppointmentRead:
        return views.appointment_read(services.act(appointment_id, "attend", uow, user), user)

    @command("/{appointment_id:uuid}/noshow", operation_id="markNoShow")
    def noshow(self, appointment_id: FromPath[UUID], uow: UowDep, user: UserDep) -> AppointmentRead:
        return views.appointment_read(services.act(appointment_id, "miss", uow, user), user)

    @command("/{appointment_id:uuid}/cancel", operation_id="cancelAppointment")
    def cancel(
        self,
        appointment_id: FromPath[UUID],
        data: JSONBody[AppointmentCancellation],
        uow: UowDep,
        user: UserDep,
    ) -> AppointmentRead:
        return views.appointment_read(services.cancel(appointment_id, data, uow, user), user)

    @command(
        "/{appointment_id:uuid}/correct",
        operation_id="correctAppointmentStatus",
        summary="Correct a mistaken status (a noshow who did attend, a booking in error)",
    )
    def correct(
        self, appointment_id: FromPath[UUID], data: JSONBody[Correction], uow: UowDep, user: UserDep
    ) -> AppointmentRead:
        return views.appointment_read(services.correct(appointment_id, data, uow, user), user)

    @command(
        "/{appointment_id:uuid}/measures",
        operation_id="recordMeasure",
        status_code=201,
        summary="PHQ-9, GAD-7 or PEG items, scored by the server; PHQ-9 item 9 above 0 is flagged",
    )
    def measure(
        self,
        appointment_id: FromPath[UUID],
        data: JSONBody[MeasureCreate],
        uow: UowDep,
        user: UserDep,
    ) -> MeasureRead:
        return views.measure_read(services.record_measure(appointment_id, data, uow, user), user)


def _episode(uow: UnitOfWork, user: User, episode: TherapyEpisode) -> EpisodeRead:
    return views.episode_read(uow.session, episode, user, detail=True)


CONTROLLERS: tuple[Any, ...] = (ClinicianController, EpisodeController, AppointmentController)
