"""The referrals service's commands: patients, referrals, triage, the inbox.

Each command is ``(command, uow, user) -> result``: it loads and locks through the
repository, asks the referral aggregate (referral.py) to decide, and stores the rows,
the event and the audit of what it touched in one unit of work. A command that raises
has written nothing. Controllers (api.py) only parse, call one of these and return a view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar
from uuid import UUID, uuid4

import msgspec
from litestar.exceptions import NotFoundException, PermissionDeniedException
from sqlalchemy.exc import IntegrityError

from services.referrals import domain, referral, repository
from services.referrals.models import Patient, Referral
from services.referrals.schemas import (
    Cancellation,
    InfoResponse,
    PatientCorrection,
    PatientCreate,
    PatientTrace,
    ReferralCreate,
    Referrer,
    ReviewReferral,
    Triage,
)
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, User
from shared.errors import Conflict, FieldProblem
from shared.events import Actor, Subject
from shared.events.catalogue import MdtReviewRecorded, PatientRegistered
from shared.peers import peers_of
from shared.tables import utcnow
from shared.uow import UnitOfWork

Note = TypeVar("Note")  # what the referrer writes: an answer, a reason

# --- patients --------------------------------------------------------------------------


def register_patient(data: PatientCreate, uow: UnitOfWork, user: User) -> Patient:
    with uow:
        domain.check_birth_date(data.birth_date, utcnow().date())
        nhs_number = _valid_nhs_number(data.nhs_number)
        if nhs_number is not None:
            _refuse_duplicate_nhs_number(uow, nhs_number, data.birth_date, data.family_name)
        patient = Patient(
            given_name=data.given_name,
            family_name=data.family_name,
            birth_date=data.birth_date,
            sex=data.sex,
            nhs_number=nhs_number,
            contact_preference=data.contact_preference,
            registered_by=user.id,
        )
        uow.session.add(patient)
        uow.publish(
            PatientRegistered(patient_id=patient.id),
            patient_id=patient.id,
            subject=Subject(type="patient", id=str(patient.id)),
        )
        uow.audit(AuditAction.create, "Patient", str(patient.id), patient.id)
        _commit_or_duplicate(uow)
    return patient


# Names are matched in a wider window than a page: some matches are not the caller's to see.
_SEARCH_WINDOW = 200


def search_patients(text: str, limit: int, uow: UnitOfWork, user: User) -> list[Patient]:
    """The patients matching a name or an NHS number that this person may see (the MDT
    everyone; others those they registered or whose referrals they see). The search and
    every patient it shows are audited; the text searched for is not (it is a name)."""
    with uow:
        candidates = repository.patients_matching(uow.session, text, _SEARCH_WINDOW)
        referrals = repository.referrals_of_patients(uow.session, (p.id for p in candidates))
        found = [p for p in candidates if _may_see(user, p, referrals[p.id])][:limit]
        uow.audit(AuditAction.read, "Patient", None, None, detail=f"search: {len(found)} shown")
        for patient in found:
            uow.audit(AuditAction.read, "Patient", str(patient.id), patient.id, detail="search")
        uow.commit()
    return found


def name_patients(patient_ids: Sequence[UUID], uow: UnitOfWork, user: User) -> list[Patient]:
    """The patients of these ids this person may see, in one read: a page of names costs
    one call, not one a patient. Each patient shown is audited; the rest are left out
    without saying why (an id this person may not see is not confirmed to exist)."""
    with uow:
        patients = repository.patients_of_ids(uow.session, set(patient_ids))
        # The MDT, and whoever registered a patient, see the patient whatever the
        # referrals: theirs are not loaded.
        unsure = [p.id for p in patients if not _sees_whatever_the_referrals(user, p)]
        referrals = repository.referrals_of_patients(uow.session, unsure)
        found = [p for p in patients if _may_see(user, p, referrals.get(p.id, []))]
        for patient in found:
            uow.audit(AuditAction.read, "Patient", str(patient.id), patient.id, detail="names")
        uow.commit()
    return found


def read_patient(patient_id: UUID, uow: UnitOfWork, user: User) -> Patient:
    with uow:
        patient = _patient_for(uow, user, patient_id)
        uow.commit_read("Patient", str(patient_id), patient_id)
    return patient


def correct_patient(
    patient_id: UUID, data: PatientCorrection, uow: UnitOfWork, user: User
) -> Patient:
    with uow:
        patient = _patient_for(uow, user, patient_id)
        changes = {
            name: value for name, value in msgspec.structs.asdict(data).items() if value is not None
        }
        if not changes:
            raise FieldProblem("body", "name at least one field to correct")
        if "birth_date" in changes:
            domain.check_birth_date(changes["birth_date"], utcnow().date())
        if "nhs_number" in changes:
            changes["nhs_number"] = _valid_nhs_number(changes["nhs_number"])
            if changes["nhs_number"] != patient.nhs_number:
                _refuse_duplicate_nhs_number(
                    uow,
                    changes["nhs_number"],
                    changes.get("birth_date", patient.birth_date),
                    changes.get("family_name", patient.family_name),
                )
        changed = sorted(name for name, value in changes.items() if getattr(patient, name) != value)
        for name in changed:
            setattr(patient, name, changes[name])
        patient.updated_at = utcnow()
        uow.session.add(patient)
        # The audit names the fields corrected, never their old or new values.
        detail = "corrected: " + (", ".join(changed) or "nothing changed")
        uow.audit(AuditAction.update, "Patient", str(patient_id), patient_id, detail=detail)
        _commit_or_duplicate(uow)
    return patient


def _valid_nhs_number(value: str | None) -> str | None:
    if value is None:
        return None
    normalised = domain.normalise_nhs_number(value)
    if not domain.nhs_number_is_valid(normalised):
        raise FieldProblem("nhs_number", "is not a valid NHS number (check digit)")
    return normalised


def trace_patient(data: PatientTrace, uow: UnitOfWork, user: User) -> Patient:
    """Find a registered patient as PDS does: the NHS number with a matching birth date
    and family name. Whether the number is unknown or the details differ, the answer is
    the same, so a trace never tells a guesser which NHS numbers are registered."""
    with uow:
        nhs_number = _valid_nhs_number(data.nhs_number)
        found = repository.patient_with_nhs_number(uow.session, nhs_number or "")
        matched = found is not None and _same_person(found, data.birth_date, data.family_name)
        outcome = "matched" if matched else "no match"
        uow.audit(
            AuditAction.read,
            "Patient",
            str(found.id) if matched and found else None,
            found.id if matched and found else None,
            detail=f"trace by NHS number, birth date and family name: {outcome}",
        )
        uow.commit()
    if not matched or found is None:
        raise NotFoundException("no registered patient matches these details")
    return found


def _same_person(patient: Patient, birth_date: date, family_name: str) -> bool:
    return patient.birth_date == birth_date and _folded(patient.family_name) == _folded(family_name)


def _folded(name: str) -> str:
    return " ".join(name.split()).casefold()


def _refuse_duplicate_nhs_number(
    uow: UnitOfWork, nhs_number: str, birth_date: date, family_name: str
) -> None:
    """A second registration of one NHS number is refused. It names the registered
    patient only to someone whose details match theirs (who could trace them anyway):
    knowing a number alone reveals nothing."""
    existing = repository.patient_with_nhs_number(uow.session, nhs_number)
    if existing is None:
        return
    if _same_person(existing, birth_date, family_name):
        raise Conflict(
            "a patient with this NHS number is already registered",
            existing_patient_id=str(existing.id),
        )
    raise Conflict(
        "a patient with this NHS number is already registered with other details: "
        "check the number, the birth date and the family name",
        field="nhs_number",
    )


def _commit_or_duplicate(uow: UnitOfWork) -> None:
    try:
        uow.commit()
    except IntegrityError:
        # Two registrations of one NHS number raced; the database kept one.
        raise Conflict("a patient with this NHS number is already registered") from None


def _patient_for(uow: UnitOfWork, user: User, patient_id: UUID) -> Patient:
    patient = repository.patient(uow.session, patient_id)
    if patient is None:
        raise NotFoundException(f"no patient {patient_id}")
    if not _may_see_patient(uow, user, patient):
        raise PermissionDeniedException("this patient is not on your caseload or referrals")
    return patient


def _may_see_patient(uow: UnitOfWork, user: User, patient: Patient) -> bool:
    if _sees_whatever_the_referrals(user, patient):
        return True
    return _may_see(user, patient, repository.referrals_of(uow.session, patient.id))


def _sees_whatever_the_referrals(user: User, patient: Patient) -> bool:
    return user.role is Role.mdt or patient.registered_by == user.id


def _may_see(user: User, patient: Patient, referrals: Sequence[Referral]) -> bool:
    """The MDT sees everyone; others the patients they registered or whose referrals
    they see."""
    if _sees_whatever_the_referrals(user, patient):
        return True
    return any(
        domain.can_see_referral(user.role, user.id, r.target, r.created_by) for r in referrals
    )


# --- referrals -------------------------------------------------------------------------


def refer(
    data: ReferralCreate, uow: UnitOfWork, user: User, *, referral_id: UUID | None = None
) -> Referral:
    """A referral received; `referral_id` is the id another service named it by (the
    MDT's review), so making it twice finds the first."""
    with uow:
        domain.check_prior_treatments(data.target, len(data.prior_treatments))
        baseline = data.baseline
        phq9, pain = domain.score_baseline(
            baseline.phq9_items if baseline else None, baseline.pain_nrs if baseline else None
        )
        if repository.patient(uow.session, data.patient_id) is None:
            raise NotFoundException(
                "patient_id: no such patient is registered",
                extra=[{"field": "patient_id", "message": "no such patient"}],
            )
        new = Referral(
            id=referral_id or uuid4(),
            patient_id=data.patient_id,
            target=data.target,
            priority=data.priority,
            priority_rank=domain.PRIORITY_RANK[data.priority],
            status=domain.RECEIVED,
            reason=data.reason,
            conditions=list(data.conditions),
            referrer=msgspec.to_builtins(data.referrer),
            prior_treatments=msgspec.to_builtins(data.prior_treatments),
            baseline=referral.stored_baseline(phq9, pain) if baseline is not None else None,
            created_by=user.id,
            created_by_role=user.role.value,
        )
        step, notes = referral.refer(
            new, uow.actor, utcnow(), [(a.title, a.text) for a in data.attachments]
        )
        uow.session.add(new)
        uow.session.flush()
        uow.session.add_all([step.transition, *notes])
        _publish(uow, new, step)
        uow.audit(AuditAction.create, "ServiceRequest", str(new.id), data.patient_id)
        uow.commit()
    return new


@dataclass(frozen=True)
class InboxQuery:
    target: str | None = None
    status: str | None = None
    priority: str | None = None
    cursor: str | None = None
    limit: int = 50


def refer_for_review(review: MdtReviewRecorded, uow: UnitOfWork) -> Referral | None:
    """Issue 16: the MDT's decision to refer, made into the referral it named, once, on
    the reviewing clinician's behalf and audited as theirs. The reason is read from the
    coordinator (free text stays out of events)."""
    if review.decision != "refer-psychology" or review.referral_id is None:
        return None
    if uow.session.get(Referral, review.referral_id) is not None:
        return None  # made already (the event again, or the review retried)
    asked = peers_of(uow.session).get(
        "coordinator", f"/api/mdt/reviews/{review.review_id}/referral", ReviewReferral
    )
    reviewer = User(id=review.reviewed_by, role=Role.mdt)
    as_reviewer = UnitOfWork(
        uow.session,
        service=uow.service,
        actor=Actor(user_id=reviewer.id, role=reviewer.role.value),
        trail=AccessTrail(reviewer.id, reviewer.role.value, "event:mdt.review.recorded"),
    )
    data = ReferralCreate(
        patient_id=asked.patient_id,
        target="psychology",
        priority=asked.priority,
        reason=asked.reason,
        conditions=asked.conditions,
        referrer=Referrer(name=reviewer.id, role="MDT", organisation=asked.organisation),
    )
    return refer(data, as_reviewer, reviewer, referral_id=review.referral_id)


def inbox(
    query: InboxQuery, uow: UnitOfWork, user: User
) -> tuple[list[tuple[repository.InboxReferral, repository.InboxPatient | None]], str | None]:
    """The inbox page the user may see; names come only with the clinical roles' rows."""
    filters = {
        name: value
        for name, value in (
            ("target", query.target),
            ("status", query.status),
            ("priority", query.priority),
        )
        if value is not None
    }
    with uow:
        page, next_cursor = repository.inbox(
            uow.session,
            user,
            filters,
            query.cursor,
            query.limit,
            with_patients=domain.sees_clinical_detail(user.role),
        )
        detail = f"inbox page of {len(page)}"
        uow.commit_read("ServiceRequest", None, None, detail=detail)
    return page, next_cursor


def read_referral(referral_id: UUID, uow: UnitOfWork, user: User) -> Referral:
    with uow:
        found = _referral_for(uow, user, referral_id)
        uow.commit_read("ServiceRequest", str(referral_id), found.patient_id)
    return found


def triage(referral_id: UUID, data: Triage, uow: UnitOfWork, user: User) -> Referral:
    with uow:
        found = _referral_for(uow, user, referral_id, lock=True)
        if not domain.can_triage(user.role, found.target):
            raise PermissionDeniedException(f"{user.role} does not triage {found.target} referrals")
        step = referral.triage(
            found, data.decision, data.reason, data.question, uow.actor, utcnow()
        )
        _store(uow, found, step, f"triage: {data.decision}")
    return found


def provide_info(referral_id: UUID, data: InfoResponse, uow: UnitOfWork, user: User) -> Referral:
    return _referrers_step(
        referral_id, referral.provide_info, data.answer, "answer", "information provided", uow, user
    )


def cancel(referral_id: UUID, data: Cancellation, uow: UnitOfWork, user: User) -> Referral:
    return _referrers_step(
        referral_id, referral.cancel, data.reason, "cancel a referral", "cancelled", uow, user
    )


def _referrers_step(
    referral_id: UUID,
    step: Callable[[Referral, Note, Actor, datetime], referral.Step],
    note: Note,
    doing: str,
    detail: str,
    uow: UnitOfWork,
    user: User,
) -> Referral:
    """A step only the referrer (or the MDT) takes: answering a question, cancelling."""
    with uow:
        found = _referral_for(uow, user, referral_id, lock=True)
        if not domain.can_act_as_referrer(user.role, user.id, found.created_by):
            raise PermissionDeniedException(f"only the referrer or the MDT can {doing}")
        _store(uow, found, step(found, note, uow.actor, utcnow()), detail)
    return found


def close(
    referral_id: UUID, ended_by: str, outcome: str, by: Actor, uow: UnitOfWork, causation_id: str
) -> referral.Step | None:
    """The receiving service reported the care ended (an event, not a person): close
    the referral if it is open, in the consuming transaction (committed with the inbox
    row). None if there is no such referral or nothing to close."""
    found = repository.referral(uow.session, referral_id, lock=True)
    if found is None:
        return None
    step = referral.close(found, ended_by, outcome, by, utcnow())
    if step is not None:
        uow.session.add_all([found, step.transition])
        _publish(uow, found, step, causation_id)
    return step


def _store(uow: UnitOfWork, found: Referral, step: referral.Step, detail: str) -> None:
    uow.session.add_all([found, step.transition])
    _publish(uow, found, step)
    uow.audit(AuditAction.update, "ServiceRequest", str(found.id), found.patient_id, detail=detail)
    uow.commit()


def _publish(
    uow: UnitOfWork, found: Referral, step: referral.Step, causation_id: str | None = None
) -> None:
    uow.publish(
        step.event,
        patient_id=found.patient_id,
        subject=referral.subject(found),
        causation_id=causation_id,
    )


def _referral_for(
    uow: UnitOfWork, user: User, referral_id: UUID, *, lock: bool = False
) -> Referral:
    found = repository.referral(uow.session, referral_id, lock=lock)
    if found is None:
        raise NotFoundException(f"no referral {referral_id}")
    if not domain.can_see_referral(user.role, user.id, found.target, found.created_by):
        raise PermissionDeniedException("this referral is not for your team and not yours")
    return found
