"""Request and response bodies of the infusions API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from shared.opioids import DoseUnit, Route

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Nrs = Annotated[int, msgspec.Meta(ge=0, le=10)]
CourseStatus = Literal["planned", "active", "onhold", "finished", "cancelled"]


class PriorTreatment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    kind: Literal["medicine", "therapy"]
    outcome: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ChecklistItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    present: bool
    note: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class CautionOverride(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    caution: str
    reason: Text


class MedicineTaken(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One opioid (or benzodiazepine) as the patient takes it; a patch is its rate."""

    drug: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    dose: Annotated[float, msgspec.Meta(gt=0, le=100_000)]
    unit: DoseUnit
    route: Route
    doses_per_day: Annotated[float, msgspec.Meta(gt=0, le=24)] = 1


Medicines = Annotated[list[MedicineTaken], msgspec.Meta(max_length=30)]


class OpioidUseCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Opioid use at a follow-up: every medicine taken now (an empty list: none)."""

    medicines: Medicines


class MedicineRead(msgspec.Struct, kw_only=True):
    drug: str
    dose: float
    unit: str
    route: str
    doses_per_day: float
    mme_per_day: float | None
    note: str


class OpioidUseRead(msgspec.Struct, kw_only=True):
    id: UUID
    context: str
    recorded_by: str
    recorded_at: datetime
    conversion_table: str
    medicines: list[MedicineRead]
    total_mme_per_day: float
    complete: bool
    flags: list[str]
    benzodiazepine: bool


class AssessmentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Plain numbers here: the domain checks ranges and names the field in its answer.
    weight_kg: float
    systolic: int
    diastolic: int
    heart_rate: int
    # Either the medicines, from which the service computes MME per day, or (as before
    # medicines were recorded) the MME per day alone.
    medicines: Medicines | None = None
    opioid_mme_per_day: Annotated[float, msgspec.Meta(ge=0, le=5000)] | None = None
    pain_nrs: Nrs
    phq9_items: list[int]
    prior_treatments: list[PriorTreatment]
    checklist: dict[str, ChecklistItem]
    overrides: list[CautionOverride] = msgspec.field(default_factory=list)


class AssessmentRead(msgspec.Struct, kw_only=True):
    id: UUID
    assessed_by: str
    assessed_at: datetime
    outcome: str
    blocked_by: list[str]
    cautions_without_override: list[str]
    weight_kg: float
    systolic: int
    diastolic: int
    heart_rate: int
    opioid_mme_per_day: float
    pain_nrs: int
    phq9_total: int
    checklist: dict[str, ChecklistItem]
    overrides: list[dict[str, str]]
    prior_treatments: list[PriorTreatment]
    opioid_use: OpioidUseRead | None = None


class DoseOverride(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Text


class PlanCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    indication: Literal["pain", "depression", "both"]
    weight_kg: float
    dose_mg_per_kg: float | None = None
    infusion_minutes: Annotated[int, msgspec.Meta(ge=10, le=600)] | None = None
    rate_mg_per_kg_per_h: float | None = None
    duration_hours: float | None = None
    induction_count: Annotated[int, msgspec.Meta(ge=1, le=12)] = 6
    induction_spacing_days: Annotated[int, msgspec.Meta(ge=1, le=28)] = 3
    maintenance_interval_days: Annotated[int, msgspec.Meta(ge=7, le=365)] | None = None
    override: DoseOverride | None = None


class PlanPreview(msgspec.Struct, kw_only=True):
    """The dose a plan would give, from its weight, before it is agreed."""

    total_mg: float
    rate_mg_per_h: float
    # The values outside their band (each would need an override with a reason), and for
    # each what would bring it inside.
    outside_band: list[str]
    why: list[str]


class PlanRead(msgspec.Struct, kw_only=True):
    id: UUID
    indication: str
    weight_kg: float
    dose_mg_per_kg: float | None
    infusion_minutes: int | None
    rate_mg_per_kg_per_h: float | None
    duration_hours: float | None
    total_mg: float
    rate_mg_per_h: float
    induction_count: int
    induction_spacing_days: int
    maintenance_interval_days: int | None
    override: dict[str, object] | None
    agreed_by: str
    agreed_at: datetime


class SessionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    start: datetime
    end: datetime
    kind: Literal["induction", "maintenance"] = "induction"


Phase = Literal["before", "during", "after"]


class VitalsCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    systolic: int
    diastolic: int
    heart_rate: int
    spo2: int
    at: datetime | None = None
    # The phase follows the session: checked in is before, in progress during, completed
    # after. Still accepted for older clients, and refused if it contradicts the session.
    phase: Phase | None = None


class StartOverride(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Text


class StartInfusion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A start over a pre-infusion reading at or above the start limit needs a named
    clinician's override (the one starting it) with a reason."""

    override: StartOverride | None = None


class ScoresBefore(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pain_nrs: Nrs
    mood: Nrs


class DoseGiven(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The dose given; one outside the tolerance of the plan's is recorded with a reason
    (never refused: what was given must be on the record)."""

    given_mg: Annotated[float, msgspec.Meta(ge=0, le=1000)]
    reason: Text | None = None


class Abandonment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why an infusion stopped early and, once it had started, the dose it had given."""

    reason: Text
    given_mg: Annotated[float, msgspec.Meta(ge=0, le=1000)] | None = None


class AdverseEventCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Literal["hypertension", "dissociation", "nausea", "sedation", "other"]
    severity: Literal["mild", "moderate", "severe", "serious"]
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class SessionCompletion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pain_nrs: Nrs
    mood: Nrs
    phq9_items: list[int] | None = None


class Reason(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Text


class CourseClosure(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Literal["completed", "ineligible", "declined", "stopped", "other"]
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class VitalsRead(msgspec.Struct, kw_only=True):
    at: datetime
    phase: str
    systolic: int
    diastolic: int
    heart_rate: int
    spo2: int
    out_of_range: list[str]


class AdverseEventRead(msgspec.Struct, kw_only=True):
    at: datetime
    code: str
    severity: str
    note: str | None


class SessionRead(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: UUID
    course_id: UUID
    patient_id: UUID
    number: int
    kind: str
    status: str
    scheduled_start: datetime
    scheduled_end: datetime
    planned_mg: float
    started_at: datetime | None = None
    ended_at: datetime | None = None
    given_mg: float | None = None
    pain_before: int | None = None
    pain_after: int | None = None
    mood_before: int | None = None
    mood_after: int | None = None
    phq9_total: int | None = None
    status_reason: str | None = None
    given_reason: str | None = None
    start_override: dict[str, str] | None = None
    vitals: list[VitalsRead] | None = None
    adverse_events: list[AdverseEventRead] | None = None


class CourseRead(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A course as the caller may see it: the summary for everyone, the clinical detail
    (assessment, plan, sessions) for infusion clinicians and the MDT."""

    id: UUID
    patient_id: UUID
    referral_id: UUID
    status: str
    priority: str
    opened_at: datetime
    completed_sessions: int
    maintenance_due_at: datetime | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    status_reason: str | None = None
    assessment: AssessmentRead | None = None
    plan: PlanRead | None = None
    sessions: list[SessionRead] | None = None
    opioid_use: list[OpioidUseRead] | None = None  # oldest first: the MME trend


class CoursePage(msgspec.Struct, kw_only=True):
    items: list[CourseRead]
