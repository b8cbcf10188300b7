"""The web service's pages (issue 13): server-rendered, over the services' APIs.

Every page reads every service through its API as the signed-in person (their token
travels in the session cookie), so each service still decides, and audits, what this
person may see or do. Forms post back
here and redirect (post/redirect/get), so the pages work without JavaScript; a little
script only makes the status page live.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, get_args
from urllib.parse import quote, urlencode
from uuid import UUID, uuid4

import httpx
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath, FromQuery, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Stream, Template

from services.coordinator.domain import SEVERITY_RANK, MeasurePoint, Pathway, Stage
from services.coordinator.rules import ALERT_RULES
from services.coordinator.schemas import ReviewRead
from services.web import oidc
from services.web.charts import specs, svg, trajectory_svg, treatments_of
from services.web.sign_in import HOME_OF_ROLE, audit_sign_in, signed_in
from shared.auth import SESSION_COOKIE, Role, User, requires
from shared.calendar import working_calendar
from shared.client import ApiProblem
from shared.clock import now as clinic_now
from shared.events.catalogue import ReferralTarget
from shared.names import SERVICES
from shared.settings import PlatformSettings, RunMode
from shared.tables import as_utc
from shared.web import service_client
from shared.web.idempotency import FORM_KEY

STAGES: tuple[str, ...] = get_args(Stage)
TEAMS: tuple[str, ...] = get_args(ReferralTarget)
DEV_IDENTITIES = [
    ("admin-kim", Role.admin, "admin: pathway status and operations"),
    ("dr-mdt-lead", Role.mdt, "MDT: status, worklist, patient pathways, reviews"),
    ("psy-jones", Role.psychologist, "psychologist: inbox and waiting list"),
    ("nurse-okafor", Role.infusion_clinician, "infusion clinician: the clinic list"),
    ("dr-gp-patel", Role.referrer, "referrer: write referrals, answer questions"),
]
CLINICAL = (Role.mdt, Role.psychologist, Role.infusion_clinician)
NAMES_A_CALL = 200  # the referrals service names up to this many patients a call
# The clinic's words for each kind of alert, for the pages (the rule's source says why).
ALERT_LABELS: dict[str, str] = {
    "phq9-item9": "PHQ-9 item 9: thoughts of self-harm",
    "dna-threshold": "Missed appointments: discharge review",
    "vitals-out-of-range": "Vitals out of range during an infusion",
    "vitals-critical": "Critically abnormal vitals",
    "serious-adverse-event": "Serious adverse event",
    "reliable-deterioration": "Reliable deterioration",
    "no-response": "No response to infusions",
    "triage-overdue": "Urgent referral not triaged in time",
    "waiting-time": "Wait nearing its standard",
    "waiting-breach": "Waiting-time standard breached",
    "maintenance-overdue": "Maintenance infusion overdue",
    "urgent-overdue": "Urgent alert not acknowledged in time",
    "no-psychology-referral": "Infusions with no psychology referral",
}
MY_ALERTS_SHOWN = 50
STATUS_PAGE = 50
LIVE = "/live/pathways"
MEETING_PATH = "/worklist/meeting"
# Every form posts its fields url-encoded, read here as plain strings.
FormData = URLEncodedBody[dict[str, str]]
DECISIONS = ["continue", "stop-infusions", "start-maintenance", "refer-psychology", "discharge"]


def _page(request: Request[Any, Any, Any], template: str, **context: Any) -> Template:
    user = request.scope.get("user")
    return Template(
        template_name=template,
        context={
            "user": user if isinstance(user, User) else None,
            "now": _now(),
            # Each form's own key (issue 16): a double click or a resubmit acts once.
            "form_key": lambda: uuid4().hex,
            # Times as the clinic's wall clock shows them (issue 13).
            "local": _clinic_time,
            **context,
        },
    )


def _now() -> datetime:
    return clinic_now()


def _clinic_time(moment: datetime, fmt: str = "%d %b %Y %H:%M") -> str:
    return working_calendar().local(as_utc(moment)).strftime(fmt)


def _local(moment: datetime) -> str:
    """A time as the clinic's wall clock shows it (stored and sent in UTC)."""
    return working_calendar().local(moment).strftime("%a %d %b %H:%M")


def _back(path: str, **flash: str) -> Redirect:
    path, _, anchor = path.partition("#")
    query = ("&" if "?" in path else "?") + urlencode(flash) if flash else ""
    return Redirect(path=f"{path}{query}" + (f"#{anchor}" if anchor else ""), status_code=303)


def _flash(request: Request[Any, Any, Any]) -> dict[str, str | None]:
    """What the form's redirect (post/redirect/get) left for the page to say."""
    return {"done": request.query_params.get("done"), "error": request.query_params.get("error")}


def _problem_text(problem: ApiProblem) -> str:
    fields = ", ".join(e.get("field", "") for e in problem.body.get("errors") or [])
    detail = str(problem.body.get("detail", "the request was refused"))
    return f"{detail}" + (f" ({fields})" if fields and fields not in detail else "")


async def api_write(
    request: Request[Any, Any, Any],
    service: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    data: dict[str, str],
) -> tuple[Any, str | None]:
    """One write to a service's API as the signed-in person, the form's key as its
    Idempotency-Key: the answer, or the refusal in the service's words."""
    try:
        async with service_client(request, service) as client:
            if method == "PUT":
                return await client.put(path, body or {}), None
            return await client.post(path, body, idempotency_key=data.get(FORM_KEY) or None), None
    except ApiProblem as refused:
        return None, _problem_text(refused)
    except httpx.HTTPError:
        return None, f"The {service} service did not answer; try again."


async def form_write(
    request: Request[Any, Any, Any],
    service: str,
    path: str,
    body: dict[str, Any] | None,
    data: dict[str, str],
    *,
    back: str,
    failed: str,
    done: str,
) -> Redirect:
    """A form's one write, then back to the page saying what happened (post/redirect/get):
    `done`, or `failed` with the service's own words for the refusal."""
    _, refused = await api_write(request, service, "POST", path, body, data)
    if refused:
        return _back(back, error=f"{failed}: {refused}")
    return _back(back, done=done)


@dataclass(frozen=True)
class StepForms:
    """The forms on the page of one course or episode: each is a step written to the
    record's own path in its service's API (``{api}/{id}/{step}``), then back to the page
    (``{page}/{id}``) saying, in the step's words, that it was refused or done."""

    service: str
    api: str
    page: str
    said: Mapping[str, tuple[str, str]]  # each step's (refused, done)

    async def write(
        self,
        request: Request[Any, Any, Any],
        record_id: UUID,
        step: str,
        body: dict[str, Any] | None,
        data: dict[str, str],
    ) -> Redirect:
        failed, done = self.said[step]
        path = f"{self.api}/{record_id}/{step}"
        back = f"{self.page}/{record_id}"
        return await form_write(
            request, self.service, path, body, data, back=back, failed=failed, done=done
        )


class _Pages(Controller):
    """Pages for people, not the API: kept out of the OpenAPI document, and their errors
    answered as pages."""

    include_in_schema = False
    opt = {"page": True}


class SignInController(_Pages):
    """Development identities for the embedded mode; production signs in elsewhere."""

    path = "/"

    @get("/sign-in")
    async def sign_in_form(self, request: Request[Any, Any, Any]) -> Template:
        return _page(
            request,
            "sign_in.html",
            identities=DEV_IDENTITIES,
            roles=[r for r in Role if r is not Role.service],
            enabled=_dev_sign_in(request),
            oidc=oidc.configured(_platform(request)),
        )

    @post("/sign-in")
    async def sign_in(self, request: Request[Any, Any, Any], data: FormData) -> Response[Any]:
        if not _dev_sign_in(request):
            raise PermissionDeniedException("development sign-in is only for the embedded mode")
        user_id = (data.get("user") or "").strip()
        try:
            role = Role(data.get("role", ""))
        except ValueError:
            role = Role.service
        if not user_id or len(user_id) > 100 or role is Role.service:
            audit_sign_in(request, "development", "refused", reason="no user or role")
            page = _page(
                request,
                "sign_in.html",
                identities=DEV_IDENTITIES,
                roles=[r for r in Role if r is not Role.service],
                enabled=True,
                error="Choose a user name and one of the roles.",
            )
            page.status_code = 422
            return page
        audit_sign_in(request, "development", "success", user=user_id, role=role)
        return signed_in(_platform(request), user_id, role)

    @post("/sign-out")
    async def sign_out(self) -> Response[Any]:
        response: Response[Any] = Redirect(path="/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @get("/")
    async def home(self, user: NamedDependency[User]) -> Redirect:
        return Redirect(path=HOME_OF_ROLE.get(user.role, "/signed-in"), status_code=303)

    @get("/signed-in")
    async def signed_in(self, request: Request[Any, Any, Any]) -> Template:
        return _page(request, "signed_in.html")


def _platform(request: Request[Any, Any, Any]) -> PlatformSettings:
    platform: PlatformSettings = request.app.state.platform
    return platform


def _dev_sign_in(request: Request[Any, Any, Any]) -> bool:
    """The development identities: the embedded mode only, and never in production (a
    distributed deployment signs people in through the clinic's provider)."""
    return bool(request.app.state.embedded) and _platform(request).env is not RunMode.production


# --- my alerts (issue 13: every home page starts with them) -----------------------------


async def _my_alerts(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The unresolved alerts the signed-in person's role owns on the pathways their team
    may see, open before acknowledged, then most urgent and soonest due. Read from the
    coordinator's API as this person, so it decides and audits what they see."""
    user: User = request.user
    try:
        async with service_client(request, "coordinator") as coordinator:
            pages = await asyncio.gather(
                *(
                    coordinator.get(
                        "/api/alerts",
                        owner_role=user.role.value,
                        status=status,
                        limit=MY_ALERTS_SHOWN,
                    )
                    for status in ("open", "acknowledged")
                )
            )
    except (ApiProblem, httpx.HTTPError):
        return {"alerts": [], "unavailable": True, "more": False}
    alerts = [alert for page in pages for alert in page["items"]]
    alerts.sort(
        key=lambda a: (a["status"] != "open", SEVERITY_RANK.get(a["severity"], 9), a["due"])
    )
    names = await _names(request, [UUID(a["patient_id"]) for a in alerts])
    now = _now()
    shown = [
        {
            **alert,
            "label": ALERT_LABELS.get(alert["kind"], alert["kind"]),
            "name": names.get(UUID(alert["patient_id"])),
            "due_local": _local(datetime.fromisoformat(alert["due"])),
            "overdue": datetime.fromisoformat(alert["due"]) < now,
            "linked": user.role in CLINICAL,
        }
        for alert in alerts
    ]
    more = any(page["next_cursor"] for page in pages)
    return {"alerts": shown, "unavailable": False, "more": more}


# --- pathway status ---------------------------------------------------------------------


class StatusController(_Pages):
    """Every pathway's status, filtered and paged on the server (the coordinator's API as
    the reader), with the whole filtered population's figures above the page."""

    path = "/status"
    guards = [requires(Role.admin, Role.mdt)]

    @get()
    async def status(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[User],
        stage: FromQuery[str | None] = None,
        team: FromQuery[str | None] = None,
        alert_kind: FromQuery[str | None] = None,
        breached: FromQuery[bool] = False,
        cursor: FromQuery[str | None] = None,
        fragment: FromQuery[str | None] = None,
    ) -> Template:
        filters = {"stage": stage or None, "team": team or None, "alert_kind": alert_kind or None}
        wanted = {k: v for k, v in filters.items() if v} | _flag(breached)
        async with service_client(request, "coordinator") as coordinator:
            page = await coordinator.get(
                "/api/pathways", **wanted, cursor=cursor, limit=STATUS_PAGE
            )
            counts = await coordinator.get("/api/pathways/counts", **wanted)
        rows = [_status_row(item) for item in page["items"]]
        if user.role is Role.mdt:  # names for a clinical role, as the referrals service allows
            names = await _names(request, [row["patient_id"] for row in rows])
            for row in rows:
                row["name"] = names.get(row["patient_id"])
        query = urlencode(wanted)
        mine = await _my_alerts(request) if fragment != "rows" else None
        return _page(
            request,
            "status_rows.html" if fragment == "rows" else "status.html",
            my_alerts=mine,
            rows=rows,
            counts=counts,
            filters=filters,
            breached=breached,
            stages=STAGES,
            teams=TEAMS,
            alert_kinds=sorted(ALERT_RULES),
            query=urlencode(wanted | ({"cursor": cursor} if cursor else {})),
            # Embedded, the coordinator's stream is on this origin; alone, this service
            # relays it (the browser talks to the web service only).
            stream="/api/pathways/stream" if request.app.state.embedded else LIVE,
            first_page=f"/status?{query}" if cursor else None,
            next_page=f"/status?{urlencode(wanted | {'cursor': page['next_cursor']})}"
            if page["next_cursor"]
            else None,
        )


class LiveController(_Pages):
    """The coordinator's stream of pathway changes, relayed as the reader (distributed
    mode: the browser reaches the web service only)."""

    path = LIVE
    guards = [requires(Role.admin, Role.mdt)]

    @get()
    async def live(self, request: Request[Any, Any, Any]) -> Stream:
        source = service_client(request, "coordinator")
        last = request.headers.get("last-event-id")

        async def relay() -> AsyncIterator[bytes]:
            async with source as coordinator:
                async for chunk in coordinator.stream("/api/pathways/stream", last_event_id=last):
                    yield chunk

        return Stream(
            relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


def _flag(breached: bool) -> dict[str, str]:
    return {"breached": "true"} if breached else {}


def _status_row(item: dict[str, Any]) -> dict[str, Any]:
    severities = item["alerts_by_severity"]
    return {
        "patient_id": UUID(item["patient_id"]),
        "short_id": item["patient_id"][:8],
        "stage": item["stage"],
        "days_in_stage": item["days_in_stage"],
        "teams": item["teams"],
        "waiting": item["waiting"],
        "urgent": severities.get("urgent", 0) + severities.get("critical", 0),
        "warning": severities.get("warning", 0),
        "info": severities.get("info", 0),
        "name": None,
    }


async def _names(request: Request[Any, Any, Any], patients: list[UUID]) -> dict[UUID, str]:
    """Names from the referrals service, asked as this reader, a page of them in one call;
    none for a role that sees no names, or while the referrals service does not answer."""
    if request.user.role not in CLINICAL or not patients:
        return {}
    wanted = list(dict.fromkeys(patients))
    names: dict[UUID, str] = {}
    try:
        async with service_client(request, "referrals") as referrals:
            for start in range(0, len(wanted), NAMES_A_CALL):
                batch = wanted[start : start + NAMES_A_CALL]
                for found in await referrals.patient_names(batch):
                    names[found.id] = f"{found.given_name} {found.family_name}"
    except (ApiProblem, httpx.HTTPError):
        return names  # the page shows ids where it has no name
    return names


# --- one patient's pathway --------------------------------------------------------------


class PatientController(_Pages):
    """One patient's pathway, read from the coordinator's API as the reader; alert actions
    and reviews written through it with the form's key as the Idempotency-Key, so a
    double-submitted form acts once and the person sees the first answer."""

    path = "/patients"
    guards = [requires(*CLINICAL)]

    @get()
    async def search(
        self,
        request: Request[Any, Any, Any],
        q: Annotated[str, QueryParameter(max_length=100)] = "",
    ) -> Template:
        """Find a patient by name or NHS number, among those this reader may see."""
        text, found, problem = q.strip(), [], None
        if len(text) >= 2:
            try:
                async with service_client(request, "referrals") as referrals:
                    found = (await referrals.get("/api/patients", q=text, limit=50))["items"]
            except ApiProblem as refused:
                problem = str(refused.body.get("detail", "the search could not be made"))
        elif text:
            problem = "Type at least two letters of a name, or an NHS number."
        return _page(request, "patient_search.html", q=text, found=found, problem=problem)

    @get("/{patient_id:uuid}")
    async def pathway(
        self,
        request: Request[Any, Any, Any],
        patient_id: FromPath[UUID],
        user: NamedDependency[User],
        meeting: FromQuery[str | None] = None,
    ) -> Template:
        try:
            async with service_client(request, "coordinator") as coordinator:
                document = await coordinator.get(f"/api/pathways/{patient_id}")
                listed = await coordinator.get(f"/api/pathways/{patient_id}/reviews")
        except ApiProblem as refused:
            raise _as_page_problem(refused) from None
        pathway = msgspec.convert(document, Pathway, strict=False)
        reviews = msgspec.convert(listed, list[ReviewRead], strict=False)
        # The coordinator asked the referrals service for the name, as this reader.
        name, name_status = document.get("patient_name"), document.get("name_status")
        pain = pathway.measures["pain_nrs"]
        charts = [
            {"title": spec.title, "svg": svg(spec, _points(pathway.measures[spec.name]))}
            for spec in specs(pain[0].score if pain else None)
        ]
        measures = {name: _points(found) for name, found in pathway.measures.items()}
        moments = [(as_utc(entry.occurred_at), entry.type) for entry in pathway.timeline]
        return _page(
            request,
            "patient.html",
            trajectory=trajectory_svg(measures, treatments_of(moments)),
            pathway=pathway,
            name=name,
            name_status=name_status,
            charts=charts,
            reviews=reviews,
            decisions=DECISIONS,
            meeting=_meeting_step(meeting) if user.role is Role.mdt else None,
            **_flash(request),
        )

    @post("/{patient_id:uuid}/alerts/{alert_id:str}")
    async def act_on_alert(
        self,
        request: Request[Any, Any, Any],
        patient_id: FromPath[UUID],
        alert_id: FromPath[str],
        data: FormData,
    ) -> Redirect:
        here = f"/patients/{patient_id}"
        action = data.get("action")
        if action not in ("acknowledge", "resolve"):
            return _back(here, error="Choose acknowledge or resolve.")
        note = (data.get("note") or "").strip() or None
        path = f"/api/alerts/{quote(alert_id, safe='')}/{action}"
        _, refused = await api_write(request, "coordinator", "POST", path, {"note": note}, data)
        if refused:
            return _back(here, error=refused)
        return _back(
            here, done="Alert acknowledged." if action == "acknowledge" else "Alert resolved."
        )

    @post("/{patient_id:uuid}/reviews", guards=[requires(Role.mdt)])
    async def record_review(
        self, request: Request[Any, Any, Any], patient_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        here = f"/patients/{patient_id}"
        meeting = _meeting_step(data.get("then"))
        if meeting:  # a refusal keeps the meeting going
            here += "?" + urlencode({"meeting": meeting})
        decision = data.get("decision", "")
        body: dict[str, Any] = {
            "attendees": [a.strip() for a in (data.get("attendees") or "").split(",") if a.strip()],
            "decision": decision,
            "notes": (data.get("notes") or "").strip() or None,
        }
        if decision == "refer-psychology":
            body["referral"] = {
                "reason": (data.get("referral_reason") or "").strip(),
                "conditions": ["depression"],
                "priority": data.get("referral_priority") or "routine",
            }
        path = f"/api/pathways/{patient_id}/reviews"
        recorded, refused = await api_write(request, "coordinator", "POST", path, body, data)
        if refused:
            return _back(here, error=f"The review was not recorded: {refused}")
        # In a review meeting, recording the review moves on to the next patient.
        onward = meeting or f"/patients/{patient_id}"
        if recorded.get("referral_id"):
            return _back(onward, done="Review recorded; the psychology referral is on its way.")
        return _back(onward, done="Review recorded.")


def _as_page_problem(refused: ApiProblem) -> HTTPException:
    """The coordinator's refusal as this page's own (a page, not the API's body)."""
    detail = str(refused.body.get("detail") or "")
    if refused.status == 404:
        return NotFoundException(detail)
    if refused.status == 403:
        return PermissionDeniedException(detail)
    return HTTPException(status_code=refused.status, detail=detail)


def _meeting_step(link: str | None) -> str | None:
    """The review meeting's next step, only ever a link to it on this site."""
    return link if link and link.startswith(MEETING_PATH + "?") else None


def _points(points: list[MeasurePoint]) -> list[MeasurePoint]:
    # These times come from the pathway document (a JSON column), as the producers' events
    # gave them: aware, but in whatever offset the producer used; the chart's days are UTC.
    return [msgspec.structs.replace(p, at=as_utc(p.at)) for p in points]


# --- the psychology inbox ---------------------------------------------------------------


class InboxController(_Pages):
    path = "/inbox"
    guards = [requires(Role.psychologist, Role.mdt)]

    @get()
    async def inbox(self, request: Request[Any, Any, Any]) -> Template:
        async with service_client(request, "referrals") as referrals:
            waiting = await referrals.get(
                "/api/referrals", target="psychology", status="received", limit=100
            )
            asked = await referrals.get(
                "/api/referrals", target="psychology", status="info-requested", limit=100
            )
        async with service_client(request, "therapy") as therapy:
            waitlist = await therapy.get("/api/therapy-episodes", status="waitlist", limit=200)
        waiting_patients = [UUID(e["patient_id"]) for e in waitlist["items"]]
        names = await _names(request, waiting_patients)
        return _page(
            request,
            "inbox.html",
            names={str(k): v for k, v in names.items()},
            my_alerts=await _my_alerts(request),
            referrals=waiting["items"],
            asked=asked["items"],
            waitlist=waitlist["items"],
            **_flash(request),
        )

    @post("/{referral_id:uuid}/triage")
    async def triage(
        self, request: Request[Any, Any, Any], referral_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        decision = data.get("decision", "")
        body: dict[str, Any] = {"decision": decision}
        if decision == "reject":
            body["reason"] = (data.get("reason") or "").strip()
        if decision == "request-info":
            body["question"] = (data.get("question") or "").strip()
        try:
            async with service_client(request, "referrals") as referrals:
                await referrals.post(
                    f"/api/referrals/{referral_id}/triage",
                    body,
                    idempotency_key=data.get(FORM_KEY) or None,
                )
        except ApiProblem as refused:
            return _back("/inbox", error=f"Not triaged: {_problem_text(refused)}")
        except httpx.HTTPError:
            return _back("/inbox", error="The referrals service did not answer; try again.")
        word = {"accept": "accepted", "reject": "rejected", "request-info": "question sent"}
        return _back("/inbox", done=f"Referral {word.get(decision, decision)}.")


# --- the infusion clinic ----------------------------------------------------------------


class ClinicController(_Pages):
    path = "/clinic"
    guards = [requires(Role.infusion_clinician, Role.mdt)]

    @get()
    async def clinic(self, request: Request[Any, Any, Any]) -> Template:
        today = working_calendar().day_of(_now())
        async with service_client(request, "infusions") as infusions:
            active = await infusions.get("/api/infusion-courses", status="active", limit=200)
            due = await infusions.get(
                "/api/infusion-courses",
                due_before=(_now() + timedelta(days=7)).isoformat(),
                limit=200,
            )
            details = await asyncio.gather(
                *(infusions.get(f"/api/infusion-courses/{c['id']}") for c in active["items"])
            )
        sessions = sorted(
            (
                {**session, "course_id": course["id"], "patient_id": course["patient_id"]}
                for course in details
                for session in course.get("sessions") or []
                if _on(session.get("scheduled_start"), today)
            ),
            key=lambda s: str(s.get("scheduled_start")),
        )
        for session in sessions:
            session["time"] = _local(datetime.fromisoformat(session["scheduled_start"]))[-5:]
        patients = {UUID(c["patient_id"]) for c in [*active["items"], *due["items"], *sessions]}
        return _page(
            request,
            "clinic.html",
            my_alerts=await _my_alerts(request),
            names={str(k): v for k, v in (await _names(request, sorted(patients))).items()},
            sessions=sessions,
            active=active["items"],
            due=due["items"],
        )


def _on(moment: object, day: date) -> bool:
    """Whether the moment falls on this day of the clinic's calendar."""
    if not isinstance(moment, str):
        return False
    return working_calendar().day_of(datetime.fromisoformat(moment)) == day


# --- operations -------------------------------------------------------------------------


class OperationsController(_Pages):
    path = "/operations"
    guards = [requires(Role.admin)]

    @get()
    async def operations(self, request: Request[Any, Any, Any]) -> Template:
        services = await asyncio.gather(*(_service_state(request, s) for s in SERVICES))
        return _page(request, "operations.html", services=services, **_flash(request))

    @post("/{service:str}/dead-letters/{dead_letter_id:int}/replay")
    async def replay(
        self,
        request: Request[Any, Any, Any],
        service: FromPath[str],
        dead_letter_id: FromPath[int],
        data: FormData,
    ) -> Redirect:
        if service not in SERVICES:
            return _back("/operations", error="No such service.")
        try:
            async with service_client(request, service) as client:
                await client.post(
                    f"/api/dead-letters/{dead_letter_id}/replay",
                    idempotency_key=data.get(FORM_KEY) or None,
                )
        except (ApiProblem, httpx.HTTPError):
            return _back("/operations", error=f"{service} did not replay message {dead_letter_id}.")
        return _back("/operations", done=f"{service}: message {dead_letter_id} sent again.")

    @post("/{service:str}/reconcile")
    async def reconcile(self, request: Request[Any, Any, Any], service: FromPath[str]) -> Redirect:
        """Compare the service's feeds with its inbox and consume what is missing."""
        if service not in SERVICES:
            return _back("/operations", error="No such service.")
        try:
            async with service_client(request, service) as client:
                result = await client.post("/api/feeds/reconcile", {"repair": True})
        except (ApiProblem, httpx.HTTPError):
            return _back("/operations", error=f"{service} could not reconcile its feeds.")
        feeds = result.get("feeds", [])
        missing = sum(sum(feed["missing"].values()) for feed in feeds)
        repaired = sum(feed["repaired"] for feed in feeds)
        left = result.get("unresolved", 0)
        words = f"{service}: {missing} missing event(s), {repaired} repaired, {left} still missing."
        return _back("/operations", **({"error": words} if left else {"done": words}))


async def _service_state(request: Request[Any, Any, Any], service: str) -> dict[str, Any]:
    state: dict[str, Any] = {"name": service, "health": await _readiness(request, service)}
    try:
        async with service_client(request, service) as client:
            state["pipeline"] = await client.get("/api/operations")
            state["dead_letters"] = await client.get("/api/dead-letters")
    except (ApiProblem, httpx.HTTPError):
        state["health"] = "not answering"
    return state


async def _readiness(request: Request[Any, Any, Any], service: str) -> str:
    """The service's own /ready; in the embedded mode one /ready answers for all."""
    embedded = bool(request.app.state.embedded)
    try:
        async with service_client(request, "" if embedded else service) as client:
            answer = await client.get("/ready")
    except ApiProblem as problem:
        answer = problem.body
    except httpx.HTTPError:
        return "not answering"
    checks = answer.get("checks", {})
    own = [checks.get(f"{service}.database"), checks.get("broker")]
    return "ready" if all(check == "ok" for check in own) else "not ready"


PAGES = (
    SignInController,
    StatusController,
    LiveController,
    PatientController,
    InboxController,
    ClinicController,
    OperationsController,
)
