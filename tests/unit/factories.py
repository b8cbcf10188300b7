"""Builders for envelopes and SQLite databases the unit tests share (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from shared.db import make_engine
from shared.events import Actor, Envelope, Subject, new_event
from shared.events.catalogue import BaselineScores, PatientRegistered, ReferralReceived
from shared.tables import AuditRecord, DeadLetter, InboxEvent, OutboxEvent

PLATFORM_TABLES: list[Table] = [
    OutboxEvent.__table__,  # type: ignore[list-item]
    InboxEvent.__table__,  # type: ignore[list-item]
    DeadLetter.__table__,  # type: ignore[list-item]
    AuditRecord.__table__,  # type: ignore[list-item]
]

ACTOR = Actor(user_id="dr-test", role="referrer")
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday


def sqlite_engine(
    tmp_path: Path, name: str = "unit.db", extra: list[Table] | None = None
) -> Engine:
    """A SQLite file with the platform tables (and any extra test tables) created."""
    engine = make_engine("sqlite:///" + str(tmp_path / name))
    SQLModel.metadata.create_all(engine, tables=PLATFORM_TABLES)
    for table in extra or []:
        table.create(engine, checkfirst=True)
    return engine


def patient_registered(
    patient_id: UUID, *, occurred_at: datetime = T0, sequence: int = 1
) -> Envelope:
    envelope = new_event(
        type="patient.registered",
        data=PatientRegistered(patient_id=patient_id),
        producer="referrals",
        patient_id=patient_id,
        subject=Subject(type="patient", id=str(patient_id)),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=occurred_at,
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def referral_received(
    patient_id: UUID,
    *,
    occurred_at: datetime = T0,
    sequence: int = 1,
    referral_id: UUID | None = None,
    target: str = "ketamine-infusion",
    priority: str = "routine",
    phq9_item9: int | None = 0,
    phq9_total: int | None = 12,
    pain_nrs: int | None = 7,
) -> Envelope:
    referral_id = referral_id or uuid4()
    envelope = new_event(
        type="referral.received",
        data=ReferralReceived(
            referral_id=referral_id,
            target=target,  # type: ignore[arg-type]
            priority=priority,  # type: ignore[arg-type]
            conditions=["crps", "depression"],
            referrer_role="pain consultant",
            prior_treatment_count=1,
            received_at=occurred_at,
            baseline=BaselineScores(
                phq9_total=phq9_total, phq9_item9=phq9_item9, pain_nrs=pain_nrs
            ),
        ),
        producer="referrals",
        patient_id=patient_id,
        subject=Subject(type="referral", id=str(referral_id)),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=occurred_at,
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def unknown_event(
    patient_id: UUID,
    event_type: str = "research.survey.sent",
    *,
    occurred_at: datetime = T0,
    sequence: int = 1,
    subject_id: str = "session-1",
) -> Envelope:
    """An event the catalogue does not know yet (built directly: new_event would refuse it)."""
    return Envelope(
        event_id=uuid4(),
        type=event_type,
        schema_version=1,
        occurred_at=occurred_at,
        producer="infusions",
        patient_id=patient_id,
        subject=Subject(type="infusion_session", id=subject_id),
        sequence=sequence,
        correlation_id="corr-unit",
        causation_id=None,
        actor=Actor(user_id="infusions", role="service"),
        data={"session_id": subject_id},
    )
