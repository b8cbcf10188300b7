"""Request and response bodies of the therapy API."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Literal
from uuid import UUID

import msgspec

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
# FHIR EpisodeOfCare statuses (services/therapy/domain.py EPISODE_STATUSES).
EpisodeStatus = Literal["waitlist", "active", "onhold", "finished", "cancelled"]


class ClinicianCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class HoursBlock(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    weekday: int
    start: time
    end: time


class WorkingHoursSet(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    hours: list[HoursBlock]


class LeaveCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    first_day: date
    last_day: date


class ClinicianRead(msgspec.Struct, kw_only=True):
    id: str
    display_name: str
    hours: list[HoursBlock]
    leave: list[LeaveCreate]


class SlotsRead(msgspec.Struct, kw_only=True):
    clinician_id: str
    slot_minutes: int
    slots: list[datetime]


class Assignment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    clinician_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class AppointmentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["assessment", "cbt", "review"]
    start: datetime
    mode: Literal["video", "in-person"]
    location: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class Reschedule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    start: datetime


class AppointmentCancellation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    by: Literal["patient", "clinic"]
    reason: Text


class Correction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: Literal["booked", "fulfilled", "noshow", "entered-in-error"]
    reason: Text


class MeasureCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    instrument: Literal["PHQ-9", "GAD-7", "PEG"]
    items: list[int]


class Discharge(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Literal["completed", "declined", "did-not-attend", "moved-away", "other"]
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class MeasureRead(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: UUID
    appointment_id: UUID
    instrument: str
    total: int
    band: str
    recorded_at: datetime
    items: list[int] | None = None
    # PHQ-9 item 9 above 0: the urgent safety alert is raised (said at once to the person).
    risk_flagged: bool = False


class AppointmentRead(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: UUID
    episode_id: UUID
    patient_id: UUID
    clinician_id: str
    kind: str
    mode: str
    start: datetime
    end: datetime
    status: str
    location: str | None = None
    cancelled_by: str | None = None
    status_reason: str | None = None
    measures: list[MeasureRead] | None = None


class WaitingRead(msgspec.Struct, kw_only=True):
    days_waiting: int
    standard: str
    state: Literal["within", "at-risk", "breached"]


class EpisodeRead(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: UUID
    patient_id: UUID
    referral_id: UUID
    status: str
    priority: str
    referred_at: datetime
    opened_at: datetime
    waiting: WaitingRead
    dna_count: int
    attended_treatment: int
    clinician_id: str | None = None
    discharged_at: datetime | None = None
    discharge_reason: str | None = None
    discharge_note: str | None = None
    appointments: list[AppointmentRead] | None = None


class EpisodePage(msgspec.Struct, kw_only=True):
    items: list[EpisodeRead]
