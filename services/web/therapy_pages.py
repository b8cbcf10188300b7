"""The psychologist's day in the browser (issue 13): my caseload and diary, an episode's
page to take a patient on, book from my free slots, run each appointment (check in,
attended, not attended, cancel), record PHQ-9, GAD-7 and PEG item by item, and
discharge with a reason.

Every page reads and every form writes through the therapy API as the signed-in person
(their token, the form's key as the Idempotency-Key), so the therapy service decides,
refuses with a reason the page shows, and audits; these pages keep nothing.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from uuid import UUID

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from services.web.pages import (
    FormData,
    StepForms,
    _back,
    _flash,
    _local,
    _my_alerts,
    _names,
    _page,
    _Pages,
    api_write,
    form_write,
)
from shared.auth import Role, User, requires
from shared.client import ApiProblem
from shared.web import service_client

# What each instrument asks: its item count and the highest answer to an item.
INSTRUMENTS = {"PHQ-9": (9, 3), "GAD-7": (7, 3), "PEG": (3, 10)}
APPOINTMENT_ACTIONS = {
    "check-in": "Checked in.",
    "attend": "Marked attended.",
    "noshow": "Marked not attended.",
    "cancel": "Cancelled.",
}
# What an episode page's form says when the therapy service refuses it, and once it is done.
EPISODE_STEPS = {
    "assign": ("Not taken on", "Taken on to your caseload: book the first appointment."),
    "appointments": ("Not booked", "Appointment booked."),
    "discharge": ("Not discharged", "Discharged; the referral is closed."),
}
EPISODE_FORMS = StepForms("therapy", "/api/therapy-episodes", "/episodes", EPISODE_STEPS)
DISCHARGE_REASONS = ["completed", "declined", "did-not-attend", "moved-away", "other"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SLOT_DAYS = 14
# Taken on but not yet booked is still on the waiting list (the first booking ends it).
OPEN_EPISODE = ("waitlist", "active", "onhold")


def _me(request: Request[Any, Any, Any]) -> User:
    user: User = request.user
    return user


class CaseloadController(_Pages):
    path = "/caseload"
    guards = [requires(Role.psychologist)]

    @get()
    async def caseload(self, request: Request[Any, Any, Any]) -> Template:
        me = _me(request)
        async with service_client(request, "therapy") as therapy:
            episodes = await therapy.get("/api/therapy-episodes", clinician_id=me.id, limit=200)
            diary = await _diary_of(therapy, me.id)
        mine = [e for e in episodes["items"] if e["status"] in OPEN_EPISODE]
        names = await _names(request, [UUID(e["patient_id"]) for e in mine])
        return _page(
            request,
            "caseload.html",
            my_alerts=await _my_alerts(request),
            episodes=mine,
            names={str(k): v for k, v in names.items()},
            diary=diary,
            weekdays=WEEKDAYS,
            **_flash(request),
        )

    @post("/diary")
    async def set_hours(self, request: Request[Any, Any, Any], data: FormData) -> Redirect:
        """Join the service (first time) and set the weekly working hours."""
        me = _me(request)
        try:
            start = time.fromisoformat(data.get("start", "")).isoformat()
            end = time.fromisoformat(data.get("end", "")).isoformat()
        except ValueError:
            return _back("/caseload", error="Give the start and end of the working day (09:00).")
        days = [n for n in range(7) if data.get(f"day-{n}")]
        if not days:
            return _back("/caseload", error="Choose at least one working day.")
        if data.get("join"):
            name = (data.get("display_name") or "").strip() or me.id
            clinician = {"id": me.id, "display_name": name}
            _, refused = await api_write(
                request, "therapy", "POST", "/api/clinicians", clinician, data
            )
            if refused:
                return _back("/caseload", error=f"Not joined: {refused}")
        hours = {"hours": [{"weekday": n, "start": start, "end": end} for n in days]}
        _, refused = await api_write(
            request, "therapy", "PUT", f"/api/clinicians/{me.id}/working-hours", hours, {}
        )
        if refused:
            return _back("/caseload", error=f"Working hours not saved: {refused}")
        return _back("/caseload", done="Working hours saved.")

    @post("/leave")
    async def add_leave(self, request: Request[Any, Any, Any], data: FormData) -> Redirect:
        me = _me(request)
        body = {"first_day": data.get("first_day", ""), "last_day": data.get("last_day", "")}
        return await form_write(
            request,
            "therapy",
            f"/api/clinicians/{me.id}/leave",
            body,
            data,
            back="/caseload",
            failed="Leave not added",
            done="Leave added: no slots are offered on those days.",
        )


async def _diary_of(therapy: Any, clinician_id: str) -> dict[str, Any] | None:
    try:
        diary: dict[str, Any] = await therapy.get(f"/api/clinicians/{clinician_id}")
    except ApiProblem as problem:
        if problem.status == 404:
            return None  # not yet joined: the page offers to
        raise
    return diary


class EpisodePageController(_Pages):
    path = "/episodes"
    guards = [requires(Role.psychologist, Role.mdt)]

    @get("/{episode_id:uuid}")
    async def episode(
        self, request: Request[Any, Any, Any], episode_id: FromPath[UUID]
    ) -> Template:
        me = _me(request)
        async with service_client(request, "therapy") as therapy:
            episode = await therapy.get(f"/api/therapy-episodes/{episode_id}")
            slots: list[str] = []
            if me.role is Role.psychologist and episode.get("clinician_id") == me.id:
                slots = await _free_slots(therapy, me.id)
        names = await _names(request, [UUID(episode["patient_id"])])
        appointments = sorted(episode.get("appointments") or [], key=lambda a: a["start"])
        for appointment in appointments:
            appointment["when"] = _local(datetime.fromisoformat(appointment["start"]))
        return _page(
            request,
            "episode.html",
            episode=episode,
            name=names.get(UUID(episode["patient_id"])),
            appointments=appointments,
            slots=[(slot, _local(datetime.fromisoformat(slot))) for slot in slots],
            mine=episode.get("clinician_id") == me.id,
            open=episode["status"] in OPEN_EPISODE,
            instruments={name: range(1, count + 1) for name, (count, _) in INSTRUMENTS.items()},
            answers={name: range(top + 1) for name, (_, top) in INSTRUMENTS.items()},
            discharge_reasons=DISCHARGE_REASONS,
            **_flash(request),
        )

    @post("/{episode_id:uuid}/assign", guards=[requires(Role.psychologist)])
    async def take_on(
        self, request: Request[Any, Any, Any], episode_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        body = {"clinician_id": _me(request).id}
        return await EPISODE_FORMS.write(request, episode_id, "assign", body, data)

    @post("/{episode_id:uuid}/appointments", guards=[requires(Role.psychologist)])
    async def book(
        self, request: Request[Any, Any, Any], episode_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        body: dict[str, Any] = {
            "kind": data.get("kind", ""),
            "start": data.get("start", ""),
            "mode": data.get("mode", ""),
        }
        if (data.get("location") or "").strip():
            body["location"] = data["location"].strip()
        return await EPISODE_FORMS.write(request, episode_id, "appointments", body, data)

    @post("/{episode_id:uuid}/discharge")
    async def discharge(
        self, request: Request[Any, Any, Any], episode_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        body = {"reason": data.get("reason", ""), "note": (data.get("note") or "").strip() or None}
        return await EPISODE_FORMS.write(request, episode_id, "discharge", body, data)

    @post("/{episode_id:uuid}/appointments/{appointment_id:uuid}/measures")
    async def record_measure(
        self,
        request: Request[Any, Any, Any],
        episode_id: FromPath[UUID],
        appointment_id: FromPath[UUID],
        data: FormData,
    ) -> Redirect:
        here = f"/episodes/{episode_id}#appointment-{appointment_id}"
        instrument = data.get("instrument", "")
        if instrument not in INSTRUMENTS:
            return _back(here, error="Choose PHQ-9, GAD-7 or PEG.")
        count, _top = INSTRUMENTS[instrument]
        try:
            items = [int(data.get(f"item-{n}", "")) for n in range(1, count + 1)]
        except ValueError:
            return _back(here, error=f"Not recorded: answer every {instrument} item.")
        body = {"instrument": instrument, "items": items}
        path = f"/api/appointments/{appointment_id}/measures"
        measure, refused = await api_write(request, "therapy", "POST", path, body, data)
        if refused:
            return _back(here, error=f"{instrument} not recorded: {refused}")
        said = f"{instrument} recorded: {measure['total']} ({measure['band']})."
        if measure.get("risk_flagged"):
            said += (
                " Item 9 was answered above 0: the urgent safety alert is raised for the MDT"
                " today. Follow the risk protocol now."
            )
            return _back(here, error=said)  # said as an alert, not as a quiet success
        return _back(here, done=said)

    @post("/{episode_id:uuid}/appointments/{appointment_id:uuid}/{action:str}")
    async def act(
        self,
        request: Request[Any, Any, Any],
        episode_id: FromPath[UUID],
        appointment_id: FromPath[UUID],
        action: FromPath[str],
        data: FormData,
    ) -> Redirect:
        here = f"/episodes/{episode_id}#appointment-{appointment_id}"
        if action not in APPOINTMENT_ACTIONS:
            return _back(here, error="No such step for an appointment.")
        body = None
        if action == "cancel":
            body = {"by": data.get("by", ""), "reason": (data.get("reason") or "").strip()}
        path = f"/api/appointments/{appointment_id}/{action}"
        return await form_write(
            request,
            "therapy",
            path,
            body,
            data,
            back=here,
            failed="Not done",
            done=APPOINTMENT_ACTIONS[action],
        )


async def _free_slots(therapy: Any, clinician_id: str) -> list[str]:
    try:
        found = await therapy.get(f"/api/clinicians/{clinician_id}/slots", days=SLOT_DAYS)
    except ApiProblem:
        return []  # no diary yet: the caseload page says how to set one
    slots: list[str] = found["slots"]
    return slots


THERAPY_PAGES = (CaseloadController, EpisodePageController)
