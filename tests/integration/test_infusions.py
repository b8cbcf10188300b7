"""The infusions service on a real PostgreSQL and Redis with real workers (issue 4).

A course opens from a delivered `referral.accepted` (once, however often it arrives); a
full induction series publishes its events in order of occurrence and reaches the
pathway; a dose override is audited; closing the course closes the referral; two
overlapping bookings made at once give one session.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from shared import clock
from shared.clock import ClinicClock, MemoryOffset
from shared.messaging import queue_sender
from tests.embedded import CHECKLIST_ITEMS as CHECKLIST
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

CLINICIAN = ("infusion-clinician", "inf-1")
MDT = ("mdt", "mdt-1")
REFERRER = ("referrer", "gp-1")

# A pain plan inside its band: 0.3 mg/kg/h x 70 kg x 4 h = 84 mg.
PLAN = {
    "indication": "pain",
    "weight_kg": 70,
    "rate_mg_per_kg_per_h": 0.3,
    "duration_hours": 4,
    "induction_count": 3,
    "induction_spacing_days": 3,
    "maintenance_interval_days": 28,
}
PLANNED_MG = 84.0
# The first chronic-pain infusion is capped at 80 mg (issue 12; Cohen 2018).
FIRST_MG = 80.0
DEPRESSION_PLAN = {
    "indication": "depression",
    "weight_kg": 70,
    "dose_mg_per_kg": 0.5,
    "infusion_minutes": 40,
}
VITALS_BEFORE = {"phase": "before", "systolic": 128, "diastolic": 78, "heart_rate": 70, "spo2": 98}


def headers(who: tuple[str, str]) -> dict[str, str]:
    role, user = who
    return {"Authorization": f"Bearer {token(role, user)}"}


def rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        return connection.execute(query, params).fetchall()


def course_events(stack: Stack, course_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """The infusions outbox rows about one course: (type, sequence, envelope)."""
    return [
        (row[0], row[1], row[2])
        for row in rows(
            stack.databases["infusions"],
            "SELECT type, sequence, envelope FROM outbox"
            " WHERE subject_type = 'infusion-course' AND subject_id = %s ORDER BY sequence",
            course_id,
        )
    ]


def count(stack: Stack, service: str, query: str, *params: Any) -> int:
    return int(scalar(stack.databases[service], query, *params))


@dataclass
class Clinic:
    """One test's running pieces and the course an accepted referral opened."""

    referrals: TestClient[Litestar]
    infusions: TestClient[Litestar]
    patient_id: str
    referral_id: str
    course: dict[str, Any]

    @property
    def course_id(self) -> str:
        course_id: str = self.course["id"]
        return course_id

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST to the infusions API as the infusion clinician and expect success."""
        response = self.infusions.post(path, json=body, headers=headers(CLINICIAN))
        assert response.status_code in (200, 201), f"{path}: {response.text}"
        return response.json()

    def courses(self, **params: str) -> list[dict[str, Any]]:
        response = self.infusions.get(
            "/api/infusion-courses", params=params, headers=headers(CLINICIAN)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def open_course(
    stack: Stack,
    api_client: Any,
    processes: Processes,
    *,
    workers: tuple[str, ...] = ("infusions",),
) -> Clinic:
    """Register, refer to the infusion clinic, accept: the infusions worker opens a course."""
    referrals = api_client(stack.api("referrals"))  # building an app migrates its database
    infusions = api_client(stack.api("infusions"))
    for service in workers:
        processes.start(f"{service}-worker", carepath("worker", service), stack.env())

    patient = referrals.post("/api/patients", json=patient_body(), headers=headers(REFERRER))
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]
    referral = referrals.post(
        "/api/referrals", json=referral_body(patient_id), headers=headers(REFERRER)
    )
    assert referral.status_code == 201, referral.text
    referral_id = referral.json()["id"]
    triage = referrals.post(
        f"/api/referrals/{referral_id}/triage",
        json={"decision": "accept"},
        headers=headers(CLINICIAN),
    )
    assert triage.status_code == 200, triage.text

    def listed() -> list[dict[str, Any]] | None:
        response = infusions.get(
            "/api/infusion-courses", params={"patient_id": patient_id}, headers=headers(CLINICIAN)
        )
        items: list[dict[str, Any]] = response.json()["items"] if response.is_success else []
        return items or None

    items = wait_until(listed, timeout=30, what="the infusions worker to open the course")
    assert len(items) == 1, items
    return Clinic(referrals, infusions, patient_id, referral_id, items[0])


def assess(clinic: Clinic) -> dict[str, Any]:
    body = {
        "weight_kg": 70,
        "systolic": 130,
        "diastolic": 80,
        "heart_rate": 72,
        "opioid_mme_per_day": 40,
        "pain_nrs": 8,
        "phq9_items": [2, 2, 2, 2, 2, 2, 1, 1, 0],
        "prior_treatments": [{"name": "gabapentin", "kind": "medicine"}],
        "checklist": {item: {"present": False} for item in CHECKLIST},
    }
    assessment: dict[str, Any] = clinic.post(
        f"/api/infusion-courses/{clinic.course_id}/assessments", body
    )
    assert assessment["outcome"] == "eligible", assessment
    return assessment


def slot(days: float, hours: float = 4.0, offset_hours: float = 0.0) -> dict[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days, hours=offset_hours)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()}


def at_once(
    clients: list[TestClient[Litestar]], path: str, bodies: list[dict[str, Any]]
) -> list[Any]:
    """POST each body through its own client, from its own thread, released together."""
    barrier = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def post(index: int) -> None:
        barrier.wait(10)
        answers[index] = clients[index].post(path, json=bodies[index], headers=headers(CLINICIAN))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(answer is not None for answer in answers), "a booking request did not answer"
    return answers


# --- 1. the course opens from a delivered referral.accepted, once ----------------------


def test_an_accepted_referral_opens_one_course_however_often_it_arrives(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_course(stack, api_client, processes, workers=("infusions", "referrals"))
    assert clinic.course["referral_id"] == clinic.referral_id
    assert clinic.course["patient_id"] == clinic.patient_id
    assert clinic.course["status"] == "planned"

    referrals_db, infusions_db = stack.databases["referrals"], stack.databases["infusions"]
    envelope = scalar(
        referrals_db, "SELECT envelope FROM outbox WHERE type = %s", "referral.accepted"
    )
    assert envelope["data"]["referral_id"] == clinic.referral_id

    # The same envelope twice more, as a redelivery after a crash would bring it.
    send = queue_sender(stack.runtime("referrals").broker)
    send("infusions", envelope)
    send("infusions", envelope)
    wait_until(
        lambda: processes.log("infusions-worker").count("event.duplicate_ignored") == 2,
        what="both extra copies to be ignored",
    )

    def one_course_only() -> None:
        assert len(clinic.courses(patient_id=clinic.patient_id)) == 1
        assert (
            count(
                stack,
                "infusions",
                "SELECT count(*) FROM infusion_course WHERE referral_id = %s",
                clinic.referral_id,
            )
            == 1
        )
        assert (
            count(
                stack,
                "infusions",
                "SELECT count(*) FROM outbox WHERE type = 'infusion.course.opened'",
            )
            == 1
        )

    one_course_only()
    assert (
        count(
            stack,
            "infusions",
            "SELECT count(*) FROM inbox WHERE event_id = %s",
            envelope["event_id"],
        )
        == 1
    )

    # The same referral in a new envelope (an operator's replay of an old message): a new
    # event id passes the inbox, and the unique referral_id still opens nothing more.
    replayed = {**envelope, "event_id": str(uuid4())}
    send("infusions", replayed)
    wait_until(
        lambda: (
            scalar(
                infusions_db, "SELECT count(*) FROM inbox WHERE event_id = %s", replayed["event_id"]
            )
            == 1
        ),
        what="the replayed envelope to be consumed",
    )
    one_course_only()
    assert "Traceback" not in processes.log("infusions-worker")


# --- 2. a full induction series, its events in order, the pathway ---------------------


def test_a_full_induction_series_publishes_its_events_in_order(
    stack: Stack, api_client: Any, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator = api_client(stack.api("coordinator"))
    clinic = open_course(stack, api_client, processes, workers=("infusions", "coordinator"))
    course_path = f"/api/infusion-courses/{clinic.course_id}"
    # An infusion starts on its booked day (issue 12): the in-process API's clock moves
    # to each one (the stack runs as production, whose clock cannot be moved).
    movable = ClinicClock(MemoryOffset())
    monkeypatch.setattr(clock, "_clock", movable)

    assess(clinic)
    plan = clinic.post(f"{course_path}/plan", PLAN)
    assert plan["total_mg"] == PLANNED_MG
    assert plan["override"] is None

    session_ids: list[str] = []
    for number in (1, 2, 3):
        if number == 2:  # the series waits for the reassessment after the first infusion
            assess(clinic)
        session = clinic.post(f"{course_path}/sessions", slot(days=3 * number))
        assert session["number"] == number
        assert session["status"] == "scheduled"
        assert session["planned_mg"] == (FIRST_MG if number == 1 else PLANNED_MG)
        sid = session["id"]
        session_ids.append(sid)
        movable.set(datetime.fromisoformat(session["scheduled_start"]))
        assert clinic.post(f"/api/infusion-sessions/{sid}/check-in")["status"] == "checked-in"
        vitals = clinic.post(f"/api/infusion-sessions/{sid}/vitals", VITALS_BEFORE)
        assert vitals["out_of_range"] == []
        clinic.post(f"/api/infusion-sessions/{sid}/scores-before", {"pain_nrs": 8, "mood": 3})
        assert clinic.post(f"/api/infusion-sessions/{sid}/start")["status"] == "in-progress"
        given = clinic.post(f"/api/infusion-sessions/{sid}/dose", {"given_mg": PLANNED_MG})
        assert given["given_mg"] == PLANNED_MG
        completed = clinic.post(
            f"/api/infusion-sessions/{sid}/complete",
            {"pain_nrs": 4, "mood": 6, "phq9_items": [1, 1, 1, 1, 1, 1, 1, 0, 0]},
        )
        assert completed["status"] == "completed"

    expected = (
        [
            "infusion.course.opened",
            "infusion.assessment.recorded",
            "infusion.course.status_changed",
            "infusion.plan.agreed",
        ]
        + [f"infusion.session.{step}" for step in ("scheduled", "started", "completed")]
        + ["infusion.assessment.recorded"]
        + [
            f"infusion.session.{step}"
            for _ in session_ids[1:]
            for step in ("scheduled", "started", "completed")
        ]
    )
    events = course_events(stack, clinic.course_id)
    assert [event_type for event_type, _, _ in events] == expected
    assert [sequence for _, sequence, _ in events] == list(range(1, len(expected) + 1))
    occurred = [envelope["occurred_at"] for _, _, envelope in events]
    assert [datetime.fromisoformat(at) for at in occurred] == sorted(
        datetime.fromisoformat(at) for at in occurred
    )
    # Session events name their sessions in the order they happened.
    session_events = [
        envelope["data"] for t, _, envelope in events[4:] if t.startswith("infusion.session.")
    ]
    assert [data["session_id"] for data in session_events] == [
        sid for sid in session_ids for _ in range(3)
    ]
    status_changed = events[2][2]["data"]
    assert (status_changed["previous_status"], status_changed["status"]) == ("planned", "active")

    completions = [envelope["data"] for t, _, envelope in events if t.endswith(".completed")]
    assert [data["completed_sessions"] for data in completions] == [1, 2, 3]
    assert [data["number"] for data in completions] == [1, 2, 3]
    assert completions[0]["maintenance_due_at"] is None
    assert completions[1]["maintenance_due_at"] is None
    last = completions[2]
    due = datetime.fromisoformat(last["maintenance_due_at"])
    assert due == datetime.fromisoformat(last["completed_at"]) + timedelta(days=28)
    assert last["given_mg"] == PLANNED_MG
    assert last["response"]["pain_change_fraction"] == 0.5  # 8 → 4 from the assessment
    assert last["response"]["responded"] is True

    # The maintenance infusion falls due 28 days after the third (on the clinic's clock).
    now = movable.now()
    due_in_29 = clinic.courses(due_before=(now + timedelta(days=29)).isoformat())
    assert [course["id"] for course in due_in_29] == [clinic.course_id]
    assert due_in_29[0]["completed_sessions"] == 3
    assert clinic.courses(due_before=(now + timedelta(days=27)).isoformat()) == []

    # The coordinator's pathway carries the same events, in the same order.
    def pathway_with_all() -> dict[str, Any] | None:
        response = coordinator.get(f"/api/pathways/{clinic.patient_id}", headers=headers(MDT))
        if response.status_code != 200:
            return None
        pathway: dict[str, Any] = response.json()
        infusion = [t for t in timeline_types(pathway) if t.startswith("infusion.")]
        return pathway if len(infusion) == len(expected) else None

    pathway = wait_until(pathway_with_all, timeout=30, what="the infusion events on the pathway")
    entries = [e for e in pathway["timeline"] if e["type"].startswith("infusion.")]
    assert [e["type"] for e in entries] == expected
    assert [e["event_id"] for e in entries] == [envelope["event_id"] for _, _, envelope in events]
    assert "Traceback" not in processes.log("coordinator-worker")


# --- 3. a dose override is audited; without one, or above the ceiling, refused --------


def test_a_dose_override_is_audited_and_refused_without_one(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_course(stack, api_client, processes)
    plan_path = f"/api/infusion-courses/{clinic.course_id}/plan"
    assess(clinic)
    above_band = {**PLAN, "rate_mg_per_kg_per_h": 0.5}

    def written() -> tuple[int, int, int]:
        return (
            count(stack, "infusions", "SELECT count(*) FROM dosing_plan"),
            count(stack, "infusions", "SELECT count(*) FROM outbox"),
            count(
                stack,
                "infusions",
                "SELECT count(*) FROM audit_log WHERE entity_type = 'DosingPlan'",
            ),
        )

    before = written()
    assert before[0] == 0

    # Outside the band without an override: refused, naming the field, nothing written.
    refused = clinic.infusions.post(plan_path, json=above_band, headers=headers(CLINICIAN))
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in refused.json()["errors"]] == ["rate_mg_per_kg_per_h"]
    assert written() == before

    # Above the hard ceiling: refused even with an override.
    ceiling = clinic.infusions.post(
        plan_path,
        json={**PLAN, "rate_mg_per_kg_per_h": 1.2, "override": {"reason": "tolerant patient"}},
        headers=headers(CLINICIAN),
    )
    assert ceiling.status_code == 422, ceiling.text
    assert [e["field"] for e in ceiling.json()["errors"]] == ["rate_mg_per_kg_per_h"]
    assert "ceiling" in ceiling.json()["errors"][0]["message"]
    assert written() == before
    assert clinic.courses(patient_id=clinic.patient_id)[0]["status"] == "planned"

    # With a clinician's override and a reason: agreed, and audited.
    reason = "opioid-tolerant CRPS, 0.35 mg/kg/h gave no relief"
    response = clinic.infusions.post(
        plan_path,
        json={**above_band, "override": {"reason": reason}},
        headers=headers(CLINICIAN),
    )
    assert response.status_code == 201, response.text
    plan = response.json()
    assert plan["total_mg"] == 140.0  # 0.5 mg/kg/h x 70 kg x 4 h
    assert plan["override"]["clinician"] == CLINICIAN[1]
    assert plan["override"]["reason"] == reason
    assert plan["override"]["fields"] == ["rate_mg_per_kg_per_h"]

    audit = rows(
        stack.databases["infusions"],
        "SELECT agent_user, agent_role, entity_id, detail, patient_id::text FROM audit_log"
        " WHERE entity_type = 'DosingPlan'",
    )
    assert len(audit) == 1, audit
    agent_user, agent_role, entity_id, detail, patient_id = audit[0]
    assert (agent_user, agent_role, entity_id, patient_id) == (
        CLINICIAN[1],
        CLINICIAN[0],
        plan["id"],
        clinic.patient_id,
    )
    assert detail.startswith("dose override"), detail
    assert "rate_mg_per_kg_per_h" in detail

    agreed = [
        envelope["data"]
        for event_type, _, envelope in course_events(stack, clinic.course_id)
        if event_type == "infusion.plan.agreed"
    ]
    assert len(agreed) == 1
    assert agreed[0]["overridden_fields"] == ["rate_mg_per_kg_per_h"]
    assert agreed[0]["plan_id"] == plan["id"]

    # The MDT sees the override with the course.
    course = clinic.infusions.get(
        f"/api/infusion-courses/{clinic.course_id}", headers=headers(MDT)
    ).json()
    assert course["status"] == "active"
    assert course["plan"]["override"]["reason"] == reason
    assert course["plan"]["override"]["clinician"] == CLINICIAN[1]


# --- 4. closing the course closes the referral ----------------------------------------


def test_closing_the_course_closes_the_referral(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_course(stack, api_client, processes, workers=("infusions", "referrals"))
    closed = clinic.post(
        f"/api/infusion-courses/{clinic.course_id}/close",
        {"reason": "declined", "note": "the patient chose not to go ahead"},
    )
    assert closed["status"] == "cancelled"
    assert closed["close_reason"] == "declined"
    assert closed["closed_at"]

    events = course_events(stack, clinic.course_id)
    assert events[-1][0] == "infusion.course.closed"
    data = events[-1][2]["data"]
    assert (data["referral_id"], data["reason"]) == (clinic.referral_id, "declined")

    def referral_status() -> str | None:
        response = clinic.referrals.get(
            f"/api/referrals/{clinic.referral_id}", headers=headers(MDT)
        )
        status: str | None = response.json()["status"] if response.is_success else None
        return status if status == "closed" else None

    wait_until(referral_status, timeout=30, what="the referral to close")
    assert (
        count(
            stack,
            "referrals",
            "SELECT count(*) FROM outbox WHERE type = 'referral.closed' AND subject_id = %s",
            clinic.referral_id,
        )
        == 1
    )

    # A closed course cannot be closed again.
    again = clinic.infusions.post(
        f"/api/infusion-courses/{clinic.course_id}/close",
        json={"reason": "completed"},
        headers=headers(CLINICIAN),
    )
    assert again.status_code == 409, again.text
    assert (
        count(
            stack, "infusions", "SELECT count(*) FROM outbox WHERE type = 'infusion.course.closed'"
        )
        == 1
    )


# --- 5. two overlapping bookings at once: one session -------------------------------------


def test_concurrent_overlapping_bookings_give_one_session(
    stack: Stack, api_client: Any, processes: Processes
) -> None:
    clinic = open_course(stack, api_client, processes)
    assess(clinic)
    clinic.post(f"/api/infusion-courses/{clinic.course_id}/plan", DEPRESSION_PLAN)
    # Two apps, as two `carepath serve` processes would be, each with its own pool.
    apps = [clinic.infusions, api_client(stack.api("infusions"))]
    path = f"/api/infusion-courses/{clinic.course_id}/sessions"

    rounds = 6
    for round_number in range(rounds):
        # Maintenance bookings of a depression plan: the pain series' wait for the first
        # infusion's reassessment and the induction spacing (issue 12) do not apply.
        maintenance = {"kind": "maintenance"}
        bodies = [
            slot(days=1 + round_number) | maintenance,
            slot(days=1 + round_number, offset_hours=1) | maintenance,  # overlaps by 3 hours
        ]
        answers = at_once(apps, path, bodies)
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201, 422], [answer.text for answer in answers]
        loser = next(answer for answer in answers if answer.status_code == 422)
        assert [e["field"] for e in loser.json()["errors"]] == ["start"]

    booked = rows(
        stack.databases["infusions"],
        "SELECT number FROM infusion_session WHERE course_id = %s ORDER BY number",
        clinic.course_id,
    )
    assert [number for (number,) in booked] == list(range(1, rounds + 1))
    events = course_events(stack, clinic.course_id)
    assert [t for t, _, _ in events].count("infusion.session.scheduled") == rounds
    assert [sequence for _, sequence, _ in events] == list(range(1, len(events) + 1))


# --- 6. a session action racing the course's closing ----------------------------------


def test_checking_in_while_the_course_closes_does_not_deadlock(
    stack: Stack, api_client: Any, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.infusions import repository

    clinic = open_course(stack, api_client, processes)
    assess(clinic)
    clinic.post(f"/api/infusion-courses/{clinic.course_id}/plan", PLAN)
    session_id = clinic.post(f"/api/infusion-courses/{clinic.course_id}/sessions", slot(days=2))[
        "id"
    ]
    database = stack.databases["infusions"].rsplit("/", 1)[1]
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
    )
    lock_session = repository.infusion_session

    def then_let_close_start(db: Any, sid: Any, *, lock: bool = False) -> Any:
        # Hold the session's lock until the closing request is waiting on a lock, so the
        # interleaving is the one two busy clinicians could hit by chance.
        found = lock_session(db, sid, lock=lock)
        if not lock:
            return found
        closing.set()
        wait_until(
            lambda: count(stack, "infusions", waiting, database) > 0,
            timeout=10,
            what="the closing request to wait on a lock",
        )
        return found

    closing = threading.Event()
    monkeypatch.setattr(repository, "infusion_session", then_let_close_start)
    other = api_client(stack.api("infusions"))
    answers: dict[str, Any] = {}

    def check_in() -> None:
        answers["check-in"] = clinic.infusions.post(
            f"/api/infusion-sessions/{session_id}/check-in", headers=headers(CLINICIAN)
        )

    def close() -> None:
        closing.wait(10)
        answers["close"] = other.post(
            f"/api/infusion-courses/{clinic.course_id}/close",
            json={"reason": "declined"},
            headers=headers(CLINICIAN),
        )

    threads = [threading.Thread(target=check_in), threading.Thread(target=close)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = {name: answer.status_code for name, answer in answers.items()}
    # One after the other: the check-in succeeds (or finds the course closed), the close
    # succeeds and cancels the booked session. Never a server error.
    assert statuses == {"check-in": 200, "close": 200} or statuses == {
        "check-in": 409,
        "close": 200,
    }, statuses
