"""HTTP controllers of the coordinator: pathways, alerts, MDT reviews and worklist."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

import httpx
import msgspec
from litestar import Controller, Request, get, post
from litestar.concurrency import sync_to_thread
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy import and_, func, or_, true
from sqlmodel import Session, col, select

from services.coordinator.domain import SEVERITY_RANK, Pathway, ReviewDue, Stage
from services.coordinator.fhir import pathway_bundle
from services.coordinator.handlers import record_own_event, stored_events
from services.coordinator.models import AlertAction, MdtReview, PathwayAlert, PathwayRow
from services.coordinator.schemas import (
    AlertHandling,
    AlertPage,
    AlertRow,
    NameStatus,
    PathwayPage,
    PathwayRead,
    PathwaySummary,
    ReviewRead,
    ReviewReferral,
    ReviewRequest,
    Worklist,
    WorklistItem,
)
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, User, requires
from shared.client import ApiProblem
from shared.db import lock_for_transaction
from shared.errors import Conflict, FieldProblem, UpstreamProblem
from shared.events import Actor, Subject, new_event
from shared.events.catalogue import MdtReviewRecorded, PathwayAlertHandled
from shared.observability import current_correlation_id
from shared.runtime import ServiceRuntime
from shared.tables import as_utc
from shared.web import service_client

READERS = (Role.mdt, Role.psychologist, Role.infusion_clinician, Role.admin)
STAGES = Stage.__args__  # type: ignore[attr-defined]
TEAMS = ("ketamine-infusion", "psychology", "pain-mdt")
MAX_PAGE = 200


# A clinician sees the pathways their team is part of (as in the referrals service:
# psychologists the psychology ones, infusion clinicians the infusion ones); the MDT and
# admins see all.
TEAM_OF_ROLE = {Role.psychologist: "psychology", Role.infusion_clinician: "ketamine-infusion"}


def _team_of(user: User) -> str | None:
    return TEAM_OF_ROLE.get(user.role)


def _in_team(team: str | None) -> Any:
    return col(PathwayRow.teams).contains(f",{team},") if team else true()


def _check_team(row: PathwayRow, user: User) -> None:
    team = _team_of(user)
    if team is not None and f",{team}," not in row.teams:
        raise PermissionDeniedException("this pathway has no referral to your team")


def _encode(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def _decode(cursor: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise FieldProblem("cursor", "is not a cursor this list gave out") from None
    if not isinstance(parts, list) or len(parts) != 2:
        raise FieldProblem("cursor", "is not a cursor this list gave out")
    return parts


def _parse(cursor: str, read: Any) -> Any:
    try:
        return read(_decode(cursor))
    except (ValueError, TypeError, IndexError, KeyError, OverflowError):
        raise FieldProblem("cursor", "is not a cursor this list gave out") from None


def _one_of(field: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise FieldProblem(field, f"must be one of: {', '.join(allowed)}")


class PathwayController(Controller):
    path = "/api/pathways"
    tags = ["pathways"]
    opt = {"resource": "CarePlan"}
    guards = [requires(*READERS)]

    @get(
        operation_id="listPathways",
        sync_to_thread=True,
        summary="Pathway status: longest in their stage first, filtered, in cursor pages",
    )
    def list_pathways(
        self,
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
        stage: FromQuery[str | None] = None,
        team: FromQuery[str | None] = None,
        alert_kind: FromQuery[str | None] = None,
        severity: FromQuery[str | None] = None,
        waiting_over_days: Annotated[int | None, QueryParameter(ge=0)] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    ) -> PathwayPage:
        _one_of("stage", stage, STAGES)
        _one_of("team", team, TEAMS)
        _one_of("severity", severity, tuple(SEVERITY_RANK))
        statement = select(PathwayRow).where(_in_team(_team_of(user)))
        if stage is not None:
            statement = statement.where(PathwayRow.stage == stage)
        if team is not None:
            statement = statement.where(col(PathwayRow.teams).contains(f",{team},"))
        if waiting_over_days is not None:
            cutoff = datetime.now(UTC) - timedelta(days=waiting_over_days)
            statement = statement.where(col(PathwayRow.stage_since) < cutoff)
        if alert_kind is not None or severity is not None:
            alerts = select(PathwayAlert.patient_id).where(PathwayAlert.status != "resolved")
            if alert_kind is not None:
                alerts = alerts.where(PathwayAlert.kind == alert_kind)
            if severity is not None:
                alerts = alerts.where(PathwayAlert.severity == severity)
            statement = statement.where(col(PathwayRow.patient_id).in_(alerts))
        if cursor is not None:
            since_at, last_id = _parse(cursor, lambda p: (datetime.fromisoformat(p[0]), UUID(p[1])))
            statement = statement.where(
                or_(
                    col(PathwayRow.stage_since) > since_at,
                    and_(
                        col(PathwayRow.stage_since) == since_at,
                        col(PathwayRow.patient_id) > last_id,
                    ),
                )
            )
        rows = db.exec(
            statement.order_by(col(PathwayRow.stage_since), col(PathwayRow.patient_id)).limit(
                limit + 1
            )
        ).all()
        page, more = rows[:limit], len(rows) > limit
        counts = _severity_counts(db, [row.patient_id for row in page])
        now = datetime.now(UTC)
        items = [_summary(row, counts, now) for row in page]
        audit.record(
            db, AuditAction.read, "CarePlan", None, None, detail=f"pathway list of {len(items)}"
        )
        db.commit()
        last_row = page[-1] if more and page else None
        next_cursor = (
            _encode(as_utc(last_row.stage_since).isoformat(), str(last_row.patient_id))
            if last_row
            else None
        )
        return PathwayPage(items=items, next_cursor=next_cursor)

    @get(
        "/stream",
        operation_id="streamPathwayChanges",
        summary="Server-sent events: each pathway's new summary as it changes",
        description=(
            "Each `pathway` event's data is a pathway summary (as in the list; no names) and "
            "its id a cursor: a client that reconnects with `Last-Event-ID` (EventSource "
            "does) gets what changed meanwhile. The stream ends after a few minutes and the "
            "browser reconnects by itself, so no connection outlives a restart for long."
        ),
    )
    async def stream(
        self,
        runtime: NamedDependency[ServiceRuntime],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        since = datetime.now(UTC) - STREAM_OVERLAP
        if last_event_id:
            since = _parse(last_event_id, lambda p: datetime.fromisoformat(p[0]))
        await sync_to_thread(_audited, db, audit, "pathway stream opened")
        changes = _pathway_changes(runtime, since, _team_of(user))
        return ServerSentEvent(changes, retry_duration=2000)

    @get(
        "/{patient_id:uuid}",
        operation_id="readPathway",
        summary="One patient's pathway across referrals, infusions and therapy",
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        patient_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> PathwayRead:
        document = await sync_to_thread(_pathway_document, db, user, audit, patient_id)
        name, status = await _patient_name(request, user, patient_id)
        return msgspec.convert(
            {**document, "patient_name": name, "name_status": status}, PathwayRead
        )

    @get(
        "/{patient_id:uuid}/fhir",
        operation_id="exportPathwayFhir",
        sync_to_thread=True,
        media_type="application/fhir+json",
        opt={"resource": "Bundle"},
        summary="One patient's pathway as a FHIR R4 Bundle (collection)",
        description=(
            "Patient (an id only: no names, birth dates or NHS numbers), a ServiceRequest "
            "and a Task per referral, an EpisodeOfCare for the infusion course and the "
            "therapy episode, the pathway's CarePlan, therapy Appointments, a Procedure per "
            "infusion, Observations for scores and out-of-range vitals, a "
            "QuestionnaireResponse per PHQ-9 and GAD-7, and a Flag per alert."
        ),
    )
    def export_fhir(
        self,
        patient_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> dict[str, Any]:
        row = _visible_pathway(db, user, patient_id)
        pathway = msgspec.convert(row.document, Pathway, strict=False)
        bundle = pathway_bundle(pathway, stored_events(db, patient_id))
        audit.record(
            db, AuditAction.read, "Bundle", str(patient_id), patient_id, detail="fhir export"
        )
        db.commit()
        return bundle

    @post(
        "/{patient_id:uuid}/reviews",
        operation_id="recordMdtReview",
        guards=[requires(Role.mdt)],
        summary="Record the MDT's review; a decision to refer makes the referral",
        description=(
            "`refer-psychology` needs `referral`: the coordinator asks the referrals service "
            "to create a psychology referral on the reviewing clinician's behalf (with their "
            "own token) before the review is recorded, so a refused referral records nothing."
        ),
    )
    async def record_review(
        self,
        request: Request[Any, Any, Any],
        patient_id: FromPath[UUID],
        data: JSONBody[ReviewRequest],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> ReviewRead:
        if data.decision == "refer-psychology" and data.referral is None:
            raise FieldProblem("referral", "a decision to refer needs the referral's reason")
        if data.decision != "refer-psychology" and data.referral is not None:
            raise FieldProblem("referral", "only a decision to refer makes a referral")
        await sync_to_thread(_pathway_document, db, user, None, patient_id)
        referral_id = None
        if data.referral is not None:
            referral_id = await _refer_to_psychology(request, user, patient_id, data.referral)
        return await sync_to_thread(_record_review, db, user, audit, patient_id, data, referral_id)

    @get(
        "/{patient_id:uuid}/reviews",
        operation_id="listMdtReviews",
        guards=[requires(Role.mdt, Role.psychologist, Role.infusion_clinician)],
        sync_to_thread=True,
        summary="The MDT's reviews of this pathway, newest first, with their notes",
    )
    def list_reviews(
        self,
        patient_id: FromPath[UUID],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> list[ReviewRead]:
        _visible_pathway(db, user, patient_id)
        rows = db.exec(
            select(MdtReview)
            .where(MdtReview.patient_id == patient_id)
            .order_by(col(MdtReview.reviewed_at).desc())
        ).all()
        audit.record(db, AuditAction.read, "Encounter", None, patient_id, detail="mdt reviews")
        db.commit()
        return [_review_read(row) for row in rows]


# How often the stream looks for changes, how far back it looks again (a transaction
# that stamped its row earlier may commit later), and how long one stream lasts.
STREAM_POLL = timedelta(seconds=1)
STREAM_OVERLAP = timedelta(seconds=10)
STREAM_LIFETIME = timedelta(minutes=5)
HEARTBEAT = timedelta(seconds=15)


async def _pathway_changes(
    runtime: ServiceRuntime, since: datetime, team: str | None = None
) -> AsyncGenerator[ServerSentEventMessage, None]:
    sent: dict[tuple[UUID, datetime], datetime] = {}  # (patient, stamp) → its stamp
    started = last_beat = datetime.now(UTC)
    while datetime.now(UTC) - started < STREAM_LIFETIME:
        after = since
        while True:  # page through a burst of changes
            page = await sync_to_thread(_changed_since, runtime, after, team)
            for summary, stamp in page:
                key = (summary.patient_id, stamp)
                if key in sent:
                    continue
                sent[key] = stamp
                yield ServerSentEventMessage(
                    event="pathway",
                    data=msgspec.json.encode(summary).decode(),
                    id=_encode(stamp.isoformat()),
                )
            if len(page) < MAX_PAGE or page[-1][1] == after:
                break
            after = page[-1][1]
        if sent:
            newest = max(sent.values())
            since = newest - STREAM_OVERLAP
            sent = {key: stamp for key, stamp in sent.items() if stamp >= since}
        if datetime.now(UTC) - last_beat >= HEARTBEAT:
            last_beat = datetime.now(UTC)
            yield ServerSentEventMessage(comment="still here")
        await asyncio.sleep(STREAM_POLL.total_seconds())


def _changed_since(
    runtime: ServiceRuntime, since: datetime, team: str | None
) -> list[tuple[PathwaySummary, datetime]]:
    with runtime.sessions() as session:
        rows = session.exec(
            select(PathwayRow)
            .where(col(PathwayRow.updated_at) >= since, _in_team(team))
            .order_by(col(PathwayRow.updated_at))
            .limit(MAX_PAGE)
        ).all()
        counts = _severity_counts(session, [row.patient_id for row in rows])
        now = datetime.now(UTC)
        return [(_summary(row, counts, now), as_utc(row.updated_at)) for row in rows]


def _audited(db: Session, audit: AccessTrail, detail: str) -> None:
    audit.record(db, AuditAction.read, "CarePlan", None, None, detail=detail)
    db.commit()


def _pathway_document(
    db: Session, user: User, audit: AccessTrail | None, patient_id: UUID
) -> dict[str, Any]:
    row = _visible_pathway(db, user, patient_id)
    if audit is not None:
        audit.record(db, AuditAction.read, "CarePlan", str(patient_id), patient_id)
        db.commit()
    return row.document


def _visible_pathway(db: Session, user: User, patient_id: UUID) -> PathwayRow:
    row = db.get(PathwayRow, patient_id)
    if row is None:
        raise NotFoundException("the coordinator has no events for this patient")
    _check_team(row, user)
    return row


# Roles that may see names, if the referrals service agrees for this patient.
NAME_READERS = (Role.mdt, Role.psychologist, Role.infusion_clinician)


async def _patient_name(
    request: Request[Any, Any, Any], user: User, patient_id: UUID
) -> tuple[str | None, NameStatus]:
    """Ask the referrals service, as this reader, for the name; it decides and audits."""
    if user.role not in NAME_READERS:
        return None, "not-asked"
    try:
        async with service_client(request, "referrals") as referrals:
            patient = await referrals.patient_name(patient_id)
    except ApiProblem as refused:
        return None, "not-permitted" if refused.status in (401, 403) else "unavailable"
    except httpx.HTTPError:
        return None, "unavailable"
    return f"{patient.given_name} {patient.family_name}", "shown"


async def _refer_to_psychology(
    request: Request[Any, Any, Any], user: User, patient_id: UUID, referral: ReviewReferral
) -> UUID:
    body = {
        "patient_id": str(patient_id),
        "target": "psychology",
        "priority": referral.priority,
        "reason": referral.reason,
        "conditions": referral.conditions,
        "referrer": {"name": user.id, "role": "MDT", "organisation": referral.organisation},
    }
    try:
        async with service_client(request, "referrals") as referrals:
            created = await referrals.create_referral(**body)
    except ApiProblem as refused:
        raise UpstreamProblem(
            refused.status,
            f"the referrals service refused the referral: {refused.body.get('detail', '')}",
            under="referral",
            errors=refused.body.get("errors"),
        ) from None
    except httpx.HTTPError:
        raise UpstreamProblem(
            503,
            "the referrals service did not answer; nothing was recorded",
            under="referral",
            errors=None,
        ) from None
    return created.id


def _record_review(
    db: Session,
    user: User,
    audit: AccessTrail,
    patient_id: UUID,
    data: ReviewRequest,
    referral_id: UUID | None,
) -> ReviewRead:
    lock_for_transaction(db, patient_id)
    review = MdtReview(
        id=uuid4(),
        patient_id=patient_id,
        reviewed_at=datetime.now(UTC),
        decision=data.decision,
        attendees=list(data.attendees),
        notes=data.notes,
        reviewed_by=user.id,
        referral_id=referral_id,
    )
    db.add(review)
    record_own_event(
        db,
        new_event(
            type="mdt.review.recorded",
            data=MdtReviewRecorded(
                review_id=review.id,
                decision=data.decision,
                attendees=review.attendees,
                reviewed_by=user.id,
                reviewed_at=review.reviewed_at,
                referral_id=referral_id,
            ),
            producer="coordinator",
            patient_id=patient_id,
            subject=Subject(type="mdt_review", id=str(review.id)),
            actor=Actor(user_id=user.id, role=user.role.value),
            correlation_id=current_correlation_id(),
        ),
    )
    audit.record(
        db, AuditAction.create, "Encounter", str(review.id), patient_id, detail=data.decision
    )
    db.commit()
    return _review_read(review)


def _review_read(row: MdtReview) -> ReviewRead:
    return ReviewRead(
        id=str(row.id),
        patient_id=row.patient_id,
        reviewed_at=as_utc(row.reviewed_at),
        decision=row.decision,
        attendees=list(row.attendees),
        reviewed_by=row.reviewed_by,
        referral_id=str(row.referral_id) if row.referral_id else None,
        notes=row.notes,
    )


class WorklistController(Controller):
    path = "/api/mdt/worklist"
    tags = ["mdt"]
    opt = {"resource": "CarePlan"}
    guards = [requires(Role.mdt)]

    @get(
        operation_id="mdtWorklist",
        sync_to_thread=True,
        summary="Patients due for MDT review: most urgent reason first, then soonest due",
    )
    def worklist(
        self,
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    ) -> Worklist:
        statement = select(PathwayRow).where(col(PathwayRow.review_due).is_not(None))
        if cursor is not None:
            rank, due, last = _parse(
                cursor, lambda p: (int(p[0]), datetime.fromisoformat(p[1]), UUID(p[2]))
            )
            statement = statement.where(
                or_(
                    col(PathwayRow.review_rank) > rank,
                    and_(col(PathwayRow.review_rank) == rank, col(PathwayRow.review_due) > due),
                    and_(
                        col(PathwayRow.review_rank) == rank,
                        col(PathwayRow.review_due) == due,
                        col(PathwayRow.patient_id) > last,
                    ),
                )
            )
        rows = db.exec(
            statement.order_by(
                col(PathwayRow.review_rank), col(PathwayRow.review_due), col(PathwayRow.patient_id)
            ).limit(limit + 1)
        ).all()
        page, more = rows[:limit], len(rows) > limit
        now = datetime.now(UTC)
        items = []
        for row in page:
            review = msgspec.convert(row.document["review_due"], ReviewDue, strict=False)
            items.append(
                WorklistItem(
                    patient_id=row.patient_id,
                    stage=row.stage,
                    review_due=review.due,
                    overdue=review.due < now,
                    severity=review.severity,
                    reason=review.reason,
                    open_alerts=row.open_alerts,
                )
            )
        audit.record(
            db, AuditAction.read, "CarePlan", None, None, detail=f"worklist of {len(items)}"
        )
        db.commit()
        last_row = page[-1] if more and page else None
        next_cursor = (
            _encode(
                last_row.review_rank,
                as_utc(last_row.review_due).isoformat(),  # type: ignore[arg-type]
                str(last_row.patient_id),
            )
            if last_row
            else None
        )
        return Worklist(items=items, next_cursor=next_cursor)


def _summary(row: PathwayRow, counts: dict[UUID, dict[str, int]], now: datetime) -> PathwaySummary:
    return PathwaySummary(
        patient_id=row.patient_id,
        stage=row.stage,
        stage_since=as_utc(row.stage_since),
        days_in_stage=(now - as_utc(row.stage_since)).days,
        teams=[t for t in row.teams.split(",") if t],
        open_alerts=row.open_alerts,
        alerts_by_severity=counts.get(row.patient_id, {}),
    )


def _severity_counts(db: Session, patients: list[UUID]) -> dict[UUID, dict[str, int]]:
    if not patients:
        return {}
    counts: dict[UUID, dict[str, int]] = {}
    for patient_id, severity, count in db.exec(
        select(PathwayAlert.patient_id, PathwayAlert.severity, func.count())
        .where(col(PathwayAlert.patient_id).in_(patients), PathwayAlert.status != "resolved")
        .group_by(col(PathwayAlert.patient_id), col(PathwayAlert.severity))
    ).all():
        counts.setdefault(patient_id, {})[severity] = int(count)
    return counts


class AlertController(Controller):
    path = "/api/alerts"
    tags = ["alerts"]
    opt = {"resource": "Flag"}
    guards = [requires(*READERS)]

    @get(
        operation_id="listAlerts",
        sync_to_thread=True,
        summary="Alerts across every pathway: most severe first, then soonest due",
    )
    def list_alerts(
        self,
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
        status: FromQuery[str | None] = "open",
        kind: FromQuery[str | None] = None,
        severity: FromQuery[str | None] = None,
        owner_role: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    ) -> AlertPage:
        _one_of("status", status, ("open", "acknowledged", "resolved"))
        _one_of("severity", severity, tuple(SEVERITY_RANK))
        statement = select(PathwayAlert)
        if (team := _team_of(user)) is not None:
            visible = select(PathwayRow.patient_id).where(_in_team(team))
            statement = statement.where(col(PathwayAlert.patient_id).in_(visible))
        for name, value in (
            ("status", status),
            ("kind", kind),
            ("severity", severity),
            ("owner_role", owner_role),
        ):
            if value is not None:
                statement = statement.where(getattr(PathwayAlert, name) == value)
        if cursor is not None:
            rank, due, last = _parse(
                cursor, lambda p: (int(p[0][0]), datetime.fromisoformat(p[0][1]), str(p[1]))
            )
            statement = statement.where(
                or_(
                    col(PathwayAlert.severity_rank) > rank,
                    and_(col(PathwayAlert.severity_rank) == rank, col(PathwayAlert.due) > due),
                    and_(
                        col(PathwayAlert.severity_rank) == rank,
                        col(PathwayAlert.due) == due,
                        col(PathwayAlert.id) > last,
                    ),
                )
            )
        rows = db.exec(
            statement.order_by(
                col(PathwayAlert.severity_rank), col(PathwayAlert.due), col(PathwayAlert.id)
            ).limit(limit + 1)
        ).all()
        page, more = rows[:limit], len(rows) > limit
        audit.record(db, AuditAction.read, "Flag", None, None, detail=f"alert list of {len(page)}")
        db.commit()
        last_row = page[-1] if more and page else None
        return AlertPage(
            items=[
                AlertRow(
                    id=a.id,
                    patient_id=a.patient_id,
                    kind=a.kind,
                    severity=a.severity,
                    status=a.status,
                    owner_role=a.owner_role,
                    raised_at=as_utc(a.raised_at),
                    due=as_utc(a.due),
                )
                for a in page
            ],
            next_cursor=_encode(
                [last_row.severity_rank, as_utc(last_row.due).isoformat()], last_row.id
            )
            if last_row
            else None,
        )

    @post(
        "/{alert_id:str}/acknowledge",
        operation_id="acknowledgeAlert",
        status_code=200,
        guards=[requires(Role.mdt, Role.psychologist, Role.infusion_clinician)],
        sync_to_thread=True,
        summary="Someone has seen the alert and is acting on it",
    )
    def acknowledge(
        self,
        alert_id: FromPath[str],
        data: JSONBody[AlertHandling],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AlertRow:
        return _handle(db, user, audit, alert_id, "acknowledged", data.note)

    @post(
        "/{alert_id:str}/resolve",
        operation_id="resolveAlert",
        status_code=200,
        guards=[requires(Role.mdt, Role.psychologist, Role.infusion_clinician)],
        sync_to_thread=True,
        summary="The alert is dealt with",
    )
    def resolve(
        self,
        alert_id: FromPath[str],
        data: JSONBody[AlertHandling],
        db: NamedDependency[Session],
        user: NamedDependency[User],
        audit: NamedDependency[AccessTrail],
    ) -> AlertRow:
        return _handle(db, user, audit, alert_id, "resolved", data.note)


def _handle(
    db: Session, user: User, audit: AccessTrail, alert_id: str, status: str, note: str | None
) -> AlertRow:
    """Record the person's action as a coordinator event, folded in at once."""
    found = db.get(PathwayAlert, alert_id)
    if found is None:
        raise NotFoundException(f"no alert {alert_id}")
    _visible_pathway(db, user, found.patient_id)
    lock_for_transaction(db, found.patient_id)
    # Read again under the lock: another person may have acted on it meanwhile (the
    # session's first read would otherwise be served from its identity map).
    alert = db.get(PathwayAlert, alert_id, populate_existing=True)
    if alert is None:  # the pathway was re-folded without it meanwhile
        raise NotFoundException(f"no alert {alert_id}")
    if alert.status == "resolved" or alert.status == status:
        raise Conflict(f"the alert is already {alert.status}", current_status=alert.status)
    now = datetime.now(UTC)
    db.add(
        AlertAction(
            alert_id=alert_id,
            patient_id=alert.patient_id,
            action=status,
            by_user=user.id,
            by_role=user.role.value,
            note=note,
            at=now,
        )
    )
    record_own_event(
        db,
        new_event(
            type=f"pathway.alert.{status}",
            data=PathwayAlertHandled(
                alert_id=alert_id,
                kind=alert.kind,
                by_user=user.id,
                by_role=user.role.value,
                handled_at=now,
            ),
            producer="coordinator",
            patient_id=alert.patient_id,
            subject=Subject(type="alert", id=alert_id),
            actor=Actor(user_id=user.id, role=user.role.value),
            correlation_id=current_correlation_id(),
        ),
    )
    audit.record(db, AuditAction.update, "Flag", alert_id, alert.patient_id, detail=status)
    db.commit()
    updated = db.get(PathwayAlert, alert_id)
    assert updated is not None
    return AlertRow(
        id=updated.id,
        patient_id=updated.patient_id,
        kind=updated.kind,
        severity=updated.severity,
        status=updated.status,
        owner_role=updated.owner_role,
        raised_at=as_utc(updated.raised_at),
        due=as_utc(updated.due),
    )
