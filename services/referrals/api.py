"""HTTP controllers of the referrals service."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.referrals import domain
from services.referrals.models import Patient, Referral
from services.referrals.schemas import (
    BaselineRead,
    PatientCreate,
    PatientRead,
    PriorTreatment,
    ReferralCreate,
    ReferralRead,
    Referrer,
)
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, User, requires
from shared.errors import Conflict, FieldProblem
from shared.events import Actor, Subject, new_event
from shared.events.catalogue import BaselineScores, PatientRegistered, ReferralReceived
from shared.observability import current_correlation_id
from shared.outbox import add_event
from shared.tables import as_utc

SERVICE = "referrals"
CLINICAL_ROLES = (Role.referrer, Role.psychologist, Role.infusion_clinician, Role.mdt)


def _actor(user: User) -> Actor:
    return Actor(user_id=user.id, role=user.role.value)


def _rule(error: domain.ReferralRuleBroken) -> FieldProblem:
    return FieldProblem(error.field, error.message)


class PatientController(Controller):
    path = "/api/patients"
    tags = ["patients"]
    opt = {"resource": "Patient"}
    guards = [requires(*CLINICAL_ROLES)]

    @post(operation_id="registerPatient", summary="Register a patient", sync_to_thread=True)
    def register(
        self,
        data: JSONBody[PatientCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> PatientRead:
        try:
            domain.check_birth_date(data.birth_date, datetime.now(UTC).date())
        except domain.ReferralRuleBroken as error:
            raise _rule(error) from None
        nhs_number = None
        if data.nhs_number is not None:
            nhs_number = domain.normalise_nhs_number(data.nhs_number)
            if not domain.nhs_number_is_valid(nhs_number):
                raise FieldProblem("nhs_number", "is not a valid NHS number (check digit)")
            existing = db.exec(select(Patient).where(Patient.nhs_number == nhs_number)).first()
            if existing is not None:
                raise Conflict(
                    "a patient with this NHS number is already registered",
                    existing_patient_id=str(existing.id),
                )
        patient = Patient(
            given_name=data.given_name,
            family_name=data.family_name,
            birth_date=data.birth_date,
            sex=data.sex,
            nhs_number=nhs_number,
            contact_preference=data.contact_preference,
            registered_by=user.id,
        )
        db.add(patient)
        add_event(
            db,
            new_event(
                type="patient.registered",
                data=PatientRegistered(patient_id=patient.id),
                producer=SERVICE,
                patient_id=patient.id,
                subject=Subject(type="patient", id=str(patient.id)),
                actor=_actor(user),
                correlation_id=current_correlation_id(),
            ),
        )
        audit.record(db, AuditAction.create, "Patient", str(patient.id), patient.id)
        try:
            db.commit()
        except IntegrityError:
            # Two registrations of one NHS number raced; the database kept one.
            db.rollback()
            raise Conflict("a patient with this NHS number is already registered") from None
        return _patient_read(patient)

    @get("/{patient_id:uuid}", operation_id="readPatient", sync_to_thread=True)
    def read(
        self,
        patient_id: FromPath[UUID],
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
    ) -> PatientRead:
        patient = db.get(Patient, patient_id)
        if patient is None:
            raise NotFoundException(f"no patient {patient_id}")
        audit.record(db, AuditAction.read, "Patient", str(patient_id), patient_id)
        db.commit()
        return _patient_read(patient)


def _patient_read(patient: Patient) -> PatientRead:
    return PatientRead(
        id=patient.id,
        given_name=patient.given_name,
        family_name=patient.family_name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        nhs_number=patient.nhs_number,
        contact_preference=patient.contact_preference,
        registered_at=as_utc(patient.registered_at),
    )


class ReferralController(Controller):
    path = "/api/referrals"
    tags = ["referrals"]
    opt = {"resource": "ServiceRequest"}
    guards = [requires(*CLINICAL_ROLES)]

    @post(operation_id="createReferral", summary="Refer a patient to a team", sync_to_thread=True)
    def create(
        self,
        data: JSONBody[ReferralCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        baseline = data.baseline or None
        try:
            domain.check_prior_treatments(data.target, len(data.prior_treatments))
            phq9, pain = domain.score_baseline(
                baseline.phq9_items if baseline else None, baseline.pain_nrs if baseline else None
            )
        except domain.ReferralRuleBroken as error:
            raise _rule(error) from None
        if db.get(Patient, data.patient_id) is None:
            raise NotFoundException(
                "patient_id: no such patient is registered",
                extra=[{"field": "patient_id", "message": "no such patient"}],
            )
        stored_baseline = None
        if baseline is not None:
            stored_baseline = {
                "phq9_items": list(phq9.items) if phq9 else None,
                "phq9_total": phq9.total if phq9 else None,
                "phq9_band": phq9.band if phq9 else None,
                "pain_nrs": pain,
            }
        referral = Referral(
            patient_id=data.patient_id,
            target=data.target,
            priority=data.priority,
            status="received",
            reason=data.reason,
            conditions=list(data.conditions),
            referrer=msgspec.to_builtins(data.referrer),
            prior_treatments=msgspec.to_builtins(data.prior_treatments),
            baseline=stored_baseline,
            created_by=user.id,
        )
        db.add(referral)
        add_event(
            db,
            new_event(
                type="referral.received",
                data=ReferralReceived(
                    referral_id=referral.id,
                    target=data.target,
                    priority=data.priority,
                    conditions=list(data.conditions),
                    referrer_role=data.referrer.role,
                    prior_treatment_count=len(data.prior_treatments),
                    received_at=referral.received_at,
                    baseline=BaselineScores(
                        phq9_total=phq9.total if phq9 else None,
                        phq9_item9=phq9.items[8] if phq9 else None,
                        pain_nrs=pain,
                    )
                    if baseline is not None
                    else None,
                ),
                producer=SERVICE,
                patient_id=data.patient_id,
                subject=Subject(type="referral", id=str(referral.id)),
                actor=_actor(user),
                correlation_id=current_correlation_id(),
            ),
        )
        audit.record(db, AuditAction.create, "ServiceRequest", str(referral.id), data.patient_id)
        db.commit()
        return _referral_read(referral)

    @get("/{referral_id:uuid}", operation_id="readReferral", sync_to_thread=True)
    def read(
        self,
        referral_id: FromPath[UUID],
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        referral = db.get(Referral, referral_id)
        if referral is None:
            raise NotFoundException(f"no referral {referral_id}")
        audit.record(db, AuditAction.read, "ServiceRequest", str(referral_id), referral.patient_id)
        db.commit()
        return _referral_read(referral)


def _referral_read(referral: Referral) -> ReferralRead:
    baseline = referral.baseline
    return ReferralRead(
        id=referral.id,
        patient_id=referral.patient_id,
        target=referral.target,
        priority=referral.priority,
        status=referral.status,
        reason=referral.reason,
        conditions=list(referral.conditions),
        referrer=msgspec.convert(referral.referrer, Referrer),
        prior_treatments=msgspec.convert(referral.prior_treatments, list[PriorTreatment]),
        baseline=msgspec.convert(baseline, BaselineRead) if baseline is not None else None,
        received_at=as_utc(referral.received_at),
    )
