"""The therapy service on a real PostgreSQL and Redis with real workers (issue 5).

An episode opens from a delivered `referral.accepted` for psychology (once, however often
it arrives); two bookings of one slot made at once give one appointment and a 409, and
the database itself refuses a second booking of a clinician's slot; measures publish
their events and reach the pathway; missed appointments reach the DNA threshold once,
and a discharge for them needs a note and closes the referral.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from shared.clock import clinic_clock
from shared.messaging import queue_sender
from tests.integration.conftest import Stack
from tests.support import (
    Processes,
    carepath,
    patient_body,
    plain_url,
    referral_body,
    scalar,
    timeline_types,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

PSYCHOLOGIST = ("psychologist", "psy-1")
MDT = ("mdt", "mdt-1")
REFERRER = ("referrer", "gp-1")
PROBLEM_JSON = "application/problem+json"
# Every day of the week, so there are free slots whenever the test runs.
WORKING_HOURS = {
    "hours": [{"weekday": day, "start": "08:00:00", "end": "18:00:00"} for day in range(7)]
}


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    yield
    clinic_clock().reset()


def headers(who: tuple[str, str]) -> dict[str, str]:
    role, user = who
    return {"Authorization": f"Bearer {token(role, user)}"}


def rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        return connection.execute(query, params).fetchall()


def rows_written(database_url: str, query: str, *params: Any) -> int:
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        return connection.execute(query, params).rowcount


def count(stack: Stack, service: str, query: str, *params: Any) -> int:
    return int(scalar(stack.databases[service], query, *params))


def episode_events(stack: Stack, episode_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The therapy outbox rows about one episode, in order: (type, envelope)."""
    return [
        (row[0], row[1])
        for row in rows(
            stack.databases["therapy"],
            "SELECT type, envelope FROM outbox"
            " WHERE subject_type = 'therapy-episode' AND subject_id = %s ORDER BY sequence",
            episode_id,
        )
    ]


@dataclass
class Episode:
    patient_id: str
    referral_id: str
    read: dict[str, Any]

    @property
    def id(self) -> str:
        episode_id: str = self.read["id"]
        return episode_id


@dataclass
class Clinic:
    """One test's running pieces and the episodes accepted referrals opened."""

    referrals: TestClient[Litestar]
    therapy: TestClient[Litestar]
    episodes: list[Episode]

    @property
    def episode(self) -> Episode:
        return self.episodes[0]

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST to the therapy API as the psychologist and expect success."""
        response = self.therapy.post(path, json=body, headers=headers(PSYCHOLOGIST))
        assert response.status_code in (200, 201), f"{path}: {response.text}"
        return response.json()

    def mark(self, appointment: dict[str, Any], action: str) -> Any:
        """Check in, attend or miss an appointment on its day (issue 12): the clinic clock
        of the APIs in this process moves to its start (the fixture puts it back)."""
        clinic_clock().set(datetime.fromisoformat(appointment["start"]))
        return self.post(f"/api/appointments/{appointment['id']}/{action}")

    def listed(self, **params: str) -> list[dict[str, Any]]:
        response = self.therapy.get(
            "/api/therapy-episodes", params=params, headers=headers(PSYCHOLOGIST)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def open_diary(self) -> list[str]:
        """The psychologist joins the service with working hours; their free slots."""
        _, clinician = PSYCHOLOGIST
        self.post("/api/clinicians", {"id": clinician, "display_name": "Dr Psy"})
        response = self.therapy.put(
            f"/api/clinicians/{clinician}/working-hours",
            json=WORKING_HOURS,
            headers=headers(PSYCHOLOGIST),
        )
        assert response.status_code == 200, response.text
        return self.free_slots()

    def free_slots(self) -> list[str]:
        _, clinician = PSYCHOLOGIST
        response = self.therapy.get(
            f"/api/clinicians/{clinician}/slots", params={"days": 7}, headers=headers(PSYCHOLOGIST)
        )
        assert response.status_code == 200, response.text
        slots: list[str] = response.json()["slots"]
        assert len(slots) > 20, slots
        return slots

    def assign(self, episode: Episode) -> None:
        _, clinician = PSYCHOLOGIST
        assigned = self.post(
            f"/api/therapy-episodes/{episode.id}/assign", {"clinician_id": clinician}
        )
        assert assigned["clinician_id"] == clinician

    def book(self, episode: Episode, start: str, kind: str = "cbt") -> dict[str, Any]:
        body = {"kind": kind, "start": start, "mode": "video"}
        appointment: dict[str, Any] = self.post(
            f"/api/therapy-episodes/{episode.id}/appointments", body
        )
        assert appointment["status"] == "booked"
        return appointment


def open_episodes(
    stack: Stack,
    api_client: Callable[[Litestar], TestClient[Litestar]],
    processes: Processes,
    *,
    workers: tuple[str, ...] = ("therapy",),
    patients: int = 1,
) -> Clinic:
    """Register, refer to psychology, accept: the therapy worker opens an episode each."""
    referrals = api_client(stack.api("referrals"))  # building an app migrates its database
    therapy = api_client(stack.api("therapy"))
    for service in workers:
        processes.start(f"{service}-worker", carepath("worker", service), stack.env())

    accepted: list[tuple[str, str]] = []
    for _ in range(patients):
        patient = referrals.post("/api/patients", json=patient_body(), headers=headers(REFERRER))
        assert patient.status_code == 201, patient.text
        patient_id = patient.json()["id"]
        body = referral_body(patient_id, target="psychology", conditions=["depression"])
        referral = referrals.post("/api/referrals", json=body, headers=headers(REFERRER))
        assert referral.status_code == 201, referral.text
        referral_id = referral.json()["id"]
        triage = referrals.post(
            f"/api/referrals/{referral_id}/triage",
            json={"decision": "accept"},
            headers=headers(PSYCHOLOGIST),
        )
        assert triage.status_code == 200, triage.text
        accepted.append((patient_id, referral_id))

    episodes: list[Episode] = []
    for patient_id, referral_id in accepted:

        def listed(patient_id: str = patient_id) -> list[dict[str, Any]] | None:
            response = therapy.get(
                "/api/therapy-episodes",
                params={"patient_id": patient_id},
                headers=headers(PSYCHOLOGIST),
            )
            items: list[dict[str, Any]] = response.json()["items"] if response.is_success else []
            return items or None

        items = wait_until(listed, timeout=30, what="the therapy worker to open the episode")
        assert len(items) == 1, items
        episodes.append(Episode(patient_id, referral_id, items[0]))
    return Clinic(referrals, therapy, episodes)


def at_once(
    clients: list[TestClient[Litestar]], paths: list[str], body: dict[str, Any]
) -> list[Any]:
    """POST the body to each path through its own client and thread, released together."""
    barrier = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def post(index: int) -> None:
        barrier.wait(10)
        answers[index] = clients[index].post(paths[index], json=body, headers=headers(PSYCHOLOGIST))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(answer is not None for answer in answers), "a booking request did not answer"
    return answers


def one_won(answers: list[Any]) -> Any:
    """Exactly one 201; the other a 409 problem naming `start`. Returns the winner."""
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201, 409], [answer.text for answer in answers]
    loser = next(answer for answer in answers if answer.status_code == 409)
    assert loser.headers["content-type"].startswith(PROBLEM_JSON)
    assert loser.json()["errors"][0]["field"] == "start", loser.text
    return next(answer for answer in answers if answer.status_code == 201)


# --- 1. the episode opens from a delivered referral.accepted, once ----------------------


def test_an_accepted_psychology_referral_opens_one_episode_however_often_it_arrives(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_episodes(stack, api_client, processes, workers=("therapy", "referrals"))
    episode = clinic.episode
    assert episode.read["referral_id"] == episode.referral_id
    assert episode.read["patient_id"] == episode.patient_id
    assert episode.read["status"] == "waitlist"
    waitlist = clinic.listed(status="waitlist")
    assert [item["id"] for item in waitlist] == [episode.id]

    envelope = scalar(
        stack.databases["referrals"],
        "SELECT envelope FROM outbox WHERE type = %s",
        "referral.accepted",
    )
    assert envelope["data"]["referral_id"] == episode.referral_id
    assert envelope["data"]["target"] == "psychology"

    # The same envelope twice more, as a redelivery after a crash would bring it.
    send = queue_sender(stack.runtime("referrals").broker)
    send("therapy", envelope)
    send("therapy", envelope)
    wait_until(
        lambda: processes.log("therapy-worker").count("event.duplicate_ignored") == 2,
        what="both extra copies to be ignored",
    )

    def one_episode_only() -> None:
        assert [item["id"] for item in clinic.listed(patient_id=episode.patient_id)] == [episode.id]
        assert (
            count(
                stack,
                "therapy",
                "SELECT count(*) FROM therapy_episode WHERE referral_id = %s",
                episode.referral_id,
            )
            == 1
        )
        opened = rows(
            stack.databases["therapy"],
            "SELECT envelope FROM outbox WHERE type = 'therapy.episode.opened'",
        )
        assert len(opened) == 1, opened
        assert opened[0][0]["data"]["referral_id"] == episode.referral_id
        assert opened[0][0]["causation_id"] == envelope["event_id"]

    one_episode_only()
    assert (
        count(
            stack,
            "therapy",
            "SELECT count(*) FROM inbox WHERE event_id = %s",
            envelope["event_id"],
        )
        == 1
    )

    # The same referral in a new envelope (an operator's replay of an old message): a new
    # event id passes the inbox, and the unique referral_id still opens nothing more.
    replayed = {**envelope, "event_id": str(uuid4())}
    send("therapy", replayed)
    wait_until(
        lambda: (
            count(
                stack,
                "therapy",
                "SELECT count(*) FROM inbox WHERE event_id = %s",
                replayed["event_id"],
            )
            == 1
        ),
        what="the replayed envelope to be consumed",
    )
    one_episode_only()
    assert "Traceback" not in processes.log("therapy-worker")


# --- 2. two bookings of one slot at once: one appointment, one 409 ------------------------


def test_concurrent_bookings_of_one_slot_give_one_appointment(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_episodes(stack, api_client, processes)
    slots = clinic.open_diary()
    clinic.assign(clinic.episode)
    # Two apps, as two `carepath serve` processes would be, each with its own pool.
    apps = [clinic.therapy, api_client(stack.api("therapy"))]
    path = f"/api/therapy-episodes/{clinic.episode.id}/appointments"

    rounds = 4
    won: list[str] = []
    for start in slots[:rounds]:
        answers = at_once(apps, [path, path], {"kind": "cbt", "start": start, "mode": "video"})
        winner = one_won(answers).json()
        assert datetime.fromisoformat(winner["start"]) == datetime.fromisoformat(start)
        won.append(winner["id"])

    therapy_db = stack.databases["therapy"]
    booked = rows(
        therapy_db,
        "SELECT id::text, status FROM appointment WHERE episode_id = %s ORDER BY start",
        clinic.episode.id,
    )
    assert booked == [(appointment_id, "booked") for appointment_id in won]
    types = [event_type for event_type, _ in episode_events(stack, clinic.episode.id)]
    assert types.count("appointment.booked") == rounds
    booked_ids = [
        envelope["data"]["appointment_id"]
        for event_type, envelope in episode_events(stack, clinic.episode.id)
        if event_type == "appointment.booked"
    ]
    assert booked_ids == won
    # The slots taken are no longer offered.
    assert not set(slots[:rounds]) & set(clinic.free_slots())

    # The database itself refuses a second booking of the clinician's slot, whoever the
    # patient; a cancelled appointment at the same start does not hold the slot.
    insert = (
        "INSERT INTO appointment"
        ' (id, episode_id, patient_id, clinician_id, kind, mode, start, "end", status,'
        " booked_by, booked_at)"
        ' SELECT %s, episode_id, %s, clinician_id, kind, mode, start, "end", %s, booked_by,'
        " booked_at FROM appointment WHERE id = %s"
    )
    with pytest.raises(psycopg.errors.UniqueViolation) as refused:
        rows_written(therapy_db, insert, uuid4(), uuid4(), "booked", won[0])
    assert refused.value.diag.constraint_name == "uq_appointment_clinician_slot"
    assert isinstance(refused.value, psycopg.IntegrityError)
    assert rows_written(therapy_db, insert, uuid4(), uuid4(), "cancelled", won[0]) == 1
    assert (
        count(
            stack,
            "therapy",
            "SELECT count(*) FROM appointment WHERE start = (SELECT start FROM appointment"
            " WHERE id = %s) AND status IN ('booked', 'arrived', 'fulfilled')",
            won[0],
        )
        == 1
    )


def test_two_patients_booked_into_one_clinician_slot_at_once_give_one_201_and_one_409(
    stack: Stack, api_client: Any, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.therapy import services

    clinic = open_episodes(stack, api_client, processes, patients=2)
    slots = clinic.open_diary()
    for episode in clinic.episodes:
        clinic.assign(episode)

    # Both requests pass the pre-check before either writes: only the partial unique index
    # on (clinician_id, start) can stop the second.
    checked = threading.Barrier(2)
    check_slot = services._check_slot

    def check_then_wait(*args: Any, **kwargs: Any) -> None:
        check_slot(*args, **kwargs)
        checked.wait(10)

    monkeypatch.setattr(services, "_check_slot", check_then_wait)
    apps = [clinic.therapy, api_client(stack.api("therapy"))]
    paths = [f"/api/therapy-episodes/{episode.id}/appointments" for episode in clinic.episodes]
    start = slots[0]
    one_won(at_once(apps, paths, {"kind": "assessment", "start": start, "mode": "video"}))

    assert (
        count(
            stack,
            "therapy",
            "SELECT count(*) FROM appointment WHERE clinician_id = %s",
            PSYCHOLOGIST[1],
        )
        == 1
    )
    assert (
        count(stack, "therapy", "SELECT count(*) FROM outbox WHERE type = 'appointment.booked'")
        == 1
    )


def test_correcting_a_cancelled_appointment_back_onto_a_taken_slot_is_a_409(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_episodes(stack, api_client, processes)
    slots = clinic.open_diary()
    clinic.assign(clinic.episode)
    first = clinic.book(clinic.episode, slots[0])
    cancelled = clinic.post(
        f"/api/appointments/{first['id']}/cancel", {"by": "patient", "reason": "unwell"}
    )
    assert cancelled["status"] == "cancelled"
    clinic.book(clinic.episode, slots[0])  # the freed slot is taken again
    before = count(stack, "therapy", "SELECT count(*) FROM outbox")

    corrected = clinic.therapy.post(
        f"/api/appointments/{first['id']}/correct",
        json={"status": "booked", "reason": "cancelled by mistake"},
        headers=headers(PSYCHOLOGIST),
    )
    assert corrected.status_code == 409, corrected.text
    assert corrected.json()["errors"][0]["field"] == "start"
    assert count(stack, "therapy", "SELECT count(*) FROM outbox") == before


# --- 3. measures publish their events, and reach the pathway ------------------------------


def test_measures_publish_their_events_and_reach_the_pathway(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    coordinator = api_client(stack.api("coordinator"))
    clinic = open_episodes(stack, api_client, processes, workers=("therapy", "coordinator"))
    episode = clinic.episode
    slots = clinic.open_diary()
    clinic.assign(episode)
    appointment = clinic.book(episode, slots[0], kind="assessment")
    measures = f"/api/appointments/{appointment['id']}/measures"

    # Not yet attended: no measure.
    early = clinic.therapy.post(
        measures, json={"instrument": "GAD-7", "items": [1] * 7}, headers=headers(PSYCHOLOGIST)
    )
    assert early.status_code == 409, early.text
    assert clinic.mark(appointment, "attend")["status"] == "fulfilled"
    before = len(episode_events(stack, episode.id))

    # An item count that does not fit the instrument: refused, naming the field.
    wrong = clinic.therapy.post(
        measures, json={"instrument": "PHQ-9", "items": [1] * 7}, headers=headers(PSYCHOLOGIST)
    )
    assert wrong.status_code == 422, wrong.text
    assert wrong.headers["content-type"].startswith(PROBLEM_JSON)
    assert wrong.json()["errors"][0]["field"].startswith("items"), wrong.text
    assert len(episode_events(stack, episode.id)) == before
    assert count(stack, "therapy", "SELECT count(*) FROM session_measure") == 0

    phq9 = clinic.post(measures, {"instrument": "PHQ-9", "items": [1, 1, 1, 1, 1, 1, 1, 1, 2]})
    assert (phq9["total"], phq9["band"]) == (10, "moderate")
    events = episode_events(stack, episode.id)[before:]
    assert [event_type for event_type, _ in events] == ["measure.recorded", "measure.risk_flagged"]
    recorded, flagged = events[0][1]["data"], events[1][1]["data"]
    assert recorded["instrument"] == "PHQ-9"
    assert (recorded["total"], recorded["item9"]) == (10, 2)
    assert recorded["appointment_id"] == appointment["id"]
    # The risk event says item 9 and nothing of the other answers.
    assert flagged["item9"] == 2
    assert flagged["appointment_id"] == appointment["id"]
    assert set(flagged) == {"episode_id", "appointment_id", "item9", "recorded_at"}

    gad7 = clinic.post(measures, {"instrument": "GAD-7", "items": [2, 2, 1, 1, 1, 0, 0]})
    assert gad7["total"] == 7
    events = episode_events(stack, episode.id)[before:]
    assert [event_type for event_type, _ in events] == [
        "measure.recorded",
        "measure.risk_flagged",
        "measure.recorded",
    ]
    gad7_event = events[2][1]["data"]
    assert (gad7_event["instrument"], gad7_event["total"], gad7_event["item9"]) == (
        "GAD-7",
        7,
        None,
    )
    measure_ids = [envelope["event_id"] for _, envelope in events]

    # The coordinator's pathway carries the same events.
    def pathway_with_measures() -> dict[str, Any] | None:
        response = coordinator.get(f"/api/pathways/{episode.patient_id}", headers=headers(MDT))
        if response.status_code != 200:
            return None
        pathway: dict[str, Any] = response.json()
        measure_types = [t for t in timeline_types(pathway) if t.startswith("measure.")]
        return pathway if len(measure_types) == 3 else None

    pathway = wait_until(pathway_with_measures, timeout=30, what="the measures on the pathway")
    entries = [e for e in pathway["timeline"] if e["type"].startswith("measure.")]
    assert sorted(e["event_id"] for e in entries) == sorted(measure_ids)
    types = timeline_types(pathway)
    assert types.count("measure.recorded") == 2
    assert types.count("measure.risk_flagged") == 1
    assert "therapy.episode.opened" in types
    assert "appointment.booked" in types
    assert "Traceback" not in processes.log("coordinator-worker")


# --- 4. missed appointments: the DNA threshold once; discharge needs a note ---------------


def test_dna_threshold_and_discharge_for_did_not_attend_close_the_referral(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_episodes(stack, api_client, processes, workers=("therapy", "referrals"))
    episode = clinic.episode
    slots = clinic.open_diary()
    clinic.assign(episode)
    appointments = [clinic.book(episode, start) for start in slots[:4]]

    for appointment in appointments[:2]:
        missed = clinic.mark(appointment, "noshow")
        assert missed["status"] == "noshow"
    types = [event_type for event_type, _ in episode_events(stack, episode.id)]
    assert types.count("appointment.missed") == 2
    assert types.count("therapy.dna_threshold_reached") == 1
    assert types[-1] == "therapy.dna_threshold_reached"  # right after the second miss
    reached = episode_events(stack, episode.id)[-1][1]["data"]
    assert (reached["dna_count"], reached["threshold"]) == (2, 2)

    # A third miss does not publish the threshold again.
    clinic.mark(appointments[2], "noshow")
    types = [event_type for event_type, _ in episode_events(stack, episode.id)]
    assert types.count("therapy.dna_threshold_reached") == 1

    # Reaching the threshold discharges nobody: that is a person's decision.
    read = clinic.therapy.get(
        f"/api/therapy-episodes/{episode.id}", headers=headers(PSYCHOLOGIST)
    ).json()
    assert (read["status"], read["dna_count"]) == ("active", 3)

    def written() -> tuple[int, int, str]:
        return (
            count(stack, "therapy", "SELECT count(*) FROM outbox"),
            count(stack, "therapy", "SELECT count(*) FROM appointment WHERE status = 'booked'"),
            str(scalar(stack.databases["therapy"], "SELECT status FROM therapy_episode")),
        )

    before = written()
    discharge = f"/api/therapy-episodes/{episode.id}/discharge"
    for body in ({"reason": "did-not-attend"}, {"reason": "did-not-attend", "note": "  "}):
        refused = clinic.therapy.post(discharge, json=body, headers=headers(PSYCHOLOGIST))
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith(PROBLEM_JSON)
        assert [e["field"] for e in refused.json()["errors"]] == ["note"]
        assert written() == before
    # Without a reason at all: refused, naming the field.
    no_reason = clinic.therapy.post(discharge, json={}, headers=headers(PSYCHOLOGIST))
    assert no_reason.status_code == 422, no_reason.text
    assert [e["field"] for e in no_reason.json()["errors"]] == ["reason"]
    assert written() == before

    note = "three appointments missed; letters and calls unanswered"
    discharged = clinic.post(discharge, {"reason": "did-not-attend", "note": note})
    assert discharged["status"] == "finished"
    assert discharged["discharge_reason"] == "did-not-attend"
    assert discharged["discharge_note"] == note
    # The booking still to come will not happen now.
    statuses = {a["id"]: a["status"] for a in discharged["appointments"]}
    assert statuses[appointments[3]["id"]] == "cancelled"

    events = episode_events(stack, episode.id)
    assert events[-1][0] == "therapy.episode.discharged"
    assert events[-2][0] == "appointment.cancelled"
    data = events[-1][1]["data"]
    assert (data["referral_id"], data["reason"]) == (episode.referral_id, "did-not-attend")

    def referral_closed() -> bool:
        response = clinic.referrals.get(
            f"/api/referrals/{episode.referral_id}", headers=headers(MDT)
        )
        return response.is_success and response.json()["status"] == "closed"

    wait_until(referral_closed, timeout=30, what="the referral to close")
    assert (
        count(
            stack,
            "referrals",
            "SELECT count(*) FROM outbox WHERE type = 'referral.closed' AND subject_id = %s",
            episode.referral_id,
        )
        == 1
    )
    assert "Traceback" not in processes.log("referrals-worker")
