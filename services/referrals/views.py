"""Rows as the referrals API answers them, shaped by who is asking: free text and names
go to the clinical roles only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol
from uuid import UUID

import msgspec
from sqlmodel import Session

from services.referrals import domain, repository
from services.referrals.models import Patient, ReferralTransition
from services.referrals.schemas import (
    AttachmentRead,
    BaselineRead,
    DuplicateLink,
    PatientName,
    PatientNames,
    PatientRead,
    PatientSummary,
    PriorTreatment,
    ReferralRead,
    Referrer,
    TransitionRead,
    Waiting,
    WaitingStandardRead,
)
from shared.auth import User
from shared.policy import clinical_policy
from shared.tables import utcnow


def patient_read(patient: Patient) -> PatientRead:
    return msgspec.convert(patient, PatientRead, from_attributes=True)


def patient_names(patients: Sequence[Patient]) -> PatientNames:
    return PatientNames(
        items=[msgspec.convert(p, PatientName, from_attributes=True) for p in patients]
    )


def possible_duplicates(
    session: Session, referrals: Sequence[domain.Referred]
) -> dict[UUID, repository.OpenReferral]:
    """Which of these referrals may repeat an earlier open one (issue 16), in one query."""
    window = timedelta(days=clinical_policy().requests.possible_duplicate_days)
    others = repository.open_referrals_of(session, (r.patient_id for r in referrals))
    return domain.possible_duplicates(referrals, others, window)


def duplicate_link(first: domain.Referred) -> DuplicateLink:
    return DuplicateLink(
        id=first.id, href=f"/api/referrals/{first.id}", received_at=first.received_at
    )


class Shown(domain.Referred, Protocol):
    """What a referral's answer is made of: a referral, or an inbox row's columns."""

    @property
    def priority(self) -> str: ...
    @property
    def status_changed_at(self) -> datetime | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def conditions(self) -> list[str]: ...
    @property
    def referrer(self) -> dict[str, Any]: ...
    @property
    def prior_treatments(self) -> list[dict[str, Any]]: ...
    @property
    def baseline(self) -> dict[str, Any] | None: ...
    @property
    def created_by(self) -> str: ...


def referral_read(
    session: Session,
    referral: Shown,
    user: User,
    *,
    detail: bool = False,
    now: datetime | None = None,
    patient: Patient | repository.InboxPatient | None = None,
    duplicate_of: domain.Referred | None = None,
) -> ReferralRead:
    clinical = domain.sees_clinical_detail(user.role)
    read = ReferralRead(
        id=referral.id,
        patient_id=referral.patient_id,
        target=referral.target,
        priority=referral.priority,
        status=referral.status,
        fhir_status=domain.FHIR_SERVICE_REQUEST_STATUS[referral.status],
        task_status=domain.FHIR_TASK_STATUS[referral.status],
        conditions=list(referral.conditions),
        referrer=msgspec.convert(referral.referrer, Referrer),
        received_at=referral.received_at,
        status_changed_at=referral.status_changed_at or referral.received_at,
        waiting=waiting(referral, now or utcnow()),
        created_by=referral.created_by,
        possible_duplicate_of=duplicate_link(duplicate_of) if duplicate_of else None,
    )
    if clinical:
        read.reason = referral.reason
        if referral.baseline is not None:
            read.baseline = msgspec.convert(referral.baseline, BaselineRead)
        read.prior_treatments = msgspec.convert(referral.prior_treatments, list[PriorTreatment])
        patient = patient or repository.patient(session, referral.patient_id)
        if patient is not None:
            read.patient = PatientSummary(
                given_name=patient.given_name,
                family_name=patient.family_name,
                birth_date=patient.birth_date,
            )
    if detail:
        read.history = [
            transition_read(t, clinical) for t in repository.history(session, referral.id)
        ]
        if clinical:
            read.attachments = [
                msgspec.convert(n, AttachmentRead, from_attributes=True)
                for n in repository.attachments(session, referral.id)
            ]
    return read


def transition_read(transition: ReferralTransition, clinical: bool) -> TransitionRead:
    read = msgspec.convert(transition, TransitionRead, from_attributes=True)
    if not clinical:
        read.note = None  # free text (triage reasons, questions, answers): clinical roles only
    return read


@lru_cache(maxsize=64)
def _standard_read(standard: domain.WaitingStandard) -> WaitingStandardRead:
    # One answer per standard (frozen), shared by every row that waits against it.
    return WaitingStandardRead(
        name=standard.name,
        unit="working days" if standard.working_days else "days",
        at_risk_after=standard.at_risk_after_days,
        breach_after=standard.breach_after_days,
        source=standard.source,
    )


def waiting(referral: Shown, now: datetime) -> Waiting:
    """How long the referral has waited against its standard; the clock stops when the
    referral leaves the waiting list."""
    standard = domain.standard_for(referral.target, referral.priority, referral.status)
    stopped = referral.status in domain.CLOCK_STOPPED
    until = (referral.status_changed_at or now) if stopped else now
    elapsed = domain.waiting_days(referral.received_at, until, standard)
    return Waiting(
        days_waiting=max((until.date() - referral.received_at.date()).days, 0),
        standard=_standard_read(standard),
        elapsed=elapsed,
        state=(
            domain.triage_state(referral.received_at, until, standard)
            if standard.working_days
            else domain.waiting_state(elapsed, standard)
        ),
        clock_stopped=stopped,
    )
