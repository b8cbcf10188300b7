"""The referrals service's tables: the only place patient demographics live."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from shared.tables import Timestamp, utcnow

TABLES = frozenset({"patient", "referral", "referral_transition", "referral_note"})


class Patient(SQLModel, table=True):
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    given_name: str = Field(max_length=100)
    family_name: str = Field(max_length=100)
    birth_date: date
    sex: str = Field(max_length=10)
    nhs_number: str | None = Field(default=None, max_length=10, unique=True)
    contact_preference: str | None = Field(default=None, max_length=10)
    registered_by: str = Field(max_length=100)
    registered_at: datetime = Timestamp(default_factory=utcnow)
    updated_at: datetime | None = Timestamp(default=None)


class Referral(SQLModel, table=True):
    __table_args__ = (
        # The inbox: filtered by team and status, ordered by priority then waiting time.
        Index("ix_referral_inbox", "target", "status", "priority_rank", "received_at", "id"),
        # The MDT's and admins' views across teams, and by status alone.
        Index("ix_referral_queue", "priority_rank", "received_at", "id"),
        Index("ix_referral_status_queue", "status", "priority_rank", "received_at", "id"),
    )

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    patient_id: UUID = Field(foreign_key="patient.id", index=True)
    target: str = Field(max_length=30, index=True)
    priority: str = Field(max_length=10)
    priority_rank: int = Field(default=1)
    status: str = Field(max_length=20, index=True)
    status_changed_at: datetime | None = Timestamp(default=None)
    reason: str = Field(max_length=4000)
    conditions: list[str] = Field(sa_column=Column(JSON, nullable=False))
    referrer: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prior_treatments: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    baseline: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_by: str = Field(max_length=100, index=True)
    created_by_role: str = Field(default="referrer", max_length=40)
    received_at: datetime = Timestamp(default_factory=utcnow)


class ReferralTransition(SQLModel, table=True):
    """Who moved a referral from one status to another, when, and why."""

    __tablename__ = "referral_transition"

    id: int | None = Field(default=None, primary_key=True)
    referral_id: UUID = Field(foreign_key="referral.id", index=True)
    action: str = Field(max_length=20)
    from_status: str | None = Field(default=None, max_length=20)
    to_status: str = Field(max_length=20)
    by_user: str = Field(max_length=100)
    by_role: str = Field(max_length=40)
    at: datetime = Timestamp(default_factory=utcnow)
    # Free text: the triage reason, the question asked, the answer, why it was cancelled.
    note: str | None = Field(default=None, max_length=4000)


class ReferralNote(SQLModel, table=True):
    """A text attachment on a referral (a letter, a summary of investigations)."""

    __tablename__ = "referral_note"

    id: int | None = Field(default=None, primary_key=True)
    referral_id: UUID = Field(foreign_key="referral.id", index=True)
    title: str = Field(max_length=200)
    text: str = Field(max_length=20000)
    by_user: str = Field(max_length=100)
    by_role: str = Field(max_length=40)
    at: datetime = Timestamp(default_factory=utcnow)
