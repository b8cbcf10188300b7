"""Loads and locks of the therapy service's rows; no rule lives here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

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


def clinician(session: Session, clinician_id: str) -> Clinician | None:
    return session.get(Clinician, clinician_id)


def working_hours(session: Session, clinician_id: str) -> Sequence[WorkingHoursBlock]:
    return session.exec(
        select(WorkingHoursBlock).where(WorkingHoursBlock.clinician_id == clinician_id)
    ).all()


def leave(session: Session, clinician_id: str) -> Sequence[ClinicianLeave]:
    return session.exec(
        select(ClinicianLeave).where(ClinicianLeave.clinician_id == clinician_id)
    ).all()


def holding(
    session: Session,
    *,
    clinician_id: str | None = None,
    patient_id: UUID | None = None,
    start: datetime | None = None,
) -> Sequence[Appointment]:
    """Appointments that hold a slot, of a clinician or a patient, at a time if given."""
    statement = select(Appointment).where(col(Appointment.status).in_(domain.HOLDS_SLOT))
    if clinician_id is not None:
        statement = statement.where(Appointment.clinician_id == clinician_id)
    if patient_id is not None:
        statement = statement.where(Appointment.patient_id == patient_id)
    if start is not None:
        statement = statement.where(Appointment.start == start)
    return session.exec(statement).all()


def episode(session: Session, episode_id: UUID, *, lock: bool = False) -> TherapyEpisode | None:
    # The row lock makes two writers of one episode take turns: the second sees the
    # first one's bookings and status.
    return session.get(TherapyEpisode, episode_id, with_for_update=lock)


def episode_of_referral(session: Session, referral_id: UUID) -> TherapyEpisode | None:
    return session.exec(
        select(TherapyEpisode).where(TherapyEpisode.referral_id == referral_id)
    ).first()


def episodes(
    session: Session, patient_id: UUID | None, status: str | None, clinician_id: str | None
) -> Sequence[TherapyEpisode]:
    """Episodes, oldest referral first: for status=waitlist, the team's waiting list."""
    statement = select(TherapyEpisode)
    if patient_id is not None:
        statement = statement.where(TherapyEpisode.patient_id == patient_id)
    if status is not None:
        statement = statement.where(TherapyEpisode.status == status)
    if clinician_id is not None:
        statement = statement.where(TherapyEpisode.clinician_id == clinician_id)
    return session.exec(statement.order_by(col(TherapyEpisode.referred_at))).all()


def appointment_and_episode(
    session: Session, appointment_id: UUID
) -> tuple[Appointment, TherapyEpisode] | None:
    """An appointment and its episode, both locked: the episode first, then the
    appointment, one lock order for every writer."""
    found = session.get(Appointment, appointment_id)
    if found is None:
        return None
    session.get(TherapyEpisode, found.episode_id, with_for_update=True)
    # Read both again under the locks: either may have changed while we waited.
    session.expire_all()
    locked = session.get(Appointment, appointment_id, with_for_update=True)
    episode = session.get(TherapyEpisode, found.episode_id)
    assert locked is not None and episode is not None
    return locked, episode


def appointments(session: Session, episode_id: UUID) -> list[Appointment]:
    return list(
        session.exec(
            select(Appointment)
            .where(Appointment.episode_id == episode_id)
            .order_by(col(Appointment.start))
        ).all()
    )


def measures(session: Session, episode_id: UUID) -> Sequence[SessionMeasure]:
    return session.exec(
        select(SessionMeasure)
        .where(SessionMeasure.episode_id == episode_id)
        .order_by(col(SessionMeasure.recorded_at))
    ).all()
