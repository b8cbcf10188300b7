"""The infusions service's tables: courses, assessments, plans, sessions and their records."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from shared.tables import ReferredCare, Timestamp, utcnow
from shared.urgent_alerts import UrgentAlert  # noqa: F401  (its table is ours too)

TABLES = frozenset(
    {
        "infusion_course",
        "eligibility_assessment",
        "dosing_plan",
        "infusion_session",
        "vitals_reading",
        "adverse_event",
        "opioid_use",
        "urgent_alert",  # shared.urgent_alerts
    }
)


class InfusionCourse(ReferredCare, table=True):
    """One course per accepted ketamine-infusion referral (FHIR EpisodeOfCare statuses)."""

    __tablename__ = "infusion_course"

    referral_baseline: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    opened_at: datetime = Timestamp(default_factory=utcnow)
    status_reason: str | None = Field(default=None, max_length=1000)
    closed_at: datetime | None = Timestamp(default=None)
    close_reason: str | None = Field(default=None, max_length=20)
    # The next maintenance infusion, kept current so the due list is one indexed query.
    maintenance_due_at: datetime | None = Timestamp(default=None, index=True)
    # On hold after a serious adverse event (or an MDT stop while an infusion ran): only
    # an MDT review resumes it (CLINICAL.md, "Course rules").
    held_for_mdt: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})


class _CourseRecord(SQLModel):
    """The first columns of what is recorded for a course: its assessments, opioid use,
    plans and sessions."""

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    course_id: UUID = Field(foreign_key="infusion_course.id", index=True)


class EligibilityAssessment(_CourseRecord, table=True):
    __tablename__ = "eligibility_assessment"

    assessed_by: str = Field(max_length=100)
    assessed_at: datetime = Timestamp(default_factory=utcnow)
    weight_kg: float
    systolic: int
    diastolic: int
    heart_rate: int
    opioid_mme_per_day: float
    pain_nrs: int
    phq9_items: list[int] = Field(sa_column=Column(JSON, nullable=False))
    phq9_total: int
    prior_treatments: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    checklist: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    overrides: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    outcome: str = Field(max_length=20)


class OpioidUse(_CourseRecord, table=True):
    """The opioids a patient takes, per medicine, at an assessment or a follow-up, with
    the MME per day computed under the policy's table at the time (CLINICAL.md)."""

    __tablename__ = "opioid_use"

    context: str = Field(max_length=12)  # "assessment" or "follow-up"
    recorded_by: str = Field(max_length=100)
    recorded_at: datetime = Timestamp(default_factory=utcnow)
    conversion_table: str = Field(max_length=20)
    # Each medicine as given, with its MME per day (None: no factor) and how it was counted.
    medicines: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    total_mme_per_day: float
    complete: bool
    flags: list[str] = Field(sa_column=Column(JSON, nullable=False))
    benzodiazepine: bool


class DosingPlan(_CourseRecord, table=True):
    __tablename__ = "dosing_plan"

    indication: str = Field(max_length=12)
    weight_kg: float
    dose_mg_per_kg: float | None = None
    infusion_minutes: int | None = None
    rate_mg_per_kg_per_h: float | None = None
    duration_hours: float | None = None
    total_mg: float
    rate_mg_per_h: float
    induction_count: int
    induction_spacing_days: int
    maintenance_interval_days: int | None = None
    override: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    agreed_by: str = Field(max_length=100)
    agreed_at: datetime = Timestamp(default_factory=utcnow)


class InfusionSession(_CourseRecord, table=True):
    __tablename__ = "infusion_session"

    patient_id: UUID = Field(index=True)
    plan_id: UUID = Field(foreign_key="dosing_plan.id")
    number: int
    kind: str = Field(max_length=12)  # induction | maintenance
    status: str = Field(max_length=12, index=True)
    scheduled_start: datetime = Timestamp(index=True)
    scheduled_end: datetime = Timestamp()
    started_at: datetime | None = Timestamp(default=None)
    ended_at: datetime | None = Timestamp(default=None)
    status_reason: str | None = Field(default=None, max_length=1000)
    planned_mg: float
    given_mg: float | None = None
    # Why the dose given differs from the plan by more than the tolerance, or why the
    # infusion stopped early with the dose it had given.
    given_reason: str | None = Field(default=None, max_length=1000)
    # A named clinician's override of a high pre-infusion reading: clinician, reason, at.
    start_override: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    pain_before: int | None = None
    pain_after: int | None = None
    mood_before: int | None = None
    mood_after: int | None = None
    phq9_items: list[int] | None = Field(default=None, sa_column=Column(JSON))
    phq9_total: int | None = None


class _SessionRecord(SQLModel):
    """The first columns of what is recorded during a session: its vitals and adverse
    events, each at a time."""

    id: int | None = Field(default=None, primary_key=True)
    session_id: UUID = Field(foreign_key="infusion_session.id", index=True)
    at: datetime = Timestamp(default_factory=utcnow)


class VitalsReading(_SessionRecord, table=True):
    __tablename__ = "vitals_reading"

    phase: str = Field(max_length=8)  # before | during | after
    systolic: int
    diastolic: int
    heart_rate: int
    spo2: int
    out_of_range: list[str] = Field(sa_column=Column(JSON, nullable=False))
    recorded_by: str = Field(max_length=100)


class AdverseEvent(_SessionRecord, table=True):
    __tablename__ = "adverse_event"

    code: str = Field(max_length=20)
    severity: str = Field(max_length=10)
    note: str | None = Field(default=None, max_length=2000)
    recorded_by: str = Field(max_length=100)
