"""Rows as the therapy API answers them, shaped by who is asking: the answers to the
questionnaires and the free-text notes go to the clinical roles only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlmodel import Session

from services.therapy import appointment, domain, repository
from services.therapy.models import Appointment, Clinician, SessionMeasure, TherapyEpisode
from services.therapy.schemas import (
    AppointmentRead,
    ClinicianRead,
    EpisodeRead,
    HoursBlock,
    LeaveCreate,
    MeasureRead,
    SlotsRead,
    WaitingRead,
)
from shared.auth import Role, User
from shared.policy import clinical_policy
from shared.tables import utcnow


def clinician_read(session: Session, clinician: Clinician) -> ClinicianRead:
    return ClinicianRead(
        id=clinician.id,
        display_name=clinician.display_name,
        hours=msgspec.convert(
            repository.working_hours(session, clinician.id), list[HoursBlock], from_attributes=True
        ),
        leave=msgspec.convert(
            repository.leave(session, clinician.id), list[LeaveCreate], from_attributes=True
        ),
    )


def slots_read(clinician_id: str, slots: list[datetime]) -> SlotsRead:
    slot_minutes = clinical_policy().therapy.slot_minutes
    return SlotsRead(clinician_id=clinician_id, slot_minutes=slot_minutes, slots=slots)


def sees_items(user: User) -> bool:
    # Admins see statuses, not the answers to the questionnaires.
    return user.role in (Role.psychologist, Role.mdt)


def measure_read(measure: SessionMeasure, user: User) -> MeasureRead:
    read = msgspec.convert(measure, MeasureRead, from_attributes=True)
    read.risk_flagged = appointment.flags_risk(measure.instrument, measure.items)
    if not sees_items(user):
        read.items = None
    return read


def appointment_read(
    booked: Appointment, user: User, measures: Sequence[SessionMeasure] | None = None
) -> AppointmentRead:
    read = msgspec.convert(booked, AppointmentRead, from_attributes=True)
    if not sees_items(user):
        read.status_reason = None
    if measures is not None:
        read.measures = [measure_read(m, user) for m in measures]
    return read


def episode_read(
    session: Session, episode: TherapyEpisode, user: User, *, detail: bool = False
) -> EpisodeRead:
    appointments = repository.appointments(session, episode.id)
    from_appointments = {
        "waiting": waiting(episode, appointments, utcnow()),
        "dna_count": appointment.dna_count(appointments),
        "attended_treatment": appointment.attended_treatment(appointments),
    }
    read = msgspec.convert({**episode.model_dump(), **from_appointments}, EpisodeRead)
    if not sees_items(user):
        read.discharge_note = None  # free text: clinical roles only
    # Psychologists read the team's waiting list; the clinical record of an episode is
    # for the psychologist whose caseload it is, and the MDT (admins: statuses only).
    if detail and (user.role is not Role.psychologist or episode.clinician_id == user.id):
        measures = repository.measures(session, episode.id)
        read.appointments = [
            appointment_read(a, user, [m for m in measures if m.appointment_id == a.id])
            for a in appointments
        ]
    return read


def waiting(
    episode: TherapyEpisode, appointments: Sequence[Appointment], now: datetime
) -> WaitingRead:
    """The wait to the first attended treatment appointment, against the 6- and 18-week
    standards; the clock runs until then (or the discharge)."""
    treated = [
        a.start
        for a in appointments
        if a.status == domain.FULFILLED and a.kind in appointment.TREATMENT_KINDS
    ]
    until = min(treated) if treated else (episode.discharged_at or now)
    waits = clinical_policy().waits
    days, state = domain.waiting(episode.referred_at, until, waits)
    return WaitingRead(
        days_waiting=days,
        state=state,  # type: ignore[arg-type]
        standard=f"first treatment within {waits.psychology_alert_weeks} weeks "
        f"(breach at {waits.psychology_breach_weeks}); NHS Talking Therapies",
    )
