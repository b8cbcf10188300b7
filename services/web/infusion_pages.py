"""The infusion clinician's day in the browser (issue 13): a course page (the assessment's
outcome, the agreed plan, the sessions, booking the next one, hold and resume) and a
session's run sheet: check in, vitals with the time the next reading is due, scores
before, start (over a high reading only with a named override), the dose given, adverse
events, complete with the scores after, or abandon with the dose given so far.

Every form writes through the infusions API as the signed-in person, with the form's key
as its Idempotency-Key; the infusions service decides and audits, and a refusal is shown
in its words. The pages keep nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from services.infusions.domain import BLOCKING, CAUTIONS, CHECKLIST
from services.web.pages import (
    FormData,
    StepForms,
    _back,
    _flash,
    _local,
    _names,
    _now,
    _page,
    _Pages,
    api_write,
)
from shared.auth import Role, requires
from shared.calendar import working_calendar
from shared.policy import clinical_policy
from shared.web import service_client

ADVERSE_EVENTS = ["hypertension", "dissociation", "nausea", "sedation", "other"]
SEVERITIES = ["mild", "moderate", "severe", "serious"]
PHQ9_ITEMS = range(1, 10)
ASSESSMENT_NUMBERS = (
    "weight_kg",
    "systolic",
    "diastolic",
    "heart_rate",
    "opioid_mme_per_day",
    "pain_nrs",
)
PRIOR_ROWS = range(1, 4)
# What each step on the run sheet says once the infusions service has taken it.
SESSION_STEPS = {
    "check-in": "Checked in: take the pre-infusion vitals.",
    "vitals": "Vitals recorded.",
    "scores-before": "Scores before recorded.",
    "start": "Infusion started.",
    "dose": "Dose given recorded.",
    "adverse-events": "Adverse event recorded.",
    "complete": "Infusion completed.",
    "cancel": "Session cancelled.",
    "abandon": "Infusion stopped early; recorded with its reason.",
}
# What a course page's form says when the infusions service refuses it, and once it is done.
COURSE_STEPS = {
    "plan": ("Plan not agreed", "Dosing plan agreed."),
    "sessions": ("Not booked", "Infusion booked."),
    "hold": ("Not done", "Course on hold."),
    "resume": ("Not done", "Course resumed."),
}
COURSE_FORMS = StepForms("infusions", "/api/infusion-courses", "/courses", COURSE_STEPS)


# A session as the API sends it leaves out what has not happened yet.
SESSION_FIELDS = ("given_mg", "pain_before", "pain_after", "mood_before", "mood_after")


def _with_gaps(session: dict[str, Any]) -> dict[str, Any]:
    return {field: None for field in (*SESSION_FIELDS, "phq9_total")} | session


def _number(value: str | None) -> Any:
    """A form's number as JSON would carry it; anything else goes as typed, so the
    infusions service refuses it naming the field (never a guess here)."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _filled(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value not in (None, "")}


def _clinic_moment(day: str, at: str) -> datetime:
    """A date and a wall-clock time in the clinic's time zone, as a UTC moment."""
    local = datetime.combine(date.fromisoformat(day), time.fromisoformat(at))
    return local.replace(tzinfo=working_calendar().zone).astimezone(UTC)


def _assessment_body(data: dict[str, str]) -> dict[str, Any]:
    """The eligibility form as the API's AssessmentCreate: each checklist item present
    or not with its note, a caution's override only with a reason, PHQ-9 item by item,
    the prior treatments written in."""
    checklist = {
        item: {
            "present": data.get(f"present-{item}") == "yes",
            "note": data.get(f"note-{item}") or "",
        }
        for item in CHECKLIST
    }
    overrides = [
        {"caution": item, "reason": data[f"override-{item}"].strip()}
        for item in CAUTIONS
        if data.get(f"override-{item}", "").strip()
    ]
    prior = [
        {
            "name": name,
            "kind": data.get(f"prior-kind-{n}") or "medicine",
            "outcome": data.get(f"prior-outcome-{n}", ""),
        }
        for n in PRIOR_ROWS
        if (name := data.get(f"prior-name-{n}", "").strip())
    ]
    body = _filled(
        **{name: _number(data.get(name)) for name in ASSESSMENT_NUMBERS},
    )
    body |= {
        "phq9_items": [_number(data.get(f"phq9-{n}")) for n in PHQ9_ITEMS],
        "prior_treatments": prior,
        "checklist": checklist,
        "overrides": overrides,
    }
    return body


PLAN_NUMBERS = (
    "weight_kg",
    "dose_mg_per_kg",
    "infusion_minutes",
    "rate_mg_per_kg_per_h",
    "duration_hours",
    "induction_count",
    "induction_spacing_days",
    "maintenance_interval_days",
)


def _plan_body(data: dict[str, str]) -> dict[str, Any]:
    """The plan form as the API's PlanCreate: the regimen's own fields only (a depression
    plan in mg/kg over minutes, a pain plan in mg/kg/h over hours), an override only with
    its reason."""
    indication = data.get("indication", "")
    foreign = (
        ("rate_mg_per_kg_per_h", "duration_hours")
        if indication == "depression"
        else ("dose_mg_per_kg", "infusion_minutes")
    )
    numbers = {name: _number(data.get(name)) for name in PLAN_NUMBERS if name not in foreign}
    body = _filled(indication=indication, **numbers)
    reason = (data.get("override_reason") or "").strip()
    if reason:
        body["override"] = {"reason": reason}
    return body


async def _course_page(request: Request[Any, Any, Any], course_id: UUID, **extra: Any) -> Template:
    async with service_client(request, "infusions") as infusions:
        course = await infusions.get(f"/api/infusion-courses/{course_id}")
    names = await _names(request, [UUID(course["patient_id"])])
    sessions = sorted(
        (_with_gaps(s) for s in course.get("sessions") or []),
        key=lambda s: s["scheduled_start"],
    )
    for session in sessions:
        session["when"] = _local(datetime.fromisoformat(session["scheduled_start"]))
    today = working_calendar().day_of(_now())
    # The form starts from the plan agreed (to change one value), else the assessed weight.
    agreed = course.get("plan") or {}
    weight = agreed.get("weight_kg") or (course.get("assessment") or {}).get("weight_kg", "")
    starting = {name: agreed.get(name) for name in ("indication", *PLAN_NUMBERS)}
    return _page(
        request,
        "course.html",
        course=course,
        name=names.get(UUID(course["patient_id"])),
        sessions=sessions,
        today=today.isoformat(),
        plan_form=extra.pop("plan_form", None) or starting | {"weight_kg": weight},
        blocking=BLOCKING,
        cautions=CAUTIONS,
        phq9_items=PHQ9_ITEMS,
        prior_rows=PRIOR_ROWS,
        **extra,
        **_flash(request),
    )


class CoursePageController(_Pages):
    path = "/courses"
    guards = [requires(Role.infusion_clinician, Role.mdt)]

    @get("/{course_id:uuid}")
    async def course(self, request: Request[Any, Any, Any], course_id: FromPath[UUID]) -> Template:
        return await _course_page(request, course_id)

    @post("/{course_id:uuid}/assessment", guards=[requires(Role.infusion_clinician)])
    async def assess(
        self, request: Request[Any, Any, Any], course_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        """The eligibility checklist as the clinic fills it in; the infusions service
        decides the outcome, and the page says it in its words."""
        here = f"/courses/{course_id}"
        path = f"/api/infusion-courses/{course_id}/assessments"
        answer, refused = await api_write(
            request, "infusions", "POST", path, _assessment_body(data), data
        )
        if refused:
            return _back(here, error=f"Not recorded: {refused}")
        blocked = ", ".join(answer["blocked_by"])
        outcome = {
            "eligible": "Assessed: eligible for infusions.",
            "needs-override": "Assessed: a caution needs a clinician's override with a reason.",
        }.get(answer["outcome"], f"Assessed: not eligible ({blocked}).")
        return _back(here, done=outcome)

    @post("/{course_id:uuid}/plan", guards=[requires(Role.infusion_clinician)])
    async def plan(
        self, request: Request[Any, Any, Any], course_id: FromPath[UUID], data: FormData
    ) -> Template | Redirect:
        """Show the dose this plan gives (the infusions service computes and checks it,
        saving nothing); agree it only from that page, so nobody saves a dose unseen."""
        body = _plan_body(data)
        if data.get("step") != "agree":
            path = f"/api/infusion-courses/{course_id}/plan/preview"
            preview, refused = await api_write(request, "infusions", "POST", path, body, {})
            return await _course_page(
                request, course_id, plan_form=data, preview=preview, plan_refused=refused
            )
        return await COURSE_FORMS.write(request, course_id, "plan", body, data)

    @post("/{course_id:uuid}/sessions", guards=[requires(Role.infusion_clinician)])
    async def book(
        self, request: Request[Any, Any, Any], course_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        here = f"/courses/{course_id}"
        try:
            start = _clinic_moment(data.get("day", ""), data.get("start", ""))
            end = _clinic_moment(data.get("day", ""), data.get("end", ""))
        except ValueError:
            return _back(here, error="Give the day and the start and end times of the infusion.")
        body = {"start": start.isoformat(), "end": end.isoformat(), "kind": data.get("kind")}
        return await COURSE_FORMS.write(request, course_id, "sessions", _filled(**body), data)

    @post("/{course_id:uuid}/{action:str}")
    async def hold_or_resume(
        self,
        request: Request[Any, Any, Any],
        course_id: FromPath[UUID],
        action: FromPath[str],
        data: FormData,
    ) -> Redirect:
        if action not in ("hold", "resume"):
            return _back(f"/courses/{course_id}", error="Hold or resume the course.")
        body = {"reason": (data.get("reason") or "").strip()}
        return await COURSE_FORMS.write(request, course_id, action, body, data)


class RunSheetController(_Pages):
    path = "/infusion-sessions"
    guards = [requires(Role.infusion_clinician, Role.mdt)]

    @get("/{session_id:uuid}")
    async def run_sheet(
        self, request: Request[Any, Any, Any], session_id: FromPath[UUID]
    ) -> Template:
        async with service_client(request, "infusions") as infusions:
            session = _with_gaps(await infusions.get(f"/api/infusion-sessions/{session_id}"))
        names = await _names(request, [UUID(session["patient_id"])])
        readings = session.get("vitals") or []
        for reading in readings:
            reading["when"] = _local(datetime.fromisoformat(reading["at"]))[-5:]
        next_due = None
        if session["status"] in ("checked-in", "in-progress") and readings:
            interval = timedelta(minutes=clinical_policy().vitals.interval_minutes)
            due = max(datetime.fromisoformat(r["at"]) for r in readings) + interval
            next_due = {"at": _local(due)[-5:], "overdue": due < _now()}
        return _page(
            request,
            "run_sheet.html",
            session=session,
            name=names.get(UUID(session["patient_id"])),
            when=_local(datetime.fromisoformat(session["scheduled_start"])),
            readings=readings,
            next_due=next_due,
            interval=clinical_policy().vitals.interval_minutes,
            adverse_events=ADVERSE_EVENTS,
            severities=SEVERITIES,
            phq9_items=PHQ9_ITEMS,
            **_flash(request),
        )

    @post("/{session_id:uuid}/{step:str}", guards=[requires(Role.infusion_clinician)])
    async def take_step(
        self,
        request: Request[Any, Any, Any],
        session_id: FromPath[UUID],
        step: FromPath[str],
        data: FormData,
    ) -> Redirect:
        here = f"/infusion-sessions/{session_id}"
        if step not in SESSION_STEPS:
            return _back(here, error="No such step on the run sheet.")
        body = _step_body(step, data)
        path = f"/api/infusion-sessions/{session_id}/{step}"
        answer, refused = await api_write(request, "infusions", "POST", path, body, data)
        if refused:
            return _back(here, error=f"Not recorded: {refused}")
        if step == "vitals" and answer.get("out_of_range"):
            crossed = "; ".join(answer["out_of_range"])
            return _back(here, error=f"Vitals recorded, out of range: {crossed}. Act now.")
        return _back(here, done=SESSION_STEPS[step])


def _step_body(step: str, data: dict[str, str]) -> dict[str, Any] | None:
    """The API body of each step from its form's fields."""
    reason = (data.get("reason") or "").strip() or None
    if step == "vitals":
        return _filled(
            systolic=_number(data.get("systolic")),
            diastolic=_number(data.get("diastolic")),
            heart_rate=_number(data.get("heart_rate")),
            spo2=_number(data.get("spo2")),
        )
    if step == "scores-before":
        return _filled(pain_nrs=_number(data.get("pain_nrs")), mood=_number(data.get("mood")))
    if step == "start":
        return {"override": {"reason": reason}} if reason else None
    if step == "dose":
        return _filled(given_mg=_number(data.get("given_mg")), reason=reason)
    if step == "adverse-events":
        return _filled(
            code=data.get("code"), severity=data.get("severity"), note=data.get("note", "")
        )
    if step == "complete":
        items = [_number(data.get(f"phq9-{n}")) for n in PHQ9_ITEMS]
        answered = [item for item in items if item is not None]
        return _filled(
            pain_nrs=_number(data.get("pain_nrs")),
            mood=_number(data.get("mood")),
            # All nine or none: a partial PHQ-9 goes as it is, and is refused naming it.
            phq9_items=items if answered else None,
        )
    if step in ("cancel", "abandon"):
        return _filled(reason=reason, given_mg=_number(data.get("given_mg")))
    return None


INFUSION_PAGES = (CoursePageController, RunSheetController)
