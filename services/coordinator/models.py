"""The coordinator's tables: the event store and the pathway projection. No demographics."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from shared.tables import UTCDateTime, utcnow

TABLES = frozenset(
    {
        "stored_event",
        "pathway",
        "pathway_alert",
        "alert_action",
        "mdt_review",
    }
)


class StoredEvent(SQLModel, table=True):
    """Every event received, append-only, unique by event id."""

    __tablename__ = "stored_event"
    __table_args__ = (Index("ix_stored_event_subject", "subject_type", "subject_id", "sequence"),)

    event_id: UUID = Field(primary_key=True)
    patient_id: UUID = Field(index=True)
    type: str = Field(max_length=100)
    schema_version: int
    producer: str = Field(max_length=40)
    subject_type: str = Field(max_length=50)
    subject_id: str = Field(max_length=64)
    sequence: int
    occurred_at: datetime = Field(sa_type=UTCDateTime())
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    envelope: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class PathwayRow(SQLModel, table=True):
    """The current projection of one patient's pathway; always rebuilt, never edited."""

    __tablename__ = "pathway"

    patient_id: UUID = Field(primary_key=True)
    stage: str = Field(max_length=20, index=True)
    stage_since: datetime = Field(sa_type=UTCDateTime())
    open_alerts: int = 0
    # ",psychology,ketamine-infusion,": the teams with an active part in the pathway
    # (projection.active_teams), who may see it; also the team filter.
    teams: str = Field(default=",", max_length=200)
    event_count: int
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    # When the MDT should review this pathway, and how urgent that is (the severity rank
    # of the reason; 3 for a routine review), for the MDT's worklist.
    review_due: datetime | None = Field(default=None, sa_type=UTCDateTime(), index=True)
    review_rank: int | None = None
    # A new id each time the pathway is written: a worker keeps its fold of the pathway
    # under the id it wrote, and carries that fold on only while the id is still this.
    fold_id: UUID | None = None
    # When the pathway's next time threshold falls due (rules.next_due), for the clock's
    # scan at scale; None: not known yet (written before this column), so looked at.
    next_due: datetime | None = Field(default=None, sa_type=UTCDateTime(), index=True)


class PathwayAlert(SQLModel, table=True):
    """Each pathway's alerts as rows, rewritten with the pathway, for lists and filters."""

    __tablename__ = "pathway_alert"

    id: str = Field(primary_key=True, max_length=36)
    patient_id: UUID = Field(index=True)
    kind: str = Field(max_length=40, index=True)
    severity: str = Field(max_length=10)
    severity_rank: int = Field(index=True)
    status: str = Field(max_length=14, index=True)
    owner_role: str = Field(max_length=30)
    raised_at: datetime = Field(sa_type=UTCDateTime())
    due: datetime = Field(sa_type=UTCDateTime())


class AlertAction(SQLModel, table=True):
    """Who acknowledged or resolved an alert, when, and their note (kept out of events)."""

    __tablename__ = "alert_action"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=36, index=True)
    patient_id: UUID = Field(index=True)
    action: str = Field(max_length=12)
    by_user: str = Field(max_length=100)
    by_role: str = Field(max_length=40)
    note: str | None = Field(default=None, max_length=2000)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class MdtReview(SQLModel, table=True):
    """A review of a patient's pathway by the MDT, with its notes (kept out of events)."""

    __tablename__ = "mdt_review"

    id: UUID = Field(primary_key=True)
    patient_id: UUID = Field(index=True)
    reviewed_at: datetime = Field(sa_type=UTCDateTime())
    decision: str = Field(max_length=30)
    attendees: list[str] = Field(sa_column=Column(JSON, nullable=False))
    notes: str | None = Field(default=None, max_length=4000)
    reviewed_by: str = Field(max_length=100)
    referral_id: UUID | None = None
    # A refer-psychology decision's referral (reason, conditions, priority, organisation),
    # made by the referrals service from the review's event under referral_id.
    referral_request: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
