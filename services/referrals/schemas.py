"""Request and response bodies of the referrals API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from shared.events.catalogue import Condition, ReferralPriority, ReferralTarget

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Sex = Literal["female", "male", "other", "unknown"]  # FHIR AdministrativeGender
ContactPreference = Literal["phone", "email", "letter", "sms"]


class PatientCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    given_name: Name
    family_name: Name
    birth_date: date
    sex: Sex
    nhs_number: Annotated[str, msgspec.Meta(min_length=10, max_length=12)] | None = None
    contact_preference: ContactPreference | None = None


class PatientRead(msgspec.Struct, kw_only=True):
    id: UUID
    given_name: str
    family_name: str
    birth_date: date
    sex: str
    nhs_number: str | None
    contact_preference: str | None
    registered_at: datetime


class Referrer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    role: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    organisation: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class PriorTreatment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    kind: Literal["medicine", "therapy"]
    outcome: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class Baseline(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Item ranges are checked by the shared scoring code, which names the bad item.
    phq9_items: list[int] | None = None
    pain_nrs: int | None = None


class ReferralCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    patient_id: UUID
    target: ReferralTarget
    priority: ReferralPriority
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    conditions: Annotated[list[Condition], msgspec.Meta(min_length=1)]
    referrer: Referrer
    prior_treatments: list[PriorTreatment] = msgspec.field(default_factory=list)
    baseline: Baseline | None = None


class BaselineRead(msgspec.Struct, kw_only=True):
    phq9_items: list[int] | None
    phq9_total: int | None
    phq9_band: str | None
    pain_nrs: int | None


class ReferralRead(msgspec.Struct, kw_only=True):
    id: UUID
    patient_id: UUID
    target: str
    priority: str
    status: str
    reason: str
    conditions: list[str]
    referrer: Referrer
    prior_treatments: list[PriorTreatment]
    baseline: BaselineRead | None
    received_at: datetime
