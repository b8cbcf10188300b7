"""Loads and locks of the referrals service's rows; no rule lives here."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from services.referrals import domain
from services.referrals.models import Patient, Referral, ReferralNote, ReferralTransition
from shared.auth import User
from shared.errors import FieldProblem
from shared.tables import as_utc


def patient(session: Session, patient_id: UUID) -> Patient | None:
    return session.get(Patient, patient_id)


def patient_with_nhs_number(session: Session, nhs_number: str) -> Patient | None:
    return session.exec(select(Patient).where(Patient.nhs_number == nhs_number)).first()


def referrals_of(session: Session, patient_id: UUID) -> Sequence[Referral]:
    return session.exec(select(Referral).where(Referral.patient_id == patient_id)).all()


def referral(session: Session, referral_id: UUID, *, lock: bool = False) -> Referral | None:
    # The row lock makes two triagers of one referral take turns; the second then sees
    # the first one's status and gets a 409 instead of a second transition.
    return session.get(Referral, referral_id, with_for_update=lock)


def history(session: Session, referral_id: UUID) -> Sequence[ReferralTransition]:
    return session.exec(
        select(ReferralTransition)
        .where(ReferralTransition.referral_id == referral_id)
        .order_by(col(ReferralTransition.id))
    ).all()


def attachments(session: Session, referral_id: UUID) -> Sequence[ReferralNote]:
    return session.exec(
        select(ReferralNote)
        .where(ReferralNote.referral_id == referral_id)
        .order_by(col(ReferralNote.id))
    ).all()


def inbox(
    session: Session,
    user: User,
    filters: dict[str, str],
    after: str | None,
    limit: int,
    *,
    with_patients: bool,
) -> tuple[list[tuple[Referral, Patient | None]], str | None]:
    """One page of the inbox the user may see, by priority then waiting time (keyset)."""
    statement: Any = (
        select(Referral, Patient).join(Patient, col(Patient.id) == Referral.patient_id)
        if with_patients
        else select(Referral)
    )
    statement = statement.where(*_visible_to(user))
    for name, value in filters.items():
        statement = statement.where(getattr(Referral, name) == value)
    if after is not None:
        rank, received_at, last_id = _decode_cursor(after)
        statement = statement.where(
            or_(
                col(Referral.priority_rank) > rank,
                and_(col(Referral.priority_rank) == rank, col(Referral.received_at) > received_at),
                and_(
                    col(Referral.priority_rank) == rank,
                    col(Referral.received_at) == received_at,
                    col(Referral.id) > last_id,
                ),
            )
        )
    statement = statement.order_by(
        col(Referral.priority_rank), col(Referral.received_at), col(Referral.id)
    ).limit(limit + 1)
    rows = [row if with_patients else (row, None) for row in session.exec(statement).all()]
    page, more = rows[:limit], len(rows) > limit
    return page, (_encode_cursor(page[-1][0]) if more and page else None)


def _visible_to(user: User) -> Sequence[Any]:
    if user.role.value in domain.ALL_REFERRALS_ROLES:
        return ()
    team = domain.TEAM_OF_ROLE.get(user.role.value)
    if team is None:
        return (col(Referral.created_by) == user.id,)
    return (or_(col(Referral.target) == team, col(Referral.created_by) == user.id),)


def _encode_cursor(referral: Referral) -> str:
    raw = json.dumps(
        [referral.priority_rank, as_utc(referral.received_at).isoformat(), str(referral.id)]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, datetime, UUID]:
    try:
        rank, received_at, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return int(rank), datetime.fromisoformat(received_at), UUID(last_id)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise FieldProblem("cursor", "is not a cursor this inbox gave out") from None
