"""The psychologist's day in the browser (issue 13), over the embedded app: join with a
diary, take a patient on from the waiting list, book from the diary's free slots, run
the appointment on its day, record PHQ-9 and GAD-7 item by item (item 9 above 0 said at
once) and discharge; every step through the therapy API as the signed-in psychologist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus
from uuid import UUID

import pytest

from services.therapy.models import Appointment, SessionMeasure, TherapyEpisode
from shared.auth import Role
from shared.clock import clinic_clock
from tests.embedded import Embedded, referral_body, register

from .test_dashboard import page, post_form, sign_in
from .test_mdt_reviews import eventually

PSYCHOLOGIST = "psy-pages"


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    yield
    clinic_clock().reset()


def waiting_episode(embedded: Embedded) -> tuple[str, str]:
    """A psychology referral accepted: the therapy service opens an episode on the list."""
    patient_id = register(embedded)
    referral = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, target="psychology", prior_treatments=[]),
        headers=embedded.headers(Role.referrer),
    ).json()
    accepted = embedded.client.post(
        f"/api/referrals/{referral['id']}/triage",
        json={"decision": "accept"},
        headers=embedded.headers(Role.psychologist),
    )
    assert accepted.status_code == 200, accepted.text

    def opened() -> str | None:
        found = embedded.client.get(
            "/api/therapy-episodes",
            params={"patient_id": patient_id},
            headers=embedded.headers(Role.psychologist),
        ).json()["items"]
        return str(found[0]["id"]) if found else None

    return patient_id, eventually(opened, "the episode to open")


def said(location: str) -> str:
    return unquote_plus(location)


def appointments_of(embedded: Embedded, episode_id: str) -> list[Appointment]:
    with embedded.runtime("therapy").sessions() as session:
        return list(
            session.exec(
                Appointment.__table__.select().where(  # type: ignore[attr-defined]
                    Appointment.episode_id == UUID(episode_id)
                )
            ).all()
        )


def test_a_psychologist_runs_an_episode_from_the_pages(embedded: Embedded) -> None:
    patient_id, episode_id = waiting_episode(embedded)
    sign_in(embedded, PSYCHOLOGIST, Role.psychologist)
    assert "You have no diary yet" in page(embedded, "/caseload")
    hours = {f"day-{n}": "yes" for n in range(7)} | {"start": "08:00", "end": "18:00"}
    joined = post_form(embedded, "/caseload/diary", {"join": "yes", "display_name": "Dr P"} | hours)
    assert "done=Working+hours+saved" in joined, said(joined)
    assert "Monday 08:00\u201318:00" in page(embedded, "/caseload")

    # The waiting list names the patient and leads to the episode, to take them on.
    inbox = page(embedded, "/inbox")
    assert f'<a href="/episodes/{episode_id}">Ada Example</a>' in inbox
    taken = post_form(embedded, f"/episodes/{episode_id}/assign", {"form_key": "take-1"})
    assert "done=Taken+on" in taken, said(taken)
    assert f'<a href="/episodes/{episode_id}">Ada Example</a>' in page(embedded, "/caseload")

    # Booked from the diary's free slots; the same form sent twice books once.
    html = page(embedded, f"/episodes/{episode_id}")
    slots = re.findall(r'<option value="(\d{4}-\d\d-\d\dT[^"]+)">', html)
    assert slots, html[:2000]
    booking = {"start": slots[0], "kind": "assessment", "mode": "video", "form_key": "book-1"}
    for _ in range(2):
        assert "done=Appointment+booked" in post_form(
            embedded, f"/episodes/{episode_id}/appointments", booking
        )
    (booked,) = appointments_of(embedded, episode_id)
    base = f"/episodes/{episode_id}/appointments/{booked.id}"

    # Attended on its day (the clinic clock moves there).
    clinic_clock().set(datetime.fromisoformat(slots[0]))
    assert "done=Marked+attended" in post_form(embedded, f"{base}/attend", {"form_key": "a-1"})

    # PHQ-9 item by item: an unanswered item is refused, naming it; nothing is written.
    partial = {"instrument": "PHQ-9"} | {f"item-{n}": "1" for n in range(1, 9)}
    refused = post_form(embedded, f"{base}/measures", partial | {"form_key": "m-0"})
    assert "error=" in refused and "answer every PHQ-9 item" in said(refused)
    risky = partial | {"item-9": "1", "form_key": "m-1"}
    flagged = said(post_form(embedded, f"{base}/measures", risky))
    assert "error=PHQ-9 recorded: 9 (mild)" in flagged and "urgent safety alert" in flagged
    gad = {"instrument": "GAD-7", "form_key": "m-2"} | {f"item-{n}": "1" for n in range(1, 8)}
    assert "done=GAD-7 recorded: 7 (mild)" in said(post_form(embedded, f"{base}/measures", gad))
    with embedded.runtime("therapy").sessions() as session:
        recorded = session.exec(
            SessionMeasure.__table__.select().where(  # type: ignore[attr-defined]
                SessionMeasure.appointment_id == booked.id
            )
        ).all()
    assert sorted((m.instrument, m.total) for m in recorded) == [("GAD-7", 7), ("PHQ-9", 9)]
    shown = page(embedded, f"/episodes/{episode_id}")
    assert "item 9 above 0: urgent safety alert" in shown and "fulfilled" in shown

    # A step the service refuses says why on the page.
    again = said(post_form(embedded, f"{base}/noshow", {"form_key": "n-1"}))
    assert "error=Not done:" in again

    # Issue 12: no discharge while the urgent safety alert is open; the page says so.
    discharge = f"/episodes/{episode_id}/discharge"
    leaving = {"reason": "declined", "note": "Prefers to stop after the assessment."}
    held = said(post_form(embedded, discharge, leaving))
    assert "error=Not discharged" in held and "urgent alert is open" in held
    pathway = embedded.client.get(f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt))
    (alert,) = [a for a in pathway.json()["alerts"] if a["kind"] == "phq9-item9"]
    resolved = embedded.client.post(
        f"/api/alerts/{alert['id']}/resolve",
        json={"note": "Risk assessed by phone; safety plan agreed."},
        headers=embedded.headers(Role.mdt, "dr-mdt-lead"),
    )
    assert resolved.status_code == 200, resolved.text
    eventually(
        lambda: "done=Discharged" in post_form(embedded, discharge, leaving),
        "the discharge once the alert is resolved",
    )
    with embedded.runtime("therapy").sessions() as session:
        episode = session.get(TherapyEpisode, UUID(episode_id))
        assert episode is not None
        assert (episode.status, episode.discharge_reason) == ("cancelled", "declined")


def test_only_the_psychologist_runs_appointments(embedded: Embedded) -> None:
    _, episode_id = waiting_episode(embedded)
    sign_in(embedded, "nurse-okafor", Role.infusion_clinician)
    page(embedded, "/caseload", 403)
    page(embedded, f"/episodes/{episode_id}", 403)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    html: Any = page(embedded, f"/episodes/{episode_id}")
    assert "Take on to my caseload" not in html and "Record PHQ-9" not in html
