"""HTTP controllers of the coordinator: pathways, alerts, MDT reviews and worklist.

Each route parses, calls one command (services.py) and returns a view (views.py); the
dashboard's pages call the same commands.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.channels import ChannelsPlugin
from litestar.concurrency import sync_to_thread
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent

from services.coordinator import services, views
from services.coordinator.domain import Severity, Stage
from services.coordinator.reports import WaitsWeek
from services.coordinator.schemas import (
    AlertHandling,
    AlertPage,
    AlertRow,
    PathwayCounts,
    PathwayPage,
    PathwayRead,
    ReviewRead,
    ReviewReferralRead,
    ReviewRequest,
    Worklist,
)
from shared.auth import Role, requires
from shared.clock import now as clinic_now
from shared.events.catalogue import ReferralTarget
from shared.pagination import PageSize
from shared.runtime import ServiceRuntime
from shared.web.dependencies import UowDep, UserDep
from shared.web.handlers import command, query

CLINICAL_TEAMS = (Role.mdt, Role.psychologist, Role.infusion_clinician)
READERS = (*CLINICAL_TEAMS, Role.admin)
# Longer than any wait a pathway has had (ten years); a larger number is a typing slip.
MAX_WAIT_DAYS = 3650
MAX_REPORT_WEEKS = 104
AlertStatus = Literal["open", "acknowledged", "resolved"]


class WaitsReport(msgspec.Struct, kw_only=True):
    weeks: list[WaitsWeek]


class ReportController(Controller):
    path = "/api/reports"
    tags = ["reports"]
    opt = {"resource": "CarePlan"}
    guards = [requires(*READERS)]

    @query(
        "/waits",
        operation_id="waitingTimesReport",
        summary="Waiting times by team and week of referral, against the CLINICAL.md standards",
        description=(
            "Per team and week: referrals received, treated within the alert and the breach "
            "standard, treated later, still waiting (and past the breach). Figures only."
        ),
    )
    def waits(
        self,
        uow: UowDep,
        user: UserDep,
        weeks: Annotated[int, QueryParameter(ge=1, le=MAX_REPORT_WEEKS)] = 12,
    ) -> WaitsReport:
        return WaitsReport(weeks=services.waits_report(weeks, uow, user))


def pathway_filters(
    stage: FromQuery[Stage | None] = None,
    team: FromQuery[ReferralTarget | None] = None,
    alert_kind: FromQuery[str | None] = None,
    severity: FromQuery[Severity | None] = None,
    waiting_over_days: Annotated[int | None, QueryParameter(ge=0, le=MAX_WAIT_DAYS)] = None,
    breached: FromQuery[bool] = False,
) -> services.PathwayQuery:
    """The pathway status filters: the list and its figures take the same ones."""
    return services.PathwayQuery(
        stage, team, alert_kind, severity, waiting_over_days, breached=breached
    )


class PathwayController(Controller):
    path = "/api/pathways"
    tags = ["pathways"]
    opt = {"resource": "CarePlan"}
    guards = [requires(*READERS)]
    dependencies = {"filters": Provide(pathway_filters, sync_to_thread=False)}

    @query(
        operation_id="listPathways",
        summary="Pathway status: longest in their stage first, filtered, in cursor pages",
    )
    def list_pathways(
        self,
        uow: UowDep,
        user: UserDep,
        filters: NamedDependency[services.PathwayQuery],
        cursor: FromQuery[str | None] = None,
        limit: PageSize = 50,
    ) -> PathwayPage:
        page = dataclasses.replace(filters, cursor=cursor, limit=limit)
        rows, open_alerts, next_cursor = services.list_pathways(page, uow, user)
        now = clinic_now()
        items = [views.summary(row, open_alerts, now) for row in rows]
        return PathwayPage(items=items, next_cursor=next_cursor)

    @query(
        "/counts",
        operation_id="countPathways",
        summary="Pathway status in figures: patients by stage, open alerts, breached waits",
    )
    def count_pathways(
        self, uow: UowDep, user: UserDep, filters: NamedDependency[services.PathwayQuery]
    ) -> PathwayCounts:
        return services.count_pathways(filters, uow, user)

    @get(
        "/stream",
        operation_id="streamPathwayChanges",
        media_type="text/event-stream",
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
        channels: NamedDependency[ChannelsPlugin],
        uow: UowDep,
        user: UserDep,
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        since = views.stream_start(last_event_id)
        await sync_to_thread(services.record_stream_opened, uow)
        team = services.team_of(user)
        changes = views.live_pathway_changes(runtime, channels, since, team)
        return ServerSentEvent(changes, retry_duration=2000)

    @get(
        "/{patient_id:uuid}",
        operation_id="readPathway",
        summary="One patient's pathway across referrals, infusions and therapy",
        # The answer is the stored document with the name added, sent as bytes; this
        # says what it is.
        responses={
            200: ResponseSpec(PathwayRead, generate_examples=False, description="The pathway")
        },
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        patient_id: FromPath[UUID],
        uow: UowDep,
        user: UserDep,
    ) -> Response[bytes]:
        document = await sync_to_thread(services.pathway_document, patient_id, uow, user)
        name, status = await services.patient_name(request, user, patient_id)
        return Response(views.pathway_with_name(document, name, status), media_type=MediaType.JSON)

    @query(
        "/{patient_id:uuid}/fhir",
        operation_id="exportPathwayFhir",
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
    def export_fhir(self, patient_id: FromPath[UUID], uow: UowDep, user: UserDep) -> dict[str, Any]:
        return services.export_fhir(patient_id, uow, user)

    @command(
        "/{patient_id:uuid}/reviews",
        operation_id="recordMdtReview",
        roles=(Role.mdt,),
        status_code=201,
        summary="Record the MDT's review; a decision to refer makes the referral",
        description=(
            "One write: the review, its decision and its `mdt.review.recorded` event. "
            "`refer-psychology` needs `referral`; the answer names the referral's id at "
            "once, and the referrals service makes that referral, on the reviewing "
            "clinician's behalf, when it consumes the event (so a retried review or a "
            "redelivered event makes it once, and a referrals service that is down makes "
            "it when it is back). The pathway shows the referral when it exists."
        ),
    )
    def record_review(
        self, patient_id: FromPath[UUID], data: JSONBody[ReviewRequest], uow: UowDep, user: UserDep
    ) -> ReviewRead:
        return views.review_read(services.record_review(patient_id, data, uow, user))

    @query(
        "/{patient_id:uuid}/reviews",
        operation_id="listMdtReviews",
        roles=CLINICAL_TEAMS,
        summary="The MDT's reviews of this pathway, newest first, with their notes",
    )
    def list_reviews(
        self, patient_id: FromPath[UUID], uow: UowDep, user: UserDep
    ) -> list[ReviewRead]:
        return [views.review_read(row) for row in services.list_reviews(patient_id, uow, user)]


class WorklistController(Controller):
    path = "/api/mdt/worklist"
    tags = ["mdt"]
    opt = {"resource": "CarePlan"}
    guards = [requires(Role.mdt)]

    @query(
        operation_id="mdtWorklist",
        summary="Patients due for MDT review: most urgent reason first, then soonest due",
    )
    def worklist(
        self, uow: UowDep, cursor: FromQuery[str | None] = None, limit: PageSize = 50
    ) -> Worklist:
        rows, next_cursor = services.worklist(cursor, limit, uow)
        now = clinic_now()
        return Worklist(
            items=[views.worklist_item(row, now) for row in rows], next_cursor=next_cursor
        )


class ReviewReferralController(Controller):
    path = "/api/mdt/reviews"
    tags = ["mdt"]
    opt = {"resource": "Encounter"}
    guards = [requires(Role.service)]

    @query(
        "/{review_id:uuid}/referral",
        operation_id="readReviewReferral",
        summary="The referral an MDT review decided on, for the referrals service to make",
    )
    def review_referral(
        self, review_id: FromPath[UUID], uow: UowDep, user: UserDep
    ) -> ReviewReferralRead:
        return services.review_referral(review_id, uow, user)


class AlertController(Controller):
    path = "/api/alerts"
    tags = ["alerts"]
    opt = {"resource": "Flag"}
    guards = [requires(*READERS)]

    @query(
        operation_id="listAlerts",
        summary="Alerts across every pathway: most severe first, then soonest due",
    )
    def list_alerts(
        self,
        uow: UowDep,
        user: UserDep,
        status: FromQuery[AlertStatus | None] = "open",
        kind: FromQuery[str | None] = None,
        severity: FromQuery[Severity | None] = None,
        owner_role: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: PageSize = 50,
    ) -> AlertPage:
        filters = services.AlertQuery(status, kind, severity, owner_role, cursor, limit)
        rows, next_cursor = services.list_alerts(filters, uow, user)
        return AlertPage(items=[views.alert_row(a) for a in rows], next_cursor=next_cursor)

    @command(
        "/{alert_id:str}/acknowledge",
        operation_id="acknowledgeAlert",
        roles=CLINICAL_TEAMS,
        summary="Someone has seen the alert and is acting on it",
    )
    def acknowledge(
        self, alert_id: FromPath[str], data: JSONBody[AlertHandling], uow: UowDep, user: UserDep
    ) -> AlertRow:
        alert = services.handle_alert(alert_id, "acknowledged", data.note, uow, user)
        return views.alert_row(alert)

    @command(
        "/{alert_id:str}/resolve",
        operation_id="resolveAlert",
        roles=CLINICAL_TEAMS,
        summary="The alert is dealt with",
    )
    def resolve(
        self, alert_id: FromPath[str], data: JSONBody[AlertHandling], uow: UowDep, user: UserDep
    ) -> AlertRow:
        return views.alert_row(services.handle_alert(alert_id, "resolved", data.note, uow, user))
