"""Pathway status filtered and paged on the server (issue 13): no ceiling on how many
pathways the page can reach, the figures are the whole filtered population's, and a
breached wait is judged by the coordinator, not the page."""

from __future__ import annotations

import html as markup
import re
from typing import Any

import pytest

from services.coordinator.domain import waiting_state
from services.web import pages as dashboard
from shared.auth import Role
from shared.clock import clinic_clock
from tests.embedded import Embedded

from .test_dashboard import page, sign_in
from .test_mdt_reviews import referred


def walk(embedded: Embedded, first: str) -> tuple[list[str], int]:
    """Every patient the status pages list, following their own links; the count shown."""
    seen: list[str] = []
    shown = -1
    where: str | None = first
    while where:
        html = page(embedded, where)
        if shown < 0:
            match = re.search(r'id="count-patients">(\d+)<', html)
            assert match is not None
            shown = int(match.group(1))
        seen += re.findall(r'<tr id="p-([0-9a-f-]{36})"', html)
        following = re.findall(r'<a href="([^"]+)" rel="next">', html)
        where = markup.unescape(following[0]) if following else None
    return seen, shown


def counts(embedded: Embedded, **params: Any) -> dict[str, Any]:
    response = embedded.client.get(
        "/api/pathways/counts", params=params, headers=embedded.headers(Role.admin)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_status_pages_reach_every_pathway_and_count_them_all(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = {referred(embedded, target="psychology") for _ in range(5)}
    monkeypatch.setattr(dashboard, "STATUS_PAGE", 2)
    sign_in(embedded, "admin-kim", Role.admin)
    seen, shown = walk(embedded, "/status?team=psychology")
    assert len(seen) == len(set(seen)) == shown and ours <= set(seen)
    figures = counts(embedded, team="psychology")
    assert figures["patients"] == shown and sum(figures["by_stage"].values()) == shown


def test_a_breached_wait_is_the_coordinators_judgement(embedded: Embedded) -> None:
    waiting = referred(embedded, target="psychology")
    assert counts(embedded, breached=True)["waits_breached"] == 0
    moved = embedded.client.post(
        "/api/clock/advance", json={"by": "19w"}, headers=embedded.headers(Role.admin)
    )
    try:
        assert moved.status_code == 200, moved.text
        listed = embedded.client.get(
            "/api/pathways", params={"breached": True}, headers=embedded.headers(Role.admin)
        ).json()["items"]
        assert waiting in {item["patient_id"] for item in listed}
        assert {item["waiting"] for item in listed} == {"breached"}
        assert counts(embedded, breached=True)["waits_breached"] == len(listed)
        sign_in(embedded, "admin-kim", Role.admin)
        html = page(embedded, "/status?breached=true")
        assert f'id="p-{waiting}"' in html and 'class="wait wait-breached"' in html
    finally:
        clinic_clock().reset()


def test_the_wait_follows_the_open_alerts() -> None:
    assert waiting_state(set()) == "within"
    assert waiting_state({"phq9-item9"}) == "within"
    assert waiting_state({"triage-overdue"}) == "at-risk"
    assert waiting_state({"waiting-time", "phq9-item9"}) == "at-risk"
    assert waiting_state({"waiting-time", "waiting-breach"}) == "breached"


def test_the_waits_report_as_a_page_and_as_csv(embedded: Embedded) -> None:
    """Issue 13: the admin's waiting-times report per team and week, chart and CSV."""
    referred(embedded, target="psychology")
    report = embedded.client.get(
        "/api/reports/waits", params={"weeks": 4}, headers=embedded.headers(Role.admin)
    )
    assert report.status_code == 200, report.text
    rows = report.json()["weeks"]
    assert {row["team"] for row in rows} == {"psychology", "ketamine-infusion", "pain-mdt"}
    this_week = [row for row in rows if row["team"] == "psychology"][-1]
    assert this_week["referred"] >= 1 and this_week["waiting"] == this_week["referred"]
    too_many = embedded.client.get(
        "/api/reports/waits", params={"weeks": 1000}, headers=embedded.headers(Role.admin)
    )
    assert too_many.status_code == 422
    assert "weeks" in too_many.text

    sign_in(embedded, "admin-kim", Role.admin)
    html = page(embedded, "/reports/waits?weeks=4")
    assert html.count("<svg") == 3 and "Download CSV" in html
    download = embedded.client.get("/reports/waits.csv?weeks=4")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    lines = download.text.strip().splitlines()
    assert lines[0].startswith("team,week_starting,referred,treated_within_alert")
    assert len(lines) == 1 + len(rows)
