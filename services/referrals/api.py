"""HTTP controllers of the referrals service: patients, referrals, triage, the inbox."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import and_, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.referrals import domain
from services.referrals.models import Patient, Referral, ReferralNote, ReferralTransition
from services.referrals.schemas import (
    AttachmentRead,
    BaselineRead,
    Cancellation,
    InboxPage,
    InfoResponse,
    PatientCorrection,
    PatientCreate,
    PatientRead,
    PatientSummary,
    PriorTreatment,
    ReferralCreate,
    ReferralRead,
    Referrer,
    TransitionRead,
    Triage,
    Waiting,
    WaitingStandardRead,
)
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, User, requires
from shared.errors import Conflict, FieldProblem
from shared.events import Actor, Subject
from shared.events.catalogue import (
    BaselineScores,
    Event,
    PatientRegistered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralInfoProvided,
    ReferralInfoRequested,
    ReferralReceived,
    ReferralRejected,
)
from shared.outbox import publish
from shared.tables import as_utc

SERVICE = "referrals"
CLINICAL_ROLES = (Role.referrer, Role.psychologist, Role.infusion_clinician, Role.mdt)
WAITING_POLICY = domain.WaitingPolicy()
MAX_PAGE = 200


def _actor(user: User) -> Actor:
    return Actor(user_id=user.id, role=user.role.value)


def _rule(error: domain.ReferralRuleBroken) -> FieldProblem:
    return FieldProblem(error.field, error.message)


def _publish(
    db: Session,
    user: User,
    referral: Referral,
    event_type: str,
    payload: type[Event],
    **fields: Any,
) -> None:
    """Write a referral event to the outbox; its payload is checked against the catalogue."""
    publish(
        db,
        event_type=event_type,
        payload=payload,
        fields={"referral_id": referral.id, "target": referral.target, **fields},
        producer=SERVICE,
        patient_id=referral.patient_id,
        subject=Subject(type="referral", id=str(referral.id)),
        actor=_actor(user),
    )


# --- patients --------------------------------------------------------------------------


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
        _check_birth_date(data.birth_date)
        nhs_number = _valid_nhs_number(data.nhs_number)
        if nhs_number is not None:
            _refuse_duplicate_nhs_number(db, nhs_number)
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
        publish(
            db,
            event_type="patient.registered",
            payload=PatientRegistered,
            fields={"patient_id": patient.id},
            producer=SERVICE,
            patient_id=patient.id,
            subject=Subject(type="patient", id=str(patient.id)),
            actor=_actor(user),
        )
        audit.record(db, AuditAction.create, "Patient", str(patient.id), patient.id)
        _commit_or_duplicate(db)
        return _patient_read(patient)

    @get("/{patient_id:uuid}", operation_id="readPatient", sync_to_thread=True)
    def read(
        self,
        patient_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> PatientRead:
        patient = _patient_for(db, user, patient_id)
        audit.record(db, AuditAction.read, "Patient", str(patient_id), patient_id)
        db.commit()
        return _patient_read(patient)

    @patch(
        "/{patient_id:uuid}",
        operation_id="correctPatient",
        summary="Correct details",
        sync_to_thread=True,
    )
    def correct(
        self,
        patient_id: FromPath[UUID],
        data: JSONBody[PatientCorrection],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> PatientRead:
        patient = _patient_for(db, user, patient_id)
        changes = {
            name: value for name, value in msgspec.structs.asdict(data).items() if value is not None
        }
        if not changes:
            raise FieldProblem("body", "name at least one field to correct")
        if "birth_date" in changes:
            _check_birth_date(changes["birth_date"])
        if "nhs_number" in changes:
            changes["nhs_number"] = _valid_nhs_number(changes["nhs_number"])
            if changes["nhs_number"] != patient.nhs_number:
                _refuse_duplicate_nhs_number(db, changes["nhs_number"])
        changed = sorted(name for name, value in changes.items() if getattr(patient, name) != value)
        for name in changed:
            setattr(patient, name, changes[name])
        patient.updated_at = datetime.now(UTC)
        db.add(patient)
        # The audit names the fields corrected, never their old or new values.
        audit.record(
            db,
            AuditAction.update,
            "Patient",
            str(patient_id),
            patient_id,
            detail="corrected: " + (", ".join(changed) or "nothing changed"),
        )
        _commit_or_duplicate(db)
        return _patient_read(patient)


def _check_birth_date(birth_date: Any) -> None:
    try:
        domain.check_birth_date(birth_date, datetime.now(UTC).date())
    except domain.ReferralRuleBroken as error:
        raise _rule(error) from None


def _valid_nhs_number(value: str | None) -> str | None:
    if value is None:
        return None
    normalised = domain.normalise_nhs_number(value)
    if not domain.nhs_number_is_valid(normalised):
        raise FieldProblem("nhs_number", "is not a valid NHS number (check digit)")
    return normalised


def _refuse_duplicate_nhs_number(db: Session, nhs_number: str) -> None:
    existing = db.exec(select(Patient).where(Patient.nhs_number == nhs_number)).first()
    if existing is not None:
        raise Conflict(
            "a patient with this NHS number is already registered",
            existing_patient_id=str(existing.id),
        )


def _commit_or_duplicate(db: Session) -> None:
    try:
        db.commit()
    except IntegrityError:
        # Two registrations of one NHS number raced; the database kept one.
        db.rollback()
        raise Conflict("a patient with this NHS number is already registered") from None


def _patient_for(db: Session, user: User, patient_id: UUID) -> Patient:
    patient = db.get(Patient, patient_id)
    if patient is None:
        raise NotFoundException(f"no patient {patient_id}")
    if not _may_see_patient(db, user, patient):
        raise PermissionDeniedException("this patient is not on your caseload or referrals")
    return patient


def _may_see_patient(db: Session, user: User, patient: Patient) -> bool:
    if user.role is Role.mdt or patient.registered_by == user.id:
        return True
    referrals = db.exec(select(Referral).where(Referral.patient_id == patient.id)).all()
    return any(
        domain.can_see_referral(user.role, user.id, r.target, r.created_by) for r in referrals
    )


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


# --- referrals -------------------------------------------------------------------------


class ReferralController(Controller):
    path = "/api/referrals"
    tags = ["referrals"]
    opt = {"resource": "ServiceRequest"}

    @post(
        operation_id="createReferral",
        summary="Refer a patient to a team",
        guards=[requires(*CLINICAL_ROLES)],
        sync_to_thread=True,
    )
    def create(
        self,
        data: JSONBody[ReferralCreate],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        baseline = data.baseline
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
        now = datetime.now(UTC)
        referral = Referral(
            patient_id=data.patient_id,
            target=data.target,
            priority=data.priority,
            priority_rank=domain.PRIORITY_RANK[data.priority],
            status=domain.RECEIVED,
            status_changed_at=now,
            reason=data.reason,
            conditions=list(data.conditions),
            referrer=msgspec.to_builtins(data.referrer),
            prior_treatments=msgspec.to_builtins(data.prior_treatments),
            baseline=stored_baseline,
            created_by=user.id,
            created_by_role=user.role.value,
            received_at=now,
        )
        db.add(referral)
        db.flush()
        db.add(
            ReferralTransition(
                referral_id=referral.id,
                action="refer",
                from_status=None,
                to_status=domain.RECEIVED,
                by_user=user.id,
                by_role=user.role.value,
                at=now,
            )
        )
        for attachment in data.attachments:
            db.add(
                ReferralNote(
                    referral_id=referral.id,
                    title=attachment.title,
                    text=attachment.text,
                    by_user=user.id,
                    by_role=user.role.value,
                    at=now,
                )
            )
        _publish(
            db,
            user,
            referral,
            "referral.received",
            ReferralReceived,
            priority=data.priority,
            conditions=list(data.conditions),
            referrer_role=data.referrer.role,
            prior_treatment_count=len(data.prior_treatments),
            received_at=now,
            baseline=_baseline_scores(stored_baseline),
        )
        audit.record(db, AuditAction.create, "ServiceRequest", str(referral.id), data.patient_id)
        db.commit()
        return _referral_read(db, referral, user, detail=True)

    @get(
        operation_id="listReferrals",
        summary="The inbox: referrals by priority, then waiting",
        guards=[requires(*CLINICAL_ROLES, Role.admin)],
        sync_to_thread=True,
    )
    def inbox(
        self,
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
        target: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        priority: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    ) -> InboxPage:
        # Names come only with the clinical roles' rows; the others skip the join.
        clinical = domain.sees_clinical_detail(user.role)
        statement: Any = (
            select(Referral, Patient).join(Patient, col(Patient.id) == Referral.patient_id)
            if clinical
            else select(Referral)
        )
        statement = statement.where(*_visible_to(user))
        for name, value, allowed in (
            ("target", target, ("ketamine-infusion", "psychology", "pain-mdt")),
            ("status", status, domain.STATUSES),
            ("priority", priority, ("routine", "urgent")),
        ):
            if value is not None:
                if value not in allowed:
                    raise FieldProblem(name, f"must be one of: {', '.join(allowed)}")
                statement = statement.where(getattr(Referral, name) == value)
        if cursor is not None:
            rank, received_at, last_id = _decode_cursor(cursor)
            statement = statement.where(
                or_(
                    col(Referral.priority_rank) > rank,
                    and_(
                        col(Referral.priority_rank) == rank, col(Referral.received_at) > received_at
                    ),
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
        rows = [row if clinical else (row, None) for row in db.exec(statement).all()]
        page, more = rows[:limit], len(rows) > limit
        now = datetime.now(UTC)
        items = [
            _referral_read(db, referral, user, now=now, patient=patient)
            for referral, patient in page
        ]
        audit.record(
            db, AuditAction.read, "ServiceRequest", None, None, detail=f"inbox page of {len(items)}"
        )
        db.commit()
        next_cursor = _encode_cursor(page[-1][0]) if more and page else None
        return InboxPage(items=items, next_cursor=next_cursor)

    @get(
        "/{referral_id:uuid}",
        operation_id="readReferral",
        sync_to_thread=True,
        guards=[requires(*CLINICAL_ROLES, Role.admin)],
    )
    def read(
        self,
        referral_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        referral = _referral_for(db, user, referral_id)
        audit.record(db, AuditAction.read, "ServiceRequest", str(referral_id), referral.patient_id)
        db.commit()
        return _referral_read(db, referral, user, detail=True)

    @post(
        "/{referral_id:uuid}/triage",
        operation_id="triageReferral",
        status_code=200,
        summary="Accept, reject (with a reason) or ask the referrer a question",
        guards=[requires(Role.psychologist, Role.infusion_clinician, Role.mdt)],
        sync_to_thread=True,
    )
    def triage(
        self,
        referral_id: FromPath[UUID],
        data: JSONBody[Triage],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        try:
            domain.check_triage(data.decision, data.reason, data.question)
        except domain.ReferralRuleBroken as error:
            raise _rule(error) from None
        referral = _referral_for(db, user, referral_id, lock=True)
        if not domain.can_triage(user.role, referral.target):
            raise PermissionDeniedException(
                f"{user.role} does not triage {referral.target} referrals"
            )
        note = data.question if data.decision == "request-info" else data.reason
        now = _transition(db, user, referral, data.decision, note)
        if data.decision == "accept":
            _publish(
                db,
                user,
                referral,
                "referral.accepted",
                ReferralAccepted,
                priority=referral.priority,
                conditions=list(referral.conditions),
                accepted_at=now,
                baseline=_baseline_scores(referral.baseline),
                received_at=as_utc(referral.received_at),
            )
        elif data.decision == "reject":
            _publish(db, user, referral, "referral.rejected", ReferralRejected, rejected_at=now)
        else:
            _publish(
                db,
                user,
                referral,
                "referral.info_requested",
                ReferralInfoRequested,
                requested_at=now,
            )
        audit.record(
            db,
            AuditAction.update,
            "ServiceRequest",
            str(referral.id),
            referral.patient_id,
            detail=f"triage: {data.decision}",
        )
        db.commit()
        return _referral_read(db, referral, user, detail=True)

    @post(
        "/{referral_id:uuid}/info",
        operation_id="answerReferralQuestion",
        status_code=200,
        summary="The referrer answers the triage question; the referral returns to the inbox",
        guards=[requires(*CLINICAL_ROLES)],
        sync_to_thread=True,
    )
    def provide_info(
        self,
        referral_id: FromPath[UUID],
        data: JSONBody[InfoResponse],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        referral = _referral_for(db, user, referral_id, lock=True)
        if not domain.can_act_as_referrer(user.role, user.id, referral.created_by):
            raise PermissionDeniedException("only the referrer or the MDT can answer")
        now = _transition(db, user, referral, "provide-info", data.answer)
        _publish(
            db, user, referral, "referral.info_provided", ReferralInfoProvided, provided_at=now
        )
        audit.record(
            db,
            AuditAction.update,
            "ServiceRequest",
            str(referral.id),
            referral.patient_id,
            detail="information provided",
        )
        db.commit()
        return _referral_read(db, referral, user, detail=True)

    @post(
        "/{referral_id:uuid}/cancel",
        operation_id="cancelReferral",
        status_code=200,
        guards=[requires(*CLINICAL_ROLES)],
        sync_to_thread=True,
    )
    def cancel(
        self,
        referral_id: FromPath[UUID],
        data: JSONBody[Cancellation],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReferralRead:
        referral = _referral_for(db, user, referral_id, lock=True)
        if not domain.can_act_as_referrer(user.role, user.id, referral.created_by):
            raise PermissionDeniedException("only the referrer or the MDT can cancel a referral")
        previous = referral.status
        now = _transition(db, user, referral, "cancel", data.reason)
        _publish(
            db,
            user,
            referral,
            "referral.cancelled",
            ReferralCancelled,
            previous_status=previous,
            cancelled_at=now,
        )
        audit.record(
            db,
            AuditAction.update,
            "ServiceRequest",
            str(referral.id),
            referral.patient_id,
            detail="cancelled",
        )
        db.commit()
        return _referral_read(db, referral, user, detail=True)


def _transition(
    db: Session, user: User, referral: Referral, action: str, note: str | None
) -> datetime:
    try:
        new_status = domain.next_status(referral.status, action)
    except domain.IllegalTransition as error:
        raise Conflict(
            f"the referral is {error.current}; '{action}' is not allowed from that status",
            current_status=error.current,
        ) from None
    now = datetime.now(UTC)
    db.add(
        ReferralTransition(
            referral_id=referral.id,
            action=action,
            from_status=referral.status,
            to_status=new_status,
            by_user=user.id,
            by_role=user.role.value,
            at=now,
            note=note,
        )
    )
    referral.status = new_status
    referral.status_changed_at = now
    db.add(referral)
    return now


def _referral_for(db: Session, user: User, referral_id: UUID, *, lock: bool = False) -> Referral:
    # The row lock makes two triagers of one referral take turns; the second then sees
    # the first one's status and gets a 409 instead of a second transition.
    referral = db.get(Referral, referral_id, with_for_update=lock)
    if referral is None:
        raise NotFoundException(f"no referral {referral_id}")
    if not domain.can_see_referral(user.role, user.id, referral.target, referral.created_by):
        raise PermissionDeniedException("this referral is not for your team and not yours")
    return referral


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


def _baseline_scores(stored: dict[str, Any] | None) -> BaselineScores | None:
    if stored is None:
        return None
    items = stored.get("phq9_items")
    return BaselineScores(
        phq9_total=stored.get("phq9_total"),
        phq9_item9=items[8] if items else None,
        pain_nrs=stored.get("pain_nrs"),
    )


def _waiting(referral: Referral, now: datetime) -> Waiting:
    standard = WAITING_POLICY.standard_for(referral.target, referral.priority, referral.status)
    received_at = as_utc(referral.received_at)
    stopped = referral.status in domain.CLOCK_STOPPED
    until = as_utc(referral.status_changed_at or now) if stopped else now
    elapsed = domain.waiting_days(received_at, until, standard)
    return Waiting(
        days_waiting=max((until.date() - received_at.date()).days, 0),
        standard=WaitingStandardRead(
            name=standard.name,
            unit="working days" if standard.working_days else "days",
            at_risk_after=standard.at_risk_after_days,
            breach_after=standard.breach_after_days,
            source=standard.source,
        ),
        elapsed=elapsed,
        state=domain.waiting_state(elapsed, standard),  # type: ignore[arg-type]
        clock_stopped=stopped,
    )


def _referral_read(
    db: Session,
    referral: Referral,
    user: User,
    *,
    detail: bool = False,
    now: datetime | None = None,
    patient: Patient | None = None,
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
        received_at=as_utc(referral.received_at),
        status_changed_at=as_utc(referral.status_changed_at or referral.received_at),
        waiting=_waiting(referral, now or datetime.now(UTC)),
        created_by=referral.created_by,
    )
    if clinical:
        read.reason = referral.reason
        if referral.baseline is not None:
            read.baseline = msgspec.convert(referral.baseline, BaselineRead)
        read.prior_treatments = msgspec.convert(referral.prior_treatments, list[PriorTreatment])
    if clinical:
        patient = patient or db.get(Patient, referral.patient_id)
        if patient is not None:
            read.patient = PatientSummary(
                given_name=patient.given_name,
                family_name=patient.family_name,
                birth_date=patient.birth_date,
            )
    if detail:
        read.history = [
            TransitionRead(
                action=t.action,
                from_status=t.from_status,
                to_status=t.to_status,
                by_user=t.by_user,
                by_role=t.by_role,
                at=as_utc(t.at),
                note=t.note if clinical else None,
            )
            for t in db.exec(
                select(ReferralTransition)
                .where(ReferralTransition.referral_id == referral.id)
                .order_by(col(ReferralTransition.id))
            ).all()
        ]
        if clinical:
            read.attachments = [
                AttachmentRead(title=n.title, text=n.text, by_user=n.by_user, at=as_utc(n.at))
                for n in db.exec(
                    select(ReferralNote)
                    .where(ReferralNote.referral_id == referral.id)
                    .order_by(col(ReferralNote.id))
                ).all()
            ]
    return read
