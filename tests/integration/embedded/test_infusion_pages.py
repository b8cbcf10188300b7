"""The infusion clinician's day in the browser (issue 13), over the embedded app: a
course page to book the next infusion on the clinic's calendar, and a session's run
sheet from check-in to completion, every step through the infusions API as the person."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import unquote_plus

import pytest

from shared.auth import Role
from shared.calendar import working_calendar
from shared.clock import clinic_clock
from tests.embedded import Embedded

from .test_dashboard import page, post_form, sign_in, with_csrf
from .test_infusions_api import Embedded as InfusionClinic
from .test_infusions_api import assess, open_course, planned_course

NURSE = "nurse-pages"


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    yield
    clinic_clock().reset()


def said(location: str) -> str:
    return unquote_plus(location)


def sessions_of(embedded: Embedded, course_id: str) -> list[dict[str, Any]]:
    response = embedded.client.get(
        f"/api/infusion-courses/{course_id}", headers=embedded.headers(Role.infusion_clinician)
    )
    assert response.status_code == 200, response.text
    sessions: list[dict[str, Any]] = response.json()["sessions"]
    return sessions


def test_an_infusion_is_booked_and_run_from_the_pages(embedded: Embedded) -> None:
    infusions = InfusionClinic(embedded.client, embedded.app, embedded.platform, cast(Any, None))
    course = planned_course(infusions)
    sign_in(embedded, NURSE, Role.infusion_clinician)
    course_page = f"/courses/{course.course_id}"
    assert "Dosing plan" in page(embedded, course_page)

    # Booked for tomorrow 09:00-13:00 on the clinic's wall clock; the same form twice
    # books once.
    tomorrow = working_calendar().day_of(datetime.now().astimezone()) + timedelta(days=1)
    booking = {"day": tomorrow.isoformat(), "start": "09:00", "end": "13:00", "form_key": "b-1"}
    booking["kind"] = "induction"
    for _ in range(2):
        booked = said(post_form(embedded, f"{course_page}/sessions", booking))
        assert "done=Infusion booked" in booked, booked
    (session,) = sessions_of(embedded, course.course_id)
    start = datetime.fromisoformat(session["scheduled_start"])
    assert working_calendar().local(start).strftime("%H:%M") == "09:00"
    sheet = f"/infusion-sessions/{session['id']}"
    assert f'href="{sheet}"' in page(embedded, course_page)

    clinic_clock().set(start + timedelta(minutes=5))  # the day of the infusion
    assert "done=Checked in" in said(post_form(embedded, f"{sheet}/check-in", {"form_key": "c-1"}))
    # A typing slip is refused naming the field, and nothing is recorded.
    slip = {"systolic": "1a5", "diastolic": "90", "heart_rate": "80", "spo2": "97"}
    refused = said(post_form(embedded, f"{sheet}/vitals", slip))
    assert "error=Not recorded" in refused and "systolic" in refused
    high = {"systolic": "165", "diastolic": "95", "heart_rate": "80", "spo2": "97"}
    flagged = said(post_form(embedded, f"{sheet}/vitals", high | {"form_key": "v-1"}))
    assert "error=Vitals recorded, out of range: systolic 165" in flagged
    html = page(embedded, sheet)
    assert "Next reading due at" in html and "165/95" in html and '"1a5"' not in html
    before = {"pain_nrs": "8", "mood": "3", "form_key": "s-1"}
    assert "done=Scores before" in said(post_form(embedded, f"{sheet}/scores-before", before))

    # Over the start limit: no start without a named override, then with one.
    blocked = said(post_form(embedded, f"{sheet}/start", {"form_key": "st-1"}))
    assert "error=Not recorded" in blocked and "override" in blocked
    override = {"reason": "Rechecked after rest, consultant agreed", "form_key": "st-2"}
    assert "done=Infusion started" in said(post_form(embedded, f"{sheet}/start", override))

    calm = {"systolic": "130", "diastolic": "80", "heart_rate": "72", "spo2": "97"}
    assert "done=Vitals recorded" in said(post_form(embedded, f"{sheet}/vitals", calm))
    given = {"given_mg": str(session["planned_mg"]), "form_key": "d-1"}
    assert "done=Dose given" in said(post_form(embedded, f"{sheet}/dose", given))
    phq9 = {f"phq9-{n}": "1" for n in range(1, 10)}
    after = {"pain_nrs": "4", "mood": "6", "form_key": "f-1"} | phq9
    assert "done=Infusion completed" in said(post_form(embedded, f"{sheet}/complete", after))
    done = embedded.client.get(
        f"/api/infusion-sessions/{session['id']}", headers=embedded.headers(Role.mdt)
    ).json()
    assert (done["status"], done["pain_after"], done["phq9_total"]) == ("completed", 4, 9)
    assert done["start_override"]["reason"] == "Rechecked after rest, consultant agreed"
    assert [v["systolic"] for v in done["vitals"]] == [165, 130]


def test_the_mdt_reads_the_run_sheet_but_does_not_run_it(embedded: Embedded) -> None:
    infusions = InfusionClinic(embedded.client, embedded.app, embedded.platform, cast(Any, None))
    course = planned_course(infusions)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    html = page(embedded, f"/courses/{course.course_id}")
    assert "Dosing plan" in html and "Book the next infusion" not in html
    sign_in(embedded, "psy-jones", Role.psychologist)
    page(embedded, f"/courses/{course.course_id}", 403)


def test_the_dosing_plan_shows_its_dose_before_it_is_agreed(embedded: Embedded) -> None:
    """CLINICAL.md, Dosing plan: every dose is computed from the plan's weight. The page
    shows the dose the infusions service computes, agrees only from that preview, needs a
    reason outside the band and refuses a weight far from the assessment's."""
    infusions = InfusionClinic(embedded.client, embedded.app, embedded.platform, cast(Any, None))
    opened = open_course(infusions)
    assess(infusions, opened.course_id)
    sign_in(embedded, NURSE, Role.infusion_clinician)
    course_page = f"/courses/{opened.course_id}"
    assert 'value="70' in page(embedded, course_page)  # the assessed weight, ready

    plan = {"indication": "depression", "weight_kg": "70", "dose_mg_per_kg": "0.5"}
    plan |= {"infusion_minutes": "40", "induction_count": "6", "induction_spacing_days": "3"}
    shown = embedded.client.post(
        f"{course_page}/plan", data=with_csrf(embedded, plan | {"step": "preview"})
    )
    assert shown.status_code == 200, shown.text[:500]
    assert "<strong>35 mg</strong> at 52.5 mg/h, computed from 70 kg" in shown.text
    assert 'value="agree"' in shown.text
    assert sessions_of(embedded, opened.course_id) == []
    unplanned = embedded.client.get(
        f"/api/infusion-courses/{opened.course_id}", headers=embedded.headers(Role.mdt)
    ).json()
    assert unplanned.get("plan") is None  # a preview saves nothing

    pounds = embedded.client.post(
        f"{course_page}/plan", data=with_csrf(embedded, plan | {"weight_kg": "154"})
    )
    assert "Not possible" in pounds.text and "differs from the latest assessment" in pounds.text
    assert 'value="agree"' not in pounds.text

    high = plan | {"dose_mg_per_kg": "0.9"}  # above the band (0.75), under the ceiling (1.0)
    outside = embedded.client.post(f"{course_page}/plan", data=with_csrf(embedded, high))
    section = outside.text[outside.text.index('id="plan-h"') :]
    assert "Outside the policy's band: dose_mg_per_kg" in section, section[:3000]
    assert 'name="override_reason"' in outside.text

    agreed = said(post_form(embedded, f"{course_page}/plan", plan | {"step": "agree"}))
    assert "done=Dosing plan agreed" in agreed, agreed
    html = page(embedded, course_page)
    assert "depression: 35" in html and "agreed by nurse-pages" in html
    # Changing the plan starts from the one agreed.
    assert 'name="dose_mg_per_kg" inputmode="decimal" value="0.5"' in html
    assert '<option value="depression" selected>' in html


def test_the_eligibility_checklist_is_filled_in_on_the_course_page(embedded: Embedded) -> None:
    """CLINICAL.md, Eligibility assessment: a contraindication present makes the patient
    not eligible; a caution needs an override with a reason; the service decides."""
    infusions = InfusionClinic(embedded.client, embedded.app, embedded.platform, cast(Any, None))
    opened = open_course(infusions)
    sign_in(embedded, NURSE, Role.infusion_clinician)
    course_page = f"/courses/{opened.course_id}"
    assert "Record the eligibility assessment" in page(embedded, course_page)
    form = {"weight_kg": "72", "systolic": "128", "diastolic": "82", "heart_rate": "70"}
    form |= {"opioid_mme_per_day": "30", "pain_nrs": "7"}
    form |= {f"phq9-{n}": "2" for n in range(1, 10)}
    form |= {"prior-name-1": "pregabalin", "prior-kind-1": "medicine", "prior-outcome-1": "none"}

    slip = said(post_form(embedded, f"{course_page}/assessment", form | {"pain_nrs": "11"}))
    assert "error=Not recorded" in slip and "pain_nrs" in slip

    caution = form | {"present-controlled-hypertension": "yes", "form_key": "a-1"}
    held = said(post_form(embedded, f"{course_page}/assessment", caution))
    assert "done=Assessed: a caution needs a clinician's override" in held, held
    overridden = caution | {"override-controlled-hypertension": "BP 128/82 on amlodipine"}
    eligible = said(
        post_form(embedded, f"{course_page}/assessment", overridden | {"form_key": "a-2"})
    )
    assert "done=Assessed: eligible" in eligible, eligible
    html = page(embedded, course_page)
    assert "<strong>eligible</strong>" in html and "weight 72" in html

    blocked = form | {
        "present-psychosis": "yes",
        "note-psychosis": "2019 episode",
        "form_key": "a-3",
    }
    refused = said(post_form(embedded, f"{course_page}/assessment", blocked))
    assert "done=Assessed: not eligible (psychosis)" in refused, refused
