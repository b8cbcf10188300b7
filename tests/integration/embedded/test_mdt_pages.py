"""The MDT's worklist in the browser (issue 13): paged to its end through its own links,
and a review meeting that steps through everyone due, recording each review."""

from __future__ import annotations

import html as markup
import re
from urllib.parse import unquote_plus

import pytest

from services.web import mdt_pages
from shared.auth import Role
from tests.embedded import Embedded

from .test_dashboard import page, post_form, sign_in
from .test_mdt_reviews import referred


def links(html: str, pattern: str) -> list[str]:
    return [markup.unescape(link) for link in re.findall(pattern, html)]


def test_the_worklist_pages_to_its_end_and_a_meeting_reviews_everyone(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = {referred(embedded, item9=2) for _ in range(5)}  # urgent: due for review today
    monkeypatch.setattr(mdt_pages, "WORKLIST_PAGE", 2)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)

    seen: list[str] = []
    where: str | None = "/worklist"
    while where:
        html = page(embedded, where)
        seen += re.findall(r'<td><a href="/patients/([0-9a-f-]{36})">', html)
        following = links(html, r'<a href="([^"]+)" rel="next">')
        where = following[0] if following else None
    assert len(seen) == len(set(seen)) and due <= set(seen)

    reviewed: list[str] = []
    step = embedded.client.get("/worklist/meeting", follow_redirects=False)
    while step.headers["location"].startswith("/patients/"):
        patient_page = page(embedded, step.headers["location"])
        patient_id = step.headers["location"].split("/")[2].split("?")[0]
        assert "Review meeting: record this patient" in patient_page
        (then,) = links(patient_page, r'name="then" value="([^"]+)"')
        review = {"attendees": "Dr Pain, Dr Mood", "decision": "continue", "then": then}
        review["form_key"] = f"meeting-{patient_id}"
        onward = post_form(embedded, f"/patients/{patient_id}/reviews", review)
        assert onward.startswith("/worklist/meeting?") and "done=Review+recorded" in onward
        reviewed.append(patient_id)
        step = embedded.client.get(onward, follow_redirects=False)
    assert "The review meeting is done" in unquote_plus(step.headers["location"])
    assert set(reviewed) == set(seen)
    assert "Nobody is due for review." in page(embedded, "/worklist")


def test_a_meeting_link_leads_nowhere_but_the_meeting(embedded: Embedded) -> None:
    patient_id = referred(embedded, item9=1)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    html = page(embedded, f"/patients/{patient_id}?meeting=https://elsewhere.example/")
    assert "elsewhere.example" not in html and "Review meeting" not in html
