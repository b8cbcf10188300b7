"""Loads and locks of the therapy service's rows; no rule lives here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar
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
from shared.db import load, load_or_404, rows, where_given


def clinician(session: Session, clinician_id: str) -> Clinician | None:
    return load(session, Clinician, clinician_id)


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
    statement = where_given(
        select(Appointment).where(col(Appointment.status).in_(domain.HOLDS_SLOT)),
        (Appointment.clinician_id, clinician_id),
        (Appointment.patient_id, patient_id),
        (Appointment.start, start),
    )
    return session.exec(statement).all()


def episode(session: Session, episode_id: UUID, *, lock: bool = False) -> TherapyEpisode:
    # Locked, two writers of one episode take turns: the second sees the first one's
    # bookings and status.
    return load_or_404(session, TherapyEpisode, episode_id, "therapy episode", lock=lock)


def episode_of_referral(session: Session, referral_id: UUID) -> TherapyEpisode | None:
    return session.exec(
        select(TherapyEpisode).where(TherapyEpisode.referral_id == referral_id)
    ).first()


def episodes(
    session: Session, patient_id: UUID | None, status: str | None, clinician_id: str | None
) -> Sequence[TherapyEpisode]:
    """Episodes, oldest referral first: for status=waitlist, the team's waiting list."""
    statement = where_given(
        select(TherapyEpisode),
        (TherapyEpisode.patient_id, patient_id),
        (TherapyEpisode.status, status),
        (TherapyEpisode.clinician_id, clinician_id),
    )
    return session.exec(statement.order_by(col(TherapyEpisode.referred_at))).all()


def appointment_and_episode(
    session: Session, appointment_id: UUID
) -> tuple[Appointment, TherapyEpisode]:
    """An appointment and its episode, both locked: the episode first, then the
    appointment, one lock order for every writer."""
    found = load_or_404(session, Appointment, appointment_id, "appointment")
    episode(session, found.episode_id, lock=True)
    # Read both again under the locks: either may have changed while we waited.
    session.expire_all()
    locked = load_or_404(session, Appointment, appointment_id, "appointment", lock=True)
    return locked, episode(session, found.episode_id)


def appointments(session: Session, episode_id: UUID) -> list[Appointment]:
    return list(_of_episode(session, Appointment, episode_id, Appointment.start))


def measures(session: Session, episode_id: UUID) -> Sequence[SessionMeasure]:
    return _of_episode(session, SessionMeasure, episode_id, SessionMeasure.recorded_at)


OfEpisode = TypeVar("OfEpisode", Appointment, SessionMeasure)


def _of_episode(
    session: Session, table: type[OfEpisode], episode_id: UUID, in_order_of: datetime
) -> Sequence[OfEpisode]:
    return rows(session, table, table.episode_id == episode_id, order_by=col(in_order_of))
