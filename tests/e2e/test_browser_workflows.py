"""Three teams' daily work in a real browser (Debian's headless Chromium, driven by
Playwright) against `carepath up --demo`, with the fixtures of test_browser.py: the
psychologist's episode (take on, book from the diary, run the appointment on its day,
PHQ-9 item by item), the infusion clinician's run sheet, and the MDT's worklist to a
review. Each patient is made for its test over the API, so the demo's own cohort can
change without changing these.

Each role's home page is also written to docs/screenshots/<role>-home.png (the README
shows them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from shared.calendar import working_calendar
from shared.policy import clinical_policy
from tests.e2e import test_browser
from tests.e2e.test_browser import SCREENSHOTS, sign_in
from tests.embedded import assessment_body, plan_body
from tests.support import patient_body, referral_body, token, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

# test_browser.py's fixtures, by name: `carepath up --demo` (once for this module), the
# identity provider it is configured with, Chromium and a fresh page a test.
provider = test_browser.provider
clinic = test_browser.clinic
browser = test_browser.browser
page = test_browser.page

PSYCHOLOGIST = "psy-browser"
NURSE = "nurse-browser"
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def api(base: str, role: str, user: str = "test-user") -> httpx.Client:
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token(role, user)}"}, timeout=30
    )


def ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), f"{response.request.url}: {response.text}"
    return response.json()


@pytest.fixture
def clock(clinic: str) -> Iterator[Callable[[str], None]]:
    """Moves the clinic's clock (as an admin, over the API) to a booked day; puts it back."""
    with api(clinic, "admin") as admin:

        def set_to(at: str) -> None:
            ok(admin.post("/api/clock/set", json={"at": at}))

        try:
            yield set_to
        finally:
            ok(admin.post("/api/clock/reset"))


def accepted_referral(base: str, given: str, family: str, target: str) -> tuple[str, str]:
    """A patient referred and accepted by the receiving team: the patient's and the
    referral's ids (the team's service opens the episode or course from the event)."""
    with api(base, "referrer", "dr-gp-browser") as referrer:
        patient = ok(
            referrer.post("/api/patients", json=patient_body(given_name=given, family_name=family))
        )["id"]
        body = referral_body(patient, target=target)
        if target == "psychology":
            body["prior_treatments"] = []
        referral = ok(referrer.post("/api/referrals", json=body))["id"]
    triager = "psychologist" if target == "psychology" else "infusion-clinician"
    with api(base, triager) as team:
        ok(team.post(f"/api/referrals/{referral}/triage", json={"decision": "accept"}))
    return patient, referral


def opened(base: str, role: str, path: str, patient_id: str) -> dict[str, Any]:
    """The episode or course the accepted referral opened, once it has."""
    with api(base, role) as reader:

        def found() -> dict[str, Any] | None:
            items = ok(reader.get(path, params={"patient_id": patient_id}))["items"]
            return items[0] if items else None

        return wait_until(found, timeout=20, interval=0.2, what=f"{path} for the patient")


def region(page: Page, name: str, exact: bool = True) -> Locator:
    """A page's section by its heading (each is labelled by it: a region)."""
    return page.get_by_role("region", name=name, exact=exact)


def said(page: Page, text: str) -> Locator:
    """What the form's redirect said on the page, as a quiet status."""
    return page.get_by_role("status").filter(has_text=text)


# --- each role's home page, for the README ----------------------------------------------
# First in the file, so the pictures show the demo as seeded: the tests below add patients
# and move the clock.

HOMES = {
    # role: (a user of the demo, where signing in lands, the page's heading)
    "referrer": ("dr-gp-ahmed", "/referrals/mine", "My referrals"),
    "psychologist": ("psy-jones", "/inbox", "Psychology inbox"),
    "infusion-clinician": ("nurse-okafor", "/clinic", "Infusion clinic"),
    "mdt": ("dr-mdt-lead", "/status", "Pathway status"),
    "admin": ("admin-demo", "/status", "Pathway status"),
}


@pytest.mark.parametrize("role", HOMES)
def test_each_roles_home_page_for_the_readme(
    clinic: str,
    page: Page,
    role: str,
) -> None:
    user, home, heading = HOMES[role]
    sign_in(page, clinic, user, role)
    expect(page).to_have_url(f"{clinic}{home}")
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(page.get_by_role("main").get_by_role("row").nth(1)).to_be_attached()  # not empty
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{role}-home.png"), full_page=False)


# --- the psychologist -------------------------------------------------------------------

PHQ9_WELL = [1, 2, 0, 1, 1, 0, 1, 1, 0]  # 7, mild; item 9 is 0
PHQ9_AT_RISK = [2, 2, 1, 1, 2, 1, 1, 1, 1]  # 12, moderate; item 9 is 1


def record_phq9(appointment: Locator, items: list[int]) -> None:
    form = appointment.locator("details", has_text="Record PHQ-9")
    form.locator("summary").click()  # open it: the items are hidden until asked for
    for n, answer in enumerate(items, start=1):
        form.get_by_label(f"Item {n}", exact=True).select_option(str(answer))
    form.get_by_role("button", name="Record PHQ-9").click()


def test_a_psychologist_takes_a_patient_on_books_runs_the_appointment_and_scores_phq9(
    clinic: str,
    page: Page,
    clock: Callable[[str], None],
) -> None:
    patient_id, _ = accepted_referral(clinic, "Wren", "Playwright", "psychology")
    episode_id = opened(clinic, "psychologist", "/api/therapy-episodes", patient_id)["id"]
    sign_in(page, clinic, PSYCHOLOGIST, "psychologist")
    expect(page).to_have_url(f"{clinic}/inbox")

    # A diary first (every day, 08:00 to 18:00, so there are free slots whatever today is).
    page.get_by_role("link", name="My caseload").click()
    expect(page.get_by_text("You have no diary yet")).to_be_visible()
    page.get_by_label("Your name as patients see it").fill("Dr W. Browser")
    for day in WEEKDAYS:
        page.get_by_label(day, exact=True).check()
    page.get_by_label("From", exact=True).fill("08:00")
    page.get_by_label("To", exact=True).fill("18:00")
    page.get_by_role("button", name="Save working hours").click()
    expect(said(page, "Working hours saved.")).to_be_visible()

    # From the waiting list to the episode; taken on.
    page.get_by_role("link", name="Psychology inbox").click()
    region(page, "Waiting list", exact=False).get_by_role("link", name="Wren Playwright").click()
    expect(page).to_have_url(f"{clinic}/episodes/{episode_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Wren Playwright: psychology")
    page.get_by_role("button", name="Take on to my caseload").click()
    expect(said(page, "Taken on to your caseload")).to_be_visible()
    expect(page.get_by_role("button", name="Take on to my caseload")).to_have_count(0)

    # Booked from the diary's free slots: the first one offered.
    booking = region(page, "Book an appointment")
    slot = booking.get_by_label("Free slot in my diary")
    start = slot.input_value()
    shown = slot.locator("option:checked").inner_text()
    booking.get_by_label("Kind").select_option("assessment")
    booking.get_by_label("How").select_option("video")
    booking.get_by_role("button", name="Book", exact=True).click()
    expect(said(page, "Appointment booked.")).to_be_visible()
    expect(slot.locator(f'option[value="{start}"]')).to_have_count(0)  # no longer free
    appointment = region(page, "Appointments (1)").get_by_role("article")
    expect(appointment.get_by_role("heading")).to_have_text(f"{shown} · assessment (video) booked")

    # On its day: checked in, attended.
    clock(start)
    page.reload()
    appointment.get_by_role("button", name="Check in").click()
    expect(said(page, "Checked in.")).to_be_visible()
    expect(appointment.get_by_role("heading")).to_have_text(re.compile(r" arrived$"))
    appointment.get_by_role("button", name="Attended", exact=True).click()
    expect(said(page, "Marked attended.")).to_be_visible()
    expect(appointment.get_by_role("heading")).to_have_text(re.compile(r" fulfilled$"))

    # PHQ-9 item by item: the total shown is the therapy service's.
    record_phq9(appointment, PHQ9_WELL)
    expect(said(page, "PHQ-9 recorded: 7 (mild).")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
    with api(clinic, "psychologist", PSYCHOLOGIST) as therapy:
        read = ok(therapy.get(f"/api/therapy-episodes/{episode_id}"))
    (measure,) = read["appointments"][0]["measures"]
    assert (measure["total"], measure.get("risk_flagged", False)) == (sum(PHQ9_WELL), False)
    expect(appointment.get_by_role("listitem")).to_have_text(
        f"PHQ-9 {measure['total']} ({measure['band']})"
    )

    # Item 9 above 0: the urgent alert is said on the page the form answers with.
    record_phq9(appointment, PHQ9_AT_RISK)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("PHQ-9 recorded: 12 (moderate).")
    expect(alert).to_contain_text("the urgent safety alert is raised for the MDT")
    with api(clinic, "psychologist", PSYCHOLOGIST) as therapy:
        read = ok(therapy.get(f"/api/therapy-episodes/{episode_id}"))
    risky = [m for m in read["appointments"][0]["measures"] if m.get("risk_flagged")]
    assert [m["total"] for m in risky] == [sum(PHQ9_AT_RISK)]
    expect(appointment.get_by_role("listitem").nth(1)).to_have_text(
        f"PHQ-9 {risky[0]['total']} ({risky[0]['band']}) item 9 above 0: urgent safety alert"
    )
    # And the MDT has it on the patient's pathway.
    with api(clinic, "mdt") as mdt:
        wait_until(
            lambda: any(
                a["kind"] == "phq9-item9"
                for a in ok(mdt.get(f"/api/pathways/{patient_id}"))["alerts"]
            ),
            what="the phq9-item9 alert on the pathway",
        )


# --- the infusion clinician -------------------------------------------------------------


def booked_infusion(base: str, given: str, family: str) -> dict[str, Any]:
    """A course assessed eligible with a pain plan (0.3 mg/kg/h for 4 h, 70 kg) and its
    first infusion booked for tomorrow at 09:00 on the clinic's wall clock."""
    patient_id, _ = accepted_referral(base, given, family, "ketamine-infusion")
    course = opened(base, "infusion-clinician", "/api/infusion-courses", patient_id)["id"]
    calendar = working_calendar()
    tomorrow = calendar.day_of(datetime.now(UTC)) + timedelta(days=1)
    start = datetime.combine(tomorrow, time(9, 0), tzinfo=calendar.zone).astimezone(UTC)
    when = {"start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat()}
    with api(base, "infusion-clinician", NURSE) as infusions:
        ok(infusions.post(f"/api/infusion-courses/{course}/assessments", json=assessment_body()))
        ok(infusions.post(f"/api/infusion-courses/{course}/plan", json=plan_body()))
        session: dict[str, Any] = ok(
            infusions.post(f"/api/infusion-courses/{course}/sessions", json=when)
        )
    return session


def test_an_infusion_clinician_runs_a_session_from_its_run_sheet(
    clinic: str,
    page: Page,
    clock: Callable[[str], None],
) -> None:
    session = booked_infusion(clinic, "Rowan", "Sheetwright")
    clock((datetime.fromisoformat(session["scheduled_start"]) + timedelta(minutes=5)).isoformat())

    # The clinic's day lists the session; its run sheet from there.
    sign_in(page, clinic, NURSE, "infusion-clinician")
    expect(page).to_have_url(f"{clinic}/clinic")
    today = region(page, "Today's sessions", exact=False)
    row = today.get_by_role("row").filter(has=page.get_by_role("link", name="Rowan Sheetwright"))
    row.get_by_role("link", name="infusion 1 (induction)").click()
    expect(page).to_have_url(f"{clinic}/infusion-sessions/{session['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Rowan Sheetwright: infusion 1 (induction)"
    )
    status = page.locator(".meta strong")
    expect(status).to_have_text("scheduled")

    page.get_by_role("button", name="Check in").click()
    expect(said(page, "Checked in: take the pre-infusion vitals.")).to_be_visible()
    expect(status).to_have_text("checked-in")

    # Vitals, and when the next reading is due: the reading's time plus the policy's interval.
    vitals = region(page, "Vitals")
    vitals.get_by_label("Systolic").fill("128")
    vitals.get_by_label("Diastolic").fill("78")
    vitals.get_by_label("Pulse").fill("72")
    vitals.get_by_label("SpO2 %").fill("98")
    vitals.get_by_role("button", name="Record vitals").click()
    expect(said(page, "Vitals recorded.")).to_be_visible()
    reading = vitals.get_by_role("row").nth(1)
    expect(reading).to_contain_text("128/78")
    taken = datetime.strptime(reading.get_by_role("cell").first.inner_text().strip(), "%H:%M")
    interval = clinical_policy().vitals.interval_minutes
    due = (taken + timedelta(minutes=interval)).strftime("%H:%M")
    expect(vitals.get_by_text("Next reading due at")).to_have_text(
        f"Next reading due at {due} (at least every {interval} minutes)."
    )

    steps = region(page, "Next steps")
    steps.get_by_label("Pain now").fill("7")
    steps.get_by_label("Mood now").fill("4")
    steps.get_by_role("button", name="Record scores before").click()
    expect(said(page, "Scores before recorded.")).to_be_visible()
    steps.get_by_role("button", name="Start the infusion").click()
    expect(said(page, "Infusion started.")).to_be_visible()
    expect(status).to_have_text("in-progress")

    # The dose given: the plan's, offered as it stands.
    dose = steps.get_by_label("Dose given (mg)")
    given = dose.input_value()
    assert float(given) == session["planned_mg"]
    steps.get_by_role("button", name="Record the dose").click()
    expect(said(page, "Dose given recorded.")).to_be_visible()
    expect(page.locator(".meta")).to_contain_text(f"given {given} mg")

    steps.get_by_label("Pain after").fill("3")
    steps.get_by_label("Mood after").fill("6")
    steps.get_by_role("button", name="Complete the infusion").click()
    expect(said(page, "Infusion completed.")).to_be_visible()
    expect(status).to_have_text("completed")
    expect(page.get_by_text("Pain 7 → 3, mood 4 → 6.")).to_be_visible()
    expect(page.get_by_role("button", name="Start the infusion")).to_have_count(0)
    with api(clinic, "mdt") as mdt:
        done = ok(mdt.get(f"/api/infusion-sessions/{session['id']}"))
    assert (done["status"], done["given_mg"], done["pain_after"]) == (
        "completed",
        session["planned_mg"],
        3,
    )


# --- the MDT ----------------------------------------------------------------------------


def test_the_mdt_goes_from_the_worklist_to_a_patient_and_records_a_review(
    clinic: str,
    page: Page,
) -> None:
    sign_in(page, clinic, "dr-mdt-lead", "mdt")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("MDT worklist")
    due = page.get_by_role("table", name="Pathways due for MDT review", exact=False)
    first = due.get_by_role("link").first
    name = first.inner_text().strip()
    assert " " in name  # a name, not a short id
    first.click()
    expect(page).to_have_url(re.compile(r"/patients/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    patient_id = page.url.rsplit("/", 1)[1]

    reviews = region(page, "MDT reviews")
    notes = "Reviewed in the browser test: carry on with the plan."
    reviews.get_by_label("Attendees (comma separated)").fill("Dr Lead, Nurse Okafor, Dr Jones")
    reviews.get_by_label("Decision").select_option("continue")
    reviews.get_by_label("Notes").fill(notes)
    reviews.get_by_role("button", name="Record review").click()
    expect(said(page, "Review recorded.")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/patients/{patient_id}\?"))
    expect(reviews.get_by_role("listitem").filter(has_text=notes)).to_contain_text(
        f"continue (Dr Lead, Nurse Okafor, Dr Jones) — {notes}"
    )
    with api(clinic, "mdt") as mdt:
        recorded = ok(mdt.get(f"/api/pathways/{patient_id}/reviews"))
    assert [(r["decision"], r["notes"]) for r in recorded if r["notes"] == notes] == [
        ("continue", notes)
    ]
