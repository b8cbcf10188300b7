"""Loads and locks of the referrals service's rows; no rule lives here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from sqlalchemy import ARRAY, Uuid, any_, bindparam, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from services.referrals import domain
from services.referrals.models import Patient, Referral, ReferralNote, ReferralTransition
from shared.auth import User
from shared.db import load, rows, table_of
from shared.pagination import Keyset


def patient(session: Session, patient_id: UUID) -> Patient | None:
    return load(session, Patient, patient_id)


def patient_with_nhs_number(session: Session, nhs_number: str) -> Patient | None:
    return session.exec(select(Patient).where(Patient.nhs_number == nhs_number)).first()


def patients_matching(session: Session, text: str, limit: int) -> Sequence[Patient]:
    """Patients whose NHS number is these digits, or whose family or given name begins
    with this text (any case), family name first."""
    digits = domain.normalise_nhs_number(text)
    if digits.isdigit():
        query = select(Patient).where(Patient.nhs_number == digits)
    else:
        # The text is matched as written: LIKE's own wildcards in it are escaped.
        literal = text.strip().lower().replace("\\", "\\\\")
        start = literal.replace("%", "\\%").replace("_", "\\_") + "%"
        family, given = func.lower(Patient.family_name), func.lower(Patient.given_name)
        query = select(Patient).where(
            or_(family.like(start, escape="\\"), given.like(start, escape="\\"))
        )
    ordered = query.order_by(col(Patient.family_name), col(Patient.given_name), col(Patient.id))
    return session.exec(ordered.limit(limit)).all()


def patients_of_ids(session: Session, patient_ids: Iterable[UUID]) -> Sequence[Patient]:
    return session.exec(select(Patient).where(col(Patient.id).in_(list(patient_ids)))).all()


def referrals_of(session: Session, patient_id: UUID) -> Sequence[Referral]:
    return session.exec(select(Referral).where(Referral.patient_id == patient_id)).all()


def referrals_of_patients(
    session: Session, patient_ids: Iterable[UUID]
) -> dict[UUID, list[Referral]]:
    """Every referral of these patients, by patient: one query for a page of them."""
    by_patient: dict[UUID, list[Referral]] = {patient_id: [] for patient_id in patient_ids}
    if by_patient:
        query = select(Referral).where(col(Referral.patient_id).in_(list(by_patient)))
        for found in session.exec(query).all():
            by_patient[found.patient_id].append(found)
    return by_patient


def referral(session: Session, referral_id: UUID, *, lock: bool = False) -> Referral | None:
    # Locked, two triagers of one referral take turns.
    return load(session, Referral, referral_id, lock=lock)


def history(session: Session, referral_id: UUID) -> Sequence[ReferralTransition]:
    return _in_writing_order(session, ReferralTransition, referral_id)


def attachments(session: Session, referral_id: UUID) -> Sequence[ReferralNote]:
    return _in_writing_order(session, ReferralNote, referral_id)


OfReferral = TypeVar("OfReferral", ReferralTransition, ReferralNote)


def _in_writing_order(
    session: Session, table: type[OfReferral], referral_id: UUID
) -> Sequence[OfReferral]:
    return rows(session, table, table.referral_id == referral_id, order_by=col(table.id))


# The inbox's order: priority, then the longest waiting, then the id for ties.
INBOX_ORDER = Keyset(
    (col(Referral.priority_rank), int),
    (col(Referral.received_at), datetime),
    (col(Referral.id), UUID),
)


class InboxReferral(NamedTuple):
    """A referral as its inbox row shows it, loaded as plain columns: fifty referrals a
    page loaded as ORM objects, with their patients, were most of the page's CPU."""

    id: UUID
    patient_id: UUID
    target: str
    priority: str
    priority_rank: int
    status: str
    status_changed_at: datetime | None
    reason: str
    conditions: list[str]
    referrer: dict[str, Any]
    prior_treatments: list[dict[str, Any]]
    baseline: dict[str, Any] | None
    created_by: str
    received_at: datetime


class InboxPatient(NamedTuple):
    given_name: str
    family_name: str
    birth_date: date


def inbox(
    session: Session,
    user: User,
    filters: dict[str, str],
    after: str | None,
    limit: int,
    *,
    with_patients: bool,
) -> tuple[list[tuple[InboxReferral, InboxPatient | None]], str | None]:
    """One page of the inbox the user may see, by priority then waiting time."""
    referrals, patients = table_of(Referral), table_of(Patient)
    columns = [referrals.c[name] for name in InboxReferral._fields]
    if with_patients:
        columns += [patients.c[name] for name in InboxPatient._fields]
    statement = sa_select(*columns)
    if with_patients:
        statement = statement.join(patients, patients.c.id == referrals.c.patient_id)
    statement = statement.where(*_visible_to(user))
    for name, value in filters.items():
        statement = statement.where(referrals.c[name] == value)
    if after is not None:
        statement = statement.where(INBOX_ORDER.after(after))
    # On the session's connection: the ORM has nothing to load in a page of columns.
    ordered = statement.order_by(*INBOX_ORDER.order()).limit(limit + 1)
    found = session.connection().execute(ordered).all()
    split = len(InboxReferral._fields)
    page = [
        (InboxReferral(*row[:split]), InboxPatient(*row[split:]) if with_patients else None)
        for row in found[:limit]
    ]
    more = len(found) > limit
    return page, (INBOX_ORDER.encode(page[-1][0]) if more and page else None)


def _visible_to(user: User) -> Sequence[Any]:
    if user.role.value in domain.ALL_REFERRALS_ROLES:
        return ()
    team = domain.TEAM_OF_ROLE.get(user.role.value)
    if team is None:
        return (col(Referral.created_by) == user.id,)
    return (or_(col(Referral.target) == team, col(Referral.created_by) == user.id),)


class OpenReferral(NamedTuple):
    """What a possible duplicate is judged on: not the whole referral, whose clinical
    JSON (baseline, prior treatments) a page of the inbox would otherwise decode twice."""

    id: UUID
    patient_id: UUID
    target: str
    status: str
    received_at: datetime


def open_referrals_of(session: Session, patient_ids: Iterable[UUID]) -> list[OpenReferral]:
    """Every open referral of these patients: one query for a page's possible duplicates."""
    wanted = list(set(patient_ids))
    if not wanted:
        return []
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    statement = _OPEN_REFERRALS_OF_ANY if postgres else _OPEN_REFERRALS_OF_IN
    found = connection.execute(statement, {"patient_ids": wanted})
    return [OpenReferral(*row) for row in found]


# Built once, so SQLAlchemy finds the compiled statement without rebuilding it and its
# cache key for every page. PostgreSQL takes a page's ids as one array (`= ANY`): the
# same SQL text every time, which psycopg keeps prepared; fifty `IN` parameters it
# parsed anew for each page (issue 15). SQLite has no arrays.
_REFERRALS = table_of(Referral)
_OPEN_REFERRALS = sa_select(*(_REFERRALS.c[name] for name in OpenReferral._fields)).where(
    _REFERRALS.c.status.in_(domain.OPEN)
)
_OPEN_REFERRALS_OF_ANY = _OPEN_REFERRALS.where(
    _REFERRALS.c.patient_id == any_(bindparam("patient_ids", type_=ARRAY(Uuid())))
)
_OPEN_REFERRALS_OF_IN = _OPEN_REFERRALS.where(
    _REFERRALS.c.patient_id.in_(bindparam("patient_ids", expanding=True))
)
