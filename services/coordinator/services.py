"""The coordinator's commands: pathways, MDT reviews, the worklist and alerts.

Each is ``(command, uow, user) -> result`` as in every service; the API's routes and
the dashboard's pages call the same ones. A person's action (a review, handling an
alert) is a coordinator event: published to the outbox and folded into the pathway in
the same unit of work, so the answer shows it and a rebuild sees it like any other.
Two are async because they ask the referrals service, as the person, over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import msgspec
from litestar import Request
from litestar.exceptions import NotFoundException, PermissionDeniedException
from sqlmodel import col

from services.coordinator import reports, repository
from services.coordinator.domain import URGENT, Pathway, Stage
from services.coordinator.fhir import pathway_bundle
from services.coordinator.handlers import fold_own_event, stored_events
from services.coordinator.models import AlertAction, MdtReview, PathwayAlert, PathwayRow
from services.coordinator.redaction import bundle_for_admin, for_admin
from services.coordinator.schemas import (
    NameStatus,
    PathwayCounts,
    ReviewReferralRead,
    ReviewRequest,
)
from shared.audit import AuditAction
from shared.auth import Role, User
from shared.client import ApiProblem
from shared.clock import now as clinic_now
from shared.db import load_or_404, lock_for_transaction
from shared.domain import RuleBroken
from shared.errors import Conflict, FieldProblem
from shared.events import Subject
from shared.events.catalogue import (
    Event,
    MdtReviewRecorded,
    PathwayAlertAcknowledged,
    PathwayAlertHandled,
    PathwayAlertResolved,
    ReferralTarget,
)
from shared.policy import clinical_policy
from shared.uow import UnitOfWork
from shared.web import service_client

# A clinician sees the pathways their team is part of (as in the referrals service:
# psychologists the psychology ones, infusion clinicians the infusion ones); the MDT and
# admins see all.
TEAM_OF_ROLE = {Role.psychologist: "psychology", Role.infusion_clinician: "ketamine-infusion"}
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
TEAMS: tuple[str, ...] = ReferralTarget.__args__  # type: ignore[attr-defined]
# Roles that may see names, if the referrals service agrees for this patient.
NAME_READERS = (Role.mdt, Role.psychologist, Role.infusion_clinician)
HANDLED: dict[str, type[PathwayAlertHandled]] = {
    "acknowledged": PathwayAlertAcknowledged,
    "resolved": PathwayAlertResolved,
}


def team_of(user: User) -> str | None:
    return TEAM_OF_ROLE.get(user.role)


def visible_pathway(uow: UnitOfWork, user: User, patient_id: UUID) -> PathwayRow:
    row = repository.pathway(uow.session, patient_id)
    check_visible(user, row.teams if row is not None else None)
    assert row is not None
    return row


def check_visible(user: User, teams: str | None) -> None:
    """A pathway exists (it has `teams`) and has a referral to the reader's team."""
    if teams is None:
        raise NotFoundException("the coordinator has no events for this patient")
    team = team_of(user)
    if team is not None and f",{team}," not in teams:
        raise PermissionDeniedException("this pathway has no referral to your team")


# --- pathways ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PathwayQuery:
    stage: str | None = None
    team: str | None = None
    alert_kind: str | None = None
    severity: str | None = None
    waiting_over_days: int | None = None
    cursor: str | None = None
    limit: int = 50
    breached: bool = False


def _pathways_matching(query: PathwayQuery, user: User) -> Any:
    statement = repository.pathways(team_of(user))
    if query.stage is not None:
        statement = statement.where(PathwayRow.stage == query.stage)
    if query.team is not None:
        statement = statement.where(repository.in_team(query.team))
    if query.waiting_over_days is not None:
        cutoff = clinic_now() - timedelta(days=query.waiting_over_days)
        statement = statement.where(col(PathwayRow.stage_since) < cutoff)
    if query.alert_kind is not None or query.severity is not None:
        wanted = repository.open_alerts_with_kind_or_severity(query.alert_kind, query.severity)
        statement = statement.where(col(PathwayRow.patient_id).in_(wanted))
    if query.breached:
        breached = repository.open_alerts_with_kind_or_severity("waiting-breach", None)
        statement = statement.where(col(PathwayRow.patient_id).in_(breached))
    return statement


def list_pathways(
    query: PathwayQuery, uow: UnitOfWork, user: User
) -> tuple[list[PathwayRow], dict[UUID, repository.OpenAlerts], str | None]:
    """Pathways longest in their stage first, with their open alerts."""
    statement = _pathways_matching(query, user)
    with uow:
        rows, next_cursor = repository.PATHWAY_ORDER.page(
            uow.session, statement, query.cursor, query.limit
        )
        open_alerts = repository.open_alerts_of(uow.session, [row.patient_id for row in rows])
        detail = f"pathway list of {len(rows)}"
        uow.audit(AuditAction.read, "CarePlan", None, None, detail=detail)
        uow.commit()
    return rows, open_alerts, next_cursor


def count_pathways(query: PathwayQuery, uow: UnitOfWork, user: User) -> PathwayCounts:
    """The whole filtered status at once: patients by stage, open alerts by severity and
    breached waits (figures, no patient: audited as a read of the list)."""
    statement = _pathways_matching(query, user)
    with uow:
        by_stage = repository.stage_counts(uow.session, statement)
        by_severity, breached = repository.open_alert_counts(uow.session, statement)
        uow.audit(AuditAction.read, "CarePlan", None, None, detail="pathway counts")
        uow.commit()
    return PathwayCounts(
        patients=sum(by_stage.values()),
        by_stage=by_stage,
        open_alerts_by_severity=by_severity,
        waits_breached=breached,
    )


def pathway_document(patient_id: UUID, uow: UnitOfWork, user: User) -> bytes:
    """One patient's pathway as folded, in JSON, audited as a read. The stored text goes
    out as it is, not decoded and encoded again (a pathway of 100 events is about 33 KB,
    and that was a sixth of a read's CPU); an admin's copy is decoded to be redacted."""
    with uow:
        found = repository.pathway_json(uow.session, patient_id)
        check_visible(user, found[0] if found is not None else None)
        assert found is not None
        uow.audit(AuditAction.read, "CarePlan", str(patient_id), patient_id)
        uow.commit()
    if user.role == Role.admin:
        pathway = msgspec.json.decode(found[1], type=Pathway, strict=False)
        return msgspec.json.encode(for_admin(pathway))
    return found[1].encode()


def export_fhir(patient_id: UUID, uow: UnitOfWork, user: User) -> dict[str, Any]:
    with uow:
        row = visible_pathway(uow, user, patient_id)
        pathway = msgspec.convert(row.document, Pathway, strict=False)
        if user.role == Role.admin:
            pathway = for_admin(pathway)
        bundle = pathway_bundle(pathway, stored_events(uow.session, patient_id))
        if user.role == Role.admin:
            bundle = bundle_for_admin(bundle)
        uow.audit(AuditAction.read, "Bundle", str(patient_id), patient_id, detail="fhir export")
        uow.commit()
    return bundle


def record_stream_opened(uow: UnitOfWork) -> None:
    with uow:
        uow.audit(AuditAction.read, "CarePlan", None, None, detail="pathway stream opened")
        uow.commit()


async def patient_name(
    request: Request[Any, Any, Any], user: User, patient_id: UUID
) -> tuple[str | None, NameStatus]:
    """Ask the referrals service, as this reader, for the name; it decides and audits.
    Only the name is asked for (its names call), not the patient's record with the NHS
    number and birth date: the coordinator shows the name and nothing else."""
    if user.role not in NAME_READERS:
        return None, "not-asked"
    try:
        async with service_client(request, "referrals") as referrals:
            names = await referrals.patient_names([patient_id])
    except ApiProblem as refused:
        return None, "not-permitted" if refused.status in (401, 403) else "unavailable"
    except httpx.HTTPError:
        return None, "unavailable"
    for patient in names:  # the referrals service leaves out a patient this reader may not see
        if patient.id == patient_id:
            return f"{patient.given_name} {patient.family_name}", "shown"
    return None, "not-permitted"


# --- MDT reviews -------------------------------------------------------------------------


def check_review(data: ReviewRequest) -> None:
    if data.decision == "refer-psychology" and data.referral is None:
        raise FieldProblem("referral", "a decision to refer needs the referral's reason")
    if data.decision != "refer-psychology" and data.referral is not None:
        raise FieldProblem("referral", "only a decision to refer makes a referral")


def record_review(patient_id: UUID, data: ReviewRequest, uow: UnitOfWork, user: User) -> MdtReview:
    """The review and its decision, one write with its event (issue 16). A decision to
    refer names the referral's id now; the referrals service makes that referral when it
    consumes the event, so a retried or redelivered review makes it once."""
    check_review(data)
    with uow:
        visible_pathway(uow, user, patient_id)
        lock_for_transaction(uow.session, patient_id)
        referral_id = uuid4() if data.referral is not None else None
        review = MdtReview(
            id=uuid4(),
            patient_id=patient_id,
            reviewed_at=clinic_now(),
            decision=data.decision,
            attendees=list(data.attendees),
            notes=data.notes,
            reviewed_by=user.id,
            referral_id=referral_id,
            referral_request=msgspec.to_builtins(data.referral) if data.referral else None,
        )
        uow.session.add(review)
        event = MdtReviewRecorded(
            review_id=review.id,
            decision=data.decision,
            attendees=review.attendees,
            reviewed_by=user.id,
            reviewed_at=review.reviewed_at,
            referral_id=referral_id,
        )
        _record(uow, event, patient_id, Subject(type="mdt_review", id=str(review.id)))
        uow.audit(AuditAction.create, "Encounter", str(review.id), patient_id, detail=data.decision)
        uow.commit()
    return review


def review_referral(review_id: UUID, uow: UnitOfWork, user: User) -> ReviewReferralRead:
    """The referral a review decided on, for the referrals service to make it."""
    with uow:
        review = load_or_404(uow.session, MdtReview, review_id, "MDT review")
        if review.referral_request is None or review.referral_id is None:
            raise NotFoundException("this review made no referral")
        uow.commit_read("Encounter", str(review.id), review.patient_id, detail="its referral")
    return msgspec.convert(
        {
            **review.referral_request,
            "referral_id": review.referral_id,
            "review_id": review.id,
            "patient_id": review.patient_id,
            "reviewed_by": review.reviewed_by,
        },
        ReviewReferralRead,
    )


def list_reviews(patient_id: UUID, uow: UnitOfWork, user: User) -> list[MdtReview]:
    with uow:
        visible_pathway(uow, user, patient_id)
        reviews = list(repository.reviews_of(uow.session, patient_id))
        uow.audit(AuditAction.read, "Encounter", None, patient_id, detail="mdt reviews")
        uow.commit()
    return reviews


def worklist(
    cursor: str | None, limit: int, uow: UnitOfWork
) -> tuple[list[PathwayRow], str | None]:
    """Patients due for MDT review: most urgent reason first, then soonest due."""
    with uow:
        rows, next_cursor = repository.WORKLIST_ORDER.page(
            uow.session, repository.due_for_review(), cursor, limit
        )
        uow.audit(AuditAction.read, "CarePlan", None, None, detail=f"worklist of {len(rows)}")
        uow.commit()
    return rows, next_cursor


# --- reports -----------------------------------------------------------------------------


def waits_report(weeks: int, uow: UnitOfWork, user: User) -> list[reports.WaitsWeek]:
    """Waiting times by team and week of referral over the last `weeks` weeks: figures
    only, read from the pathways the user may see (every one of them, at read time)."""
    now = clinic_now()
    first_week = reports.week_of(now) - timedelta(weeks=weeks - 1)
    with uow:
        rows = uow.session.exec(repository.pathways(team_of(user))).all()
        pathways = [msgspec.convert(row.document, Pathway, strict=False) for row in rows]
        detail = f"waits report over {len(rows)} pathways"
        uow.audit(AuditAction.read, "CarePlan", None, None, detail=detail)
        uow.commit()
    return reports.waits_by_week(pathways, first_week, now, clinical_policy())


# --- alerts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertQuery:
    status: str | None = "open"
    kind: str | None = None
    severity: str | None = None
    owner_role: str | None = None
    cursor: str | None = None
    limit: int = 50


def list_alerts(
    query: AlertQuery, uow: UnitOfWork, user: User
) -> tuple[list[PathwayAlert], str | None]:
    """Alerts across the pathways the user may see: most severe first, then soonest due."""
    statement = repository.alerts(team_of(user))
    for name in ("status", "kind", "severity", "owner_role"):
        value = getattr(query, name)
        if value is not None:
            statement = statement.where(getattr(PathwayAlert, name) == value)
    with uow:
        rows, next_cursor = repository.ALERT_ORDER.page(
            uow.session, statement, query.cursor, query.limit
        )
        uow.audit(AuditAction.read, "Flag", None, None, detail=f"alert list of {len(rows)}")
        uow.commit()
    return rows, next_cursor


def handle_alert(
    alert_id: str, status: str, note: str | None, uow: UnitOfWork, user: User
) -> PathwayAlert:
    """Acknowledge or resolve an alert: the person's action is a coordinator event."""
    with uow:
        found = repository.alert(uow.session, alert_id)
        if found is None:
            raise NotFoundException(f"no alert {alert_id}")
        visible_pathway(uow, user, found.patient_id)
        lock_for_transaction(uow.session, found.patient_id)
        alert = repository.alert(uow.session, alert_id, fresh=True)
        if alert is None:  # the pathway was re-folded without it meanwhile
            raise NotFoundException(f"no alert {alert_id}")
        if alert.status == "resolved" or alert.status == status:
            raise Conflict(f"the alert is already {alert.status}", current_status=alert.status)
        if status == "resolved":
            check_resolution(alert, user, note)
        now = clinic_now()
        uow.session.add(_action(alert, status, user, note, now))
        event = HANDLED[status](
            alert_id=alert_id,
            kind=alert.kind,
            by_user=user.id,
            by_role=user.role.value,
            handled_at=now,
        )
        _record(uow, event, alert.patient_id, Subject(type="alert", id=alert_id))
        uow.audit(AuditAction.update, "Flag", alert_id, alert.patient_id, detail=status)
        uow.commit()
        updated = repository.alert(uow.session, alert_id)
        assert updated is not None
    return updated


def check_resolution(alert: PathwayAlert, user: User, note: str | None) -> None:
    """Issue 12: resolving an urgent (or escalated) alert needs a note saying what was
    done, and a person of the role that owns it; anyone on the teams may acknowledge."""
    if alert.severity not in URGENT:
        return
    if user.role.value != alert.owner_role:
        raise RuleBroken(
            "role",
            f"an urgent {alert.kind} alert is resolved by its owner ({alert.owner_role}); "
            "acknowledge it instead, or ask the owner to resolve it",
        )
    if note is None or not note.strip():
        raise RuleBroken(
            "note",
            "resolving an urgent alert needs a note saying what was done (a non-empty note)",
        )


def _action(
    alert: PathwayAlert, status: str, user: User, note: str | None, now: datetime
) -> AlertAction:
    return AlertAction(
        alert_id=alert.id,
        patient_id=alert.patient_id,
        action=status,
        by_user=user.id,
        by_role=user.role.value,
        note=note,
        at=now,
    )


def _record(uow: UnitOfWork, event: Event, patient_id: UUID, subject: Subject) -> None:
    envelope = uow.publish(event, patient_id=patient_id, subject=subject)
    fold_own_event(uow.session, envelope)
