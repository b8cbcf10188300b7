"""The MDT's worklist in the browser (issue 13): pathways due for review, paged, and a
review meeting that steps through them one patient at a time on the patient's page,
recording each review and moving on.

The worklist is read from the coordinator's API as the signed-in member of the MDT, the
same list and cursor an integrator gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Request, get
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from services.web.pages import (
    ALERT_LABELS,
    MEETING_PATH,
    _flash,
    _local,
    _names,
    _page,
    _Pages,
)
from shared.auth import Role, requires
from shared.web import service_client

WORKLIST_PAGE = 20
MEETING = MEETING_PATH


def meeting_step(cursor: str | None) -> str:
    """Where the meeting goes after this patient: the next one, or the end."""
    return f"{MEETING}?{urlencode({'cursor': cursor})}" if cursor else f"{MEETING}?cursor="


class WorklistPageController(_Pages):
    path = "/worklist"
    guards = [requires(Role.mdt)]

    @get()
    async def worklist(
        self, request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None
    ) -> Template:
        async with service_client(request, "coordinator") as coordinator:
            page = await coordinator.get("/api/mdt/worklist", cursor=cursor, limit=WORKLIST_PAGE)
        names = await _names(request, [UUID(item["patient_id"]) for item in page["items"]])
        items = [
            {
                **item,
                "name": names.get(UUID(item["patient_id"])),
                "due_local": _local(datetime.fromisoformat(item["review_due"])),
            }
            for item in page["items"]
        ]
        return _page(
            request,
            "worklist.html",
            items=items,
            next_page=f"/worklist?{urlencode({'cursor': page['next_cursor']})}"
            if page["next_cursor"]
            else None,
            first_page=cursor is not None,
            labels=ALERT_LABELS,
            **_flash(request),
        )

    @get("/meeting")
    async def meeting(
        self, request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None
    ) -> Redirect:
        """The next patient due for review (from the start without a cursor); an empty
        cursor is the end of the list. What the last step said travels on."""
        said = {k: v for k, v in _flash(request).items() if v}
        if cursor == "":
            return Redirect(
                path="/worklist?" + urlencode({"done": "The review meeting is done."}),
                status_code=303,
            )
        async with service_client(request, "coordinator") as coordinator:
            page = await coordinator.get("/api/mdt/worklist", cursor=cursor, limit=1)
        if not page["items"]:
            return Redirect(
                path="/worklist?" + urlencode({"done": "Nobody is due for review."}),
                status_code=303,
            )
        patient_id = page["items"][0]["patient_id"]
        query = urlencode({"meeting": meeting_step(page["next_cursor"]), **said})
        return Redirect(path=f"/patients/{patient_id}?{query}", status_code=303)


MDT_PAGES = (WorklistPageController,)
