"""The referrals service's tables: the only place patient demographics live."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from shared.tables import utcnow

TABLES = frozenset({"patient", "referral"})


class Patient(SQLModel, table=True):
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    given_name: str = Field(max_length=100)
    family_name: str = Field(max_length=100)
    birth_date: date
    sex: str = Field(max_length=10)
    nhs_number: str | None = Field(default=None, max_length=10, unique=True)
    contact_preference: str | None = Field(default=None, max_length=10)
    registered_by: str = Field(max_length=100)
    registered_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Referral(SQLModel, table=True):
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    patient_id: UUID = Field(foreign_key="patient.id", index=True)
    target: str = Field(max_length=30, index=True)
    priority: str = Field(max_length=10)
    status: str = Field(max_length=20, index=True)
    reason: str = Field(max_length=4000)
    conditions: list[str] = Field(sa_column=Column(JSON, nullable=False))
    referrer: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prior_treatments: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    baseline: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_by: str = Field(max_length=100)
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
