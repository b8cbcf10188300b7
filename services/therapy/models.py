"""The therapy service's tables: clinicians' diaries, episodes, appointments, measures."""

from __future__ import annotations

from datetime import date, datetime, time
from uuid import UUID, uuid4

from sqlalchemy import JSON, Column, Index, text
from sqlmodel import Field, SQLModel

from shared.tables import ReferredCare, Timestamp, utcnow
from shared.urgent_alerts import UrgentAlert  # noqa: F401  (its table is ours too)

TABLES = frozenset(
    {
        "clinician",
        "working_hours",
        "clinician_leave",
        "therapy_episode",
        "appointment",
        "session_measure",
        "urgent_alert",  # shared.urgent_alerts
    }
)

# The statuses that hold a slot (services/therapy/domain.py HOLDS_SLOT), for the indexes.
_HOLDS_SLOT = text("status IN ('booked', 'arrived', 'fulfilled')")


class Clinician(SQLModel, table=True):
    # The user id in the clinician's token, so "my caseload" is a plain comparison.
    id: str = Field(primary_key=True, max_length=100)
    display_name: str = Field(max_length=200)
    active: bool = True


class _DiaryEntry(SQLModel):
    """A line of a clinician's diary: their working hours or their leave."""

    id: int | None = Field(default=None, primary_key=True)
    clinician_id: str = Field(foreign_key="clinician.id", index=True, max_length=100)


class WorkingHoursBlock(_DiaryEntry, table=True):
    __tablename__ = "working_hours"

    weekday: int
    start: time
    end: time


class ClinicianLeave(_DiaryEntry, table=True):
    __tablename__ = "clinician_leave"

    first_day: date
    last_day: date


class TherapyEpisode(ReferredCare, table=True):
    __tablename__ = "therapy_episode"

    referred_at: datetime = Timestamp(index=True)
    opened_at: datetime = Timestamp(default_factory=utcnow)
    clinician_id: str | None = Field(default=None, index=True, max_length=100)
    discharged_at: datetime | None = Timestamp(default=None)
    discharge_reason: str | None = Field(default=None, max_length=20)
    discharge_note: str | None = Field(default=None, max_length=2000)


class Appointment(SQLModel, table=True):
    __table_args__ = (
        # No double booking, enforced by the database: two concurrent bookings of one
        # clinician's (or one patient's) slot cannot both commit. Every booking starts on
        # a slot boundary, so "same start" is "overlapping".
        Index(
            "uq_appointment_clinician_slot",
            "clinician_id",
            "start",
            unique=True,
            sqlite_where=_HOLDS_SLOT,
            postgresql_where=_HOLDS_SLOT,
        ),
        Index(
            "uq_appointment_patient_slot",
            "patient_id",
            "start",
            unique=True,
            sqlite_where=_HOLDS_SLOT,
            postgresql_where=_HOLDS_SLOT,
        ),
    )

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    episode_id: UUID = Field(foreign_key="therapy_episode.id", index=True)
    patient_id: UUID
    clinician_id: str = Field(max_length=100)
    kind: str = Field(max_length=12)  # assessment | cbt | review
    mode: str = Field(max_length=10)  # video | in-person
    location: str | None = Field(default=None, max_length=200)
    start: datetime = Timestamp()
    end: datetime = Timestamp()
    status: str = Field(max_length=20)
    cancelled_by: str | None = Field(default=None, max_length=10)
    status_reason: str | None = Field(default=None, max_length=1000)
    booked_by: str = Field(max_length=100)
    booked_at: datetime = Timestamp(default_factory=utcnow)


class SessionMeasure(SQLModel, table=True):
    __tablename__ = "session_measure"

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    appointment_id: UUID = Field(foreign_key="appointment.id", index=True)
    episode_id: UUID = Field(foreign_key="therapy_episode.id", index=True)
    instrument: str = Field(max_length=8)  # PHQ-9 | GAD-7
    items: list[int] = Field(sa_column=Column(JSON, nullable=False))
    total: int
    band: str = Field(max_length=20)
    recorded_by: str = Field(max_length=100)
    recorded_at: datetime = Timestamp(default_factory=utcnow)
