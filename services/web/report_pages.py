"""The admin's waiting-times report in the browser (issue 13): per team and week of
referral against the CLINICAL.md standards, as a chart and a table, and as CSV. Read from
the coordinator's API as the signed-in person: figures only, no patient."""

from __future__ import annotations

import csv
import io
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromQuery
from litestar.response import Template

from services.web.pages import _page, _Pages
from shared.auth import Role, requires
from shared.web import service_client

# What each part of a week's bar stands for, bottom up, and its class on the chart.
OUTCOMES = (
    ("treated_within_alert", "treated within the alert standard", "bar-ok"),
    ("treated_within_breach", "treated before the breach", "bar-warning"),
    ("treated_later", "treated after the breach", "bar-urgent"),
    ("waiting", "still waiting", "bar-waiting"),
)
CSV_COLUMNS = (
    "team",
    "week_starting",
    "referred",
    "treated_within_alert",
    "treated_within_breach",
    "treated_later",
    "waiting",
    "waiting_past_breach",
    "alert_weeks",
    "breach_weeks",
)
MAX_WEEKS = 104
CHART = {"width": 640, "height": 160, "left": 30, "bottom": 20}


def _within_range(weeks: int) -> int:
    """A typed-in number of weeks, kept to what the report answers (1 to 104)."""
    return min(max(weeks, 1), MAX_WEEKS)


async def _report(request: Request[Any, Any, Any], weeks: int) -> list[dict[str, Any]]:
    async with service_client(request, "coordinator") as coordinator:
        report = await coordinator.get("/api/reports/waits", weeks=weeks)
    rows: list[dict[str, Any]] = report["weeks"]
    return rows


def _bars(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One team's stacked bars, as SVG rectangles (no inline style: the page's CSP)."""
    tallest = max((row["referred"] for row in rows), default=0) or 1
    plot_h = CHART["height"] - CHART["bottom"]
    step = (CHART["width"] - CHART["left"]) / max(len(rows), 1)
    bars = []
    for n, row in enumerate(rows):
        x = CHART["left"] + n * step + 2
        y = plot_h
        parts = []
        for field, label, css in OUTCOMES:
            h = row[field] / tallest * (plot_h - 10)
            if h:
                y -= h
                parts.append({"y": round(y, 1), "h": round(h, 1), "css": css, "label": label})
        bars.append({"x": round(x, 1), "w": round(step - 4, 1), "parts": parts, "row": row, "n": n})
    return {"bars": bars, "tallest": tallest, "plot_h": plot_h, **CHART}


class ReportPagesController(_Pages):
    path = "/reports"
    guards = [requires(Role.admin, Role.mdt)]

    @get("/waits")
    async def waits(self, request: Request[Any, Any, Any], weeks: FromQuery[int] = 12) -> Template:
        weeks = _within_range(weeks)
        rows = await _report(request, weeks)
        teams: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            teams.setdefault(row["team"], []).append(row)
        return _page(
            request,
            "waits.html",
            weeks=weeks,
            teams={
                team: {"rows": team_rows, "chart": _bars(team_rows)}
                for team, team_rows in teams.items()
            },
            outcomes=OUTCOMES,
        )

    @get("/waits.csv")
    async def waits_csv(
        self, request: Request[Any, Any, Any], weeks: FromQuery[int] = 12
    ) -> Response[str]:
        weeks = _within_range(weeks)
        rows = await _report(request, weeks)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="waits-{weeks}-weeks.csv"'},
        )


REPORT_PAGES = (ReportPagesController,)
