"""The therapy API over in-process HTTP: the embedded app on SQLite files with the
in-process broker (issue 5, "Must be shown by tests"; rules from ../shared/CLINICAL.md,
"Therapy (CBT / psychology)" lines 86-99, "Waiting times" lines 101-105 and "Measures"
lines 11-26).

One app per module; every test opens its own episode from an accepted referral and books
into its own psychologist's diary, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from dramatiq import Broker
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from sqlmodel import col, func, select

from services.registry import all_specs
from services.therapy.handlers import handle_event
from services.therapy.models import Appointment, SessionMeasure, TherapyEpisode
from shared.auth import Role, issue_token
from shared.clock import clinic_clock
from shared.events import decode_envelope
from shared.events.subscriptions import queue_name
from shared.messaging import InProcessWorkers, make_broker, queue_sender
from shared.runtime import ServiceRuntime
from shared.settings import BrokerKind, PlatformSettings, RunMode, load_service_settings
from shared.tables import AuditRecord, InboxEvent, OutboxEvent
from shared.web import build_app

SECRET = "unit-test-secret-for-therapy-0123456789abcdef01"
PSY = Role.psychologist
THERAPY_TABLES = (TherapyEpisode, Appointment, SessionMeasure, OutboxEvent)
PHQ9_ITEM9 = [1, 1, 1, 1, 1, 1, 1, 1, 1]  # 9, mild, item 9 = 1
PHQ9_SAFE = [2, 2, 2, 2, 2, 1, 1, 1, 0]  # 13, moderate, item 9 = 0
GAD7_OK = [1, 1, 1, 1, 1, 1, 1]  # 7, mild


@dataclass
class Embedded:
    client: TestClient[Litestar]
    app: Litestar
    platform: PlatformSettings
    broker: Broker

    def runtime(self, name: str) -> ServiceRuntime:
        runtimes: dict[str, ServiceRuntime] = self.app.state.runtimes
        return runtimes[name]

    def headers(self, role: Role, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.platform, user, role)}"}

    def count(self, model: Any, *where: Any, service: str = "therapy") -> int:
        with self.runtime(service).sessions() as session:
            return int(session.exec(select(func.count()).select_from(model).where(*where)).one())

    def snapshot(self) -> dict[str, int]:
        """Rows in the therapy tables and its outbox: 'nothing written' compares two."""
        return {model.__tablename__: self.count(model) for model in THERAPY_TABLES}  # type: ignore[attr-defined]

    def events(self, episode_id: str) -> list[OutboxEvent]:
        with self.runtime("therapy").sessions() as session:
            statement = (
                select(OutboxEvent)
                .where(OutboxEvent.subject_id == episode_id)
                .order_by(col(OutboxEvent.position))
            )
            return list(session.exec(statement).all())

    def types(self, episode_id: str) -> list[str]:
        return [event.type for event in self.events(episode_id)]

    def audit(self, *where: Any) -> list[AuditRecord]:
        with self.runtime("therapy").sessions() as session:
            statement = select(AuditRecord).where(*where).order_by(col(AuditRecord.id))
            return list(session.exec(statement).all())

    def post(self, path: str, body: Any = None, role: Role = PSY, user: str = "psy-x") -> Any:
        return self.client.post(path, json=body, headers=self.headers(role, user))

    def put(self, path: str, body: Any, role: Role = PSY, user: str = "psy-x") -> Any:
        return self.client.put(path, json=body, headers=self.headers(role, user))

    def get(self, path: str, role: Role = PSY, user: str = "psy-x", **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers(role, user))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    platform = PlatformSettings(
        env=RunMode.development,
        jwt_secret=SECRET,
        broker=BrokerKind.memory,
        data_dir=tmp_path_factory.mktemp("therapy-embedded"),
        relay_interval_s=0.02,
    )
    broker = make_broker(platform)
    runtimes = [
        # environ={}: a CAREPATH_*_DATABASE_URL in the shell must not point this at a server.
        ServiceRuntime(spec, load_service_settings(spec.name, platform, {}), broker)
        for spec in all_specs()
    ]
    app = build_app(
        runtimes,
        broker,
        platform,
        embedded=True,
        migrate_on_start=True,
        workers=InProcessWorkers(broker, 2, 20),
    )
    with TestClient(app) as client:
        yield Embedded(client=client, app=app, platform=platform, broker=broker)


# --- builders ---------------------------------------------------------------------------


def wait_for(check: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


def refer_and_accept(embedded: Embedded, target: str = "psychology") -> tuple[str, str]:
    patient = embedded.post(
        "/api/patients",
        {
            "given_name": "Ada",
            "family_name": "Example",
            "birth_date": "1971-02-03",
            "sex": "female",
        },
        Role.referrer,
        "gp-1",
    )
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]
    body: dict[str, Any] = {
        "patient_id": patient_id,
        "target": target,
        "priority": "routine",
        "reason": "low mood and anxiety with chronic pain",
        "conditions": ["depression"],
        "referrer": {"name": "Dr Ref", "role": "GP", "organisation": "Surgery"},
    }
    if target == "ketamine-infusion":
        body["conditions"] = ["crps", "depression"]
        body["prior_treatments"] = [{"name": "pregabalin", "kind": "medicine", "outcome": "none"}]
        body["baseline"] = {"phq9_items": PHQ9_SAFE, "pain_nrs": 8}
    referral = embedded.post("/api/referrals", body, Role.referrer, "gp-1")
    assert referral.status_code == 201, referral.text
    referral_id = referral.json()["id"]
    triager = Role.infusion_clinician if target == "ketamine-infusion" else PSY
    accepted = embedded.post(
        f"/api/referrals/{referral_id}/triage", {"decision": "accept"}, triager, "triager"
    )
    assert accepted.status_code == 200, accepted.text
    return patient_id, referral_id


def episodes_of(embedded: Embedded, patient_id: str, role: Role = PSY) -> list[dict[str, Any]]:
    response = embedded.get("/api/therapy-episodes", role, "reader", patient_id=patient_id)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@dataclass
class Opened:
    patient_id: str
    referral_id: str
    episode_id: str


def open_episode(embedded: Embedded) -> Opened:
    patient_id, referral_id = refer_and_accept(embedded)
    items = wait_for(lambda: episodes_of(embedded, patient_id), "the episode to open")
    return Opened(patient_id, referral_id, items[0]["id"])


WEEKDAYS_9_TO_5 = [{"weekday": d, "start": "09:00:00", "end": "17:00:00"} for d in range(5)]


def new_clinician(embedded: Embedded, hours: list[dict[str, Any]] | None = None) -> str:
    """A psychologist of their own, who sets up their own diary (Monday to Friday 9-5)."""
    clinician = f"psy-{uuid4().hex[:8]}"
    added = embedded.post(
        "/api/clinicians", {"id": clinician, "display_name": "Dr P"}, PSY, clinician
    )
    assert added.status_code == 201, added.text
    path = f"/api/clinicians/{clinician}/working-hours"
    put = embedded.put(path, {"hours": WEEKDAYS_9_TO_5 if hours is None else hours}, PSY, clinician)
    assert put.status_code == 200, put.text
    return clinician


@dataclass
class Caseload:
    opened: Opened
    clinician: str

    @property
    def episode_id(self) -> str:
        return self.opened.episode_id


def assigned_episode(embedded: Embedded) -> Caseload:
    opened = open_episode(embedded)
    clinician = new_clinician(embedded)
    response = embedded.post(
        f"/api/therapy-episodes/{opened.episode_id}/assign",
        {"clinician_id": clinician},
        PSY,
        clinician,
    )
    assert response.status_code == 200, response.text
    assert response.json()["clinician_id"] == clinician
    return Caseload(opened, clinician)


def tomorrow() -> date:
    return datetime.now(UTC).date() + timedelta(days=1)


def free_slots(embedded: Embedded, clinician: str, days: int = 7) -> list[str]:
    response = embedded.get(
        f"/api/clinicians/{clinician}/slots",
        PSY,
        clinician,
        from_day=tomorrow().isoformat(),
        days=days,
    )
    assert response.status_code == 200, response.text
    found: list[str] = response.json()["slots"]
    return found


def future(weekday: int, hour: int, minute: int = 0) -> str:
    """The first such weekday from tomorrow, at that UTC time."""
    day = tomorrow()
    day += timedelta(days=(weekday - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).isoformat()


def appointment_body(start: str, kind: str = "cbt", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "start": start, "mode": "video"}
    body.update(overrides)
    return body


def book(embedded: Embedded, caseload: Caseload, start: str, kind: str = "cbt") -> dict[str, Any]:
    response = embedded.post(
        f"/api/therapy-episodes/{caseload.episode_id}/appointments",
        appointment_body(start, kind),
        PSY,
        caseload.clinician,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def on_its_day(embedded: Embedded, appointment_id: str) -> None:
    """Issue 12: an appointment is checked in, attended or missed on its day, not before:
    the clinic clock moves to it (the autouse fixture puts it back)."""
    with embedded.runtime("therapy").sessions() as session:
        booked = session.get(Appointment, UUID(appointment_id))
        assert booked is not None
        clinic_clock().set(booked.start)


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    yield
    clinic_clock().reset()


def act(
    embedded: Embedded, caseload: Caseload, appointment_id: str, action: str, body: Any = None
) -> dict[str, Any]:
    if action in ("check-in", "attend", "noshow"):
        on_its_day(embedded, appointment_id)
    try:
        response = embedded.post(
            f"/api/appointments/{appointment_id}/{action}", body, PSY, caseload.clinician
        )
    finally:
        clinic_clock().reset()
    assert response.status_code in (200, 201), f"{action}: {response.text}"
    result: dict[str, Any] = response.json()
    return result


def read_episode(embedded: Embedded, caseload: Caseload, role: Role = PSY) -> dict[str, Any]:
    user = caseload.clinician if role is PSY else "reader"
    response = embedded.get(f"/api/therapy-episodes/{caseload.episode_id}", role, user)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def attended(embedded: Embedded, caseload: Caseload, start: str, kind: str = "cbt") -> str:
    appointment = book(embedded, caseload, start, kind)
    act(embedded, caseload, appointment["id"], "attend")
    return str(appointment["id"])


@pytest.fixture(scope="module")
def untouched(embedded: Embedded) -> Caseload:
    """An assigned episode nothing is ever booked into: for refusals that write nothing."""
    return assigned_episode(embedded)


@pytest.fixture(scope="module")
def seen(embedded: Embedded) -> tuple[Caseload, str]:
    """An attended appointment for refused measures (which write nothing)."""
    caseload = assigned_episode(embedded)
    return caseload, attended(embedded, caseload, free_slots(embedded, caseload.clinician)[0])


# --- the episode opens from an accepted psychology referral ------------------------------


def test_an_accepted_psychology_referral_opens_a_waitlist_episode(embedded: Embedded) -> None:
    """CLINICAL.md line 88: an episode opens when a psychology referral is accepted (the
    contract of issue 5: id, patient_id, referral_id, status)."""
    patient_id, referral_id = refer_and_accept(embedded)
    items = wait_for(lambda: episodes_of(embedded, patient_id), "the episode to open")
    assert len(items) == 1
    episode = items[0]
    assert (episode["patient_id"], episode["referral_id"]) == (patient_id, referral_id)
    assert episode["status"] == "waitlist"
    UUID(episode["id"])
    assert episode["waiting"]["days_waiting"] == 0
    assert episode["waiting"]["state"] == "within"
    (opened,) = embedded.events(episode["id"])
    assert opened.type == "therapy.episode.opened"
    assert opened.envelope["data"]["referral_id"] == referral_id


def accepted_envelope(embedded: Embedded, referral_id: str) -> dict[str, Any]:
    with embedded.runtime("referrals").sessions() as session:
        row = session.exec(
            select(OutboxEvent).where(
                OutboxEvent.type == "referral.accepted", OutboxEvent.subject_id == referral_id
            )
        ).one()
        return dict(row.envelope)


def test_an_accepted_ketamine_referral_opens_no_episode(embedded: Embedded) -> None:
    patient_id, referral_id = refer_and_accept(embedded, "ketamine-infusion")
    event_id = UUID(accepted_envelope(embedded, referral_id)["event_id"])
    wait_for(
        lambda: embedded.count(InboxEvent, InboxEvent.event_id == event_id),
        "the therapy service to consume referral.accepted",
    )
    assert episodes_of(embedded, patient_id) == []
    assert embedded.count(TherapyEpisode, TherapyEpisode.referral_id == UUID(referral_id)) == 0


def duplicates_seen() -> float:
    value = REGISTRY.get_sample_value(
        "carepath_events_consumed_total", {"service": "therapy", "outcome": "duplicate"}
    )
    return value or 0.0


def test_a_redelivered_referral_accepted_opens_nothing_more(embedded: Embedded) -> None:
    """Issue 5, "Episode": opened by consuming referral.accepted (idempotent)."""
    opened = open_episode(embedded)
    envelope = accepted_envelope(embedded, opened.referral_id)
    before = embedded.snapshot()
    duplicates = duplicates_seen()

    # The same message again through the broker: the inbox turns it away.
    queue_sender(embedded.broker)("therapy", envelope)
    embedded.broker.join(queue_name("therapy"), timeout=5000)
    assert duplicates_seen() == duplicates + 1

    # Straight into the handler, past the inbox: the unique referral stops it.
    with embedded.runtime("therapy").sessions() as session:
        handle_event(session, decode_envelope(envelope))
        session.commit()

    # An operator's replay with a new event id: still one episode.
    replay = msgspec.structs.replace(decode_envelope(envelope), event_id=uuid4())
    with embedded.runtime("therapy").sessions() as session:
        handle_event(session, replay)
        session.commit()

    assert embedded.snapshot() == before
    assert len(episodes_of(embedded, opened.patient_id)) == 1
    assert embedded.types(opened.episode_id) == ["therapy.episode.opened"]


# --- the waiting list -------------------------------------------------------------------------


def test_the_waiting_list_is_ordered_by_referral_date_with_the_wait(embedded: Embedded) -> None:
    """Issue 5, "Waiting list"; CLINICAL.md lines 103-105: alert at 6 weeks, breach at 18."""
    spread = {41: "within", 126: "breached", 42: "at-risk"}
    ids: dict[int, str] = {}
    now = datetime.now(UTC)
    for days in spread:
        opened = open_episode(embedded)
        ids[days] = opened.episode_id
        with embedded.runtime("therapy").sessions() as session:
            episode = session.get(TherapyEpisode, UUID(opened.episode_id))
            assert episode is not None
            episode.referred_at = now - timedelta(days=days)
            session.add(episode)
            session.commit()

    response = embedded.get("/api/therapy-episodes", PSY, "psy-reader", status="waitlist")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert {item["status"] for item in items} == {"waitlist"}
    referred = [item["referred_at"] for item in items]
    assert referred == sorted(referred)
    mine = [item for item in items if item["id"] in ids.values()]
    assert [item["id"] for item in mine] == [ids[126], ids[42], ids[41]]
    for item, days in zip(mine, (126, 42, 41), strict=True):
        assert item["waiting"]["days_waiting"] == days
        assert item["waiting"]["state"] == spread[days]
        assert "6 weeks" in item["waiting"]["standard"]


def test_an_unknown_status_filter_is_a_422(embedded: Embedded) -> None:
    assert_problem(embedded.get("/api/therapy-episodes", status="waiting"), 422, "status")


# --- diaries --------------------------------------------------------------------------------


def test_a_psychologist_keeps_their_own_diary_and_not_anothers(embedded: Embedded) -> None:
    """Issue 5, "Clinicians and diaries": psychologists with working hours and leave."""
    me, other = f"psy-{uuid4().hex[:8]}", f"psy-{uuid4().hex[:8]}"
    added = embedded.post("/api/clinicians", {"id": me, "display_name": "Dr Me"}, PSY, me)
    assert added.status_code == 201, added.text
    assert added.json() == {"id": me, "display_name": "Dr Me", "hours": [], "leave": []}
    hours = [{"weekday": 2, "start": "10:00:00", "end": "12:00:00"}]
    put = embedded.put(f"/api/clinicians/{me}/working-hours", {"hours": hours}, PSY, me)
    assert put.status_code == 200, put.text
    assert put.json()["hours"] == hours

    # Not someone else's diary, nor adding someone else.
    assert_problem(
        embedded.put(f"/api/clinicians/{me}/working-hours", {"hours": []}, PSY, other), 403
    )
    assert_problem(
        embedded.post(
            f"/api/clinicians/{me}/leave",
            {"first_day": "2030-01-01", "last_day": "2030-01-02"},
            PSY,
            other,
        ),
        403,
    )
    assert_problem(
        embedded.post("/api/clinicians", {"id": other, "display_name": "X"}, PSY, me), 403
    )
    assert_problem(
        embedded.post("/api/clinicians", {"id": me, "display_name": "Again"}, PSY, me), 409
    )
    assert embedded.get(f"/api/clinicians/{me}", PSY, me).json()["hours"] == hours

    # An admin sets up anyone's diary.
    added = embedded.post(
        "/api/clinicians", {"id": other, "display_name": "Dr O"}, Role.admin, "adm"
    )
    assert added.status_code == 201, added.text
    put = embedded.put(
        f"/api/clinicians/{other}/working-hours", {"hours": WEEKDAYS_9_TO_5}, Role.admin, "adm"
    )
    assert put.status_code == 200, put.text
    assert len(put.json()["hours"]) == 5


@pytest.mark.parametrize(
    ("hours", "field"),
    [
        ([{"weekday": 0, "start": "09:00:00", "end": "09:00:00"}], "hours[0].end"),
        ([{"weekday": 7, "start": "09:00:00", "end": "10:00:00"}], "hours[0].weekday"),
        (
            [
                {"weekday": 1, "start": "09:00:00", "end": "12:00:00"},
                {"weekday": 1, "start": "11:00:00", "end": "13:00:00"},
            ],
            "hours[1]",
        ),
    ],
    ids=["end-before-start", "weekday", "overlap"],
)
def test_working_hours_that_make_no_sense_are_refused(
    embedded: Embedded, untouched: Caseload, hours: list[dict[str, Any]], field: str
) -> None:
    clinician = untouched.clinician
    response = embedded.put(
        f"/api/clinicians/{clinician}/working-hours", {"hours": hours}, PSY, clinician
    )
    assert_problem(response, 422, field)
    # The old hours stand.
    assert len(embedded.get(f"/api/clinicians/{clinician}", PSY, clinician).json()["hours"]) == 5


def test_slots_list_free_hours_and_drop_booked_ones_and_leave(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    clinician = caseload.clinician
    slots = free_slots(embedded, clinician)
    assert len(slots) == 5 * 8  # seven days from tomorrow: five working days of 9-5
    first = datetime.fromisoformat(slots[0])
    assert (first.hour, first.minute) == (9, 0)
    assert {datetime.fromisoformat(s).weekday() for s in slots} == set(range(5))

    book(embedded, caseload, slots[0])
    after = free_slots(embedded, clinician)
    assert slots[0] not in after
    assert after == slots[1:]

    # A day of leave takes that day's slots away, and it cannot be booked.
    leave_day = datetime.fromisoformat(slots[8]).date().isoformat()
    body = {"first_day": leave_day, "last_day": leave_day}
    leave = embedded.post(f"/api/clinicians/{clinician}/leave", body, PSY, clinician)
    assert leave.status_code == 201, leave.text
    on_leave = free_slots(embedded, clinician)
    assert not [s for s in on_leave if s.startswith(leave_day)]
    assert len(on_leave) == len(after) - 8
    path = f"/api/therapy-episodes/{caseload.episode_id}/appointments"
    refused = embedded.post(path, appointment_body(slots[8]), PSY, clinician)
    assert "leave" in assert_problem(refused, 422, "start")["errors"][0]["message"]


def test_leave_that_ends_before_it_starts_is_refused(embedded: Embedded) -> None:
    clinician = new_clinician(embedded)
    body = {"first_day": "2030-01-02", "last_day": "2030-01-01"}
    response = embedded.post(f"/api/clinicians/{clinician}/leave", body, PSY, clinician)
    assert_problem(response, 422, "last_day")


# --- booking: bad input names the field, nothing written ---------------------------------


def refused_booking(
    embedded: Embedded, caseload: Caseload, body: dict[str, Any], status: int, field: str
) -> dict[str, Any]:
    before = embedded.snapshot()
    path = f"/api/therapy-episodes/{caseload.episode_id}/appointments"
    problem = assert_problem(embedded.post(path, body, PSY, caseload.clinician), status, field)
    assert embedded.snapshot() == before
    return problem


def last_week_monday_9() -> str:
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday() + 7)
    return datetime(monday.year, monday.month, monday.day, 9, tzinfo=UTC).isoformat()


@pytest.mark.parametrize(
    ("start", "says"),
    [
        (lambda: future(0, 7), "slots"),  # before the day starts
        (lambda: future(2, 17), "slots"),  # the last slot starts at 16:00
        (lambda: future(5, 10), "slots"),  # a Saturday: no hours
        (lambda: future(1, 9, 30), "slots"),  # off the hourly grid
        (last_week_monday_9, "past"),
    ],
    ids=["07:00", "17:00", "saturday", "09:30", "past"],
)
def test_a_booking_outside_the_diary_is_a_422_naming_start(
    embedded: Embedded, untouched: Caseload, start: Any, says: str
) -> None:
    """Issue 5, "Bad input": booking outside working hours or in the past."""
    problem = refused_booking(embedded, untouched, appointment_body(start()), 422, "start")
    assert says in problem["errors"][0]["message"]
    assert read_episode(embedded, untouched)["status"] == "waitlist"


def test_the_same_slot_twice_is_a_409_naming_start(embedded: Embedded) -> None:
    """Issue 5: no double booking of a clinician."""
    caseload = assigned_episode(embedded)
    slot = free_slots(embedded, caseload.clinician)[0]
    first = book(embedded, caseload, slot, "assessment")
    assert (first["status"], first["start"]) == ("booked", slot.replace("+00:00", "Z"))
    assert read_episode(embedded, caseload)["status"] == "active"
    problem = refused_booking(embedded, caseload, appointment_body(slot), 409, "start")
    assert "booked" in problem["detail"]
    # The same instant written in another time zone is the same slot.
    shifted = datetime.fromisoformat(slot).astimezone(timezone(timedelta(hours=1)))
    assert shifted.isoformat().endswith("+01:00")
    refused_booking(embedded, caseload, appointment_body(shifted.isoformat()), 409, "start")


def test_an_in_person_booking_needs_a_location(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    slot = free_slots(embedded, caseload.clinician)[0]
    body = appointment_body(slot, mode="in-person")
    refused_booking(embedded, caseload, body, 422, "location")
    refused_booking(embedded, caseload, {**body, "location": ""}, 422, "location")
    path = f"/api/therapy-episodes/{caseload.episode_id}/appointments"
    placed = embedded.post(path, {**body, "location": "Room 2"}, PSY, caseload.clinician)
    assert placed.status_code == 201, placed.text
    assert placed.json()["location"] == "Room 2"


def test_an_unassigned_episode_cannot_be_booked(embedded: Embedded) -> None:
    opened = open_episode(embedded)
    clinician = new_clinician(embedded)
    caseload = Caseload(opened, clinician)
    slot = free_slots(embedded, clinician)[0]
    refused_booking(embedded, caseload, appointment_body(slot), 422, "clinician_id")


def test_an_unknown_kind_is_a_422_naming_kind(embedded: Embedded, untouched: Caseload) -> None:
    slot = free_slots(embedded, untouched.clinician)[0]
    refused_booking(embedded, untouched, appointment_body(slot, kind="group"), 422, "kind")


# --- measures ---------------------------------------------------------------------------


def attended_appointment(embedded: Embedded) -> tuple[Caseload, str]:
    caseload = assigned_episode(embedded)
    slot = free_slots(embedded, caseload.clinician)[0]
    return caseload, attended(embedded, caseload, slot)


def record(embedded: Embedded, caseload: Caseload, appointment_id: str, body: Any) -> Any:
    return embedded.post(
        f"/api/appointments/{appointment_id}/measures", body, PSY, caseload.clinician
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instrument": "PHQ-9", "items": [0] * 8}, "items"),
        ({"instrument": "PHQ-9", "items": [0] * 10}, "items"),
        ({"instrument": "PHQ-9", "items": [0, 0, 0, 4, 0, 0, 0, 0, 0]}, "items[3]"),
        ({"instrument": "PHQ-9", "items": [0, 0, 0, 0, 0, 0, 0, 0, -1]}, "items[8]"),
        ({"instrument": "GAD-7", "items": [0] * 9}, "items"),
        ({"instrument": "GAD-7", "items": [0, 0, 0, 0, 0, 0, 4]}, "items[6]"),
        ({"instrument": "PHQ-2", "items": [0, 0]}, "instrument"),
        ({"instrument": "PEG", "items": [5, 5]}, "items"),
        ({"instrument": "PEG", "items": [5, 11, 5]}, "items[1]"),
    ],
    ids=[
        "phq9-8",
        "phq9-10",
        "phq9-item4",
        "phq9-negative",
        "gad7-9",
        "gad7-item4",
        "phq2",
        "peg-2",
        "peg-11",
    ],
)
def test_items_that_do_not_fit_the_instrument_are_a_422(
    embedded: Embedded, seen: tuple[Caseload, str], body: dict[str, Any], field: str
) -> None:
    """CLINICAL.md line 25: an item count or range that does not fit the instrument is a
    422 naming the item; nothing is stored."""
    caseload, appointment_id = seen
    before = embedded.snapshot()
    assert_problem(record(embedded, caseload, appointment_id, body), 422, field)
    assert embedded.snapshot() == before


def test_phq9_item9_above_zero_publishes_a_risk_flag(embedded: Embedded) -> None:
    """CLINICAL.md line 16: any answer above 0 → urgent safety alert, at once."""
    caseload, appointment_id = attended_appointment(embedded)
    response = record(
        embedded, caseload, appointment_id, {"instrument": "PHQ-9", "items": PHQ9_ITEM9}
    )
    assert response.status_code == 201, response.text
    measure = response.json()
    assert (measure["total"], measure["band"], measure["items"]) == (9, "mild", PHQ9_ITEM9)
    events = embedded.events(caseload.episode_id)
    assert [e.type for e in events][-2:] == ["measure.recorded", "measure.risk_flagged"]
    recorded, flagged = (e.envelope["data"] for e in events[-2:])
    assert (recorded["total"], recorded["band"], recorded["item9"]) == (9, "mild", 1)
    assert flagged["item9"] == 1
    assert flagged["appointment_id"] == appointment_id == recorded["appointment_id"]


def test_phq9_item9_of_zero_and_gad7_publish_only_the_measure(embedded: Embedded) -> None:
    caseload, appointment_id = attended_appointment(embedded)
    phq9 = record(embedded, caseload, appointment_id, {"instrument": "PHQ-9", "items": PHQ9_SAFE})
    assert phq9.status_code == 201, phq9.text
    assert (phq9.json()["total"], phq9.json()["band"]) == (13, "moderate")
    gad7 = record(embedded, caseload, appointment_id, {"instrument": "GAD-7", "items": GAD7_OK})
    assert gad7.status_code == 201, gad7.text
    assert (gad7.json()["total"], gad7.json()["band"]) == (7, "mild")
    events = embedded.events(caseload.episode_id)
    measures = [e for e in events if e.type.startswith("measure.")]
    assert [e.type for e in measures] == ["measure.recorded", "measure.recorded"]
    assert [e.envelope["data"]["item9"] for e in measures] == [0, None]
    assert (
        embedded.count(SessionMeasure, SessionMeasure.appointment_id == UUID(appointment_id)) == 2
    )


def test_peg_is_scored_as_the_mean_of_its_three_items(embedded: Embedded) -> None:
    """CLINICAL.md Measures: PEG, 3 items each 0 to 10, the score their mean (Krebs et al.
    2009)."""
    caseload, appointment_id = attended_appointment(embedded)
    response = record(embedded, caseload, appointment_id, {"instrument": "PEG", "items": [7, 6, 4]})
    assert response.status_code == 201, response.text
    (recorded,) = [e for e in embedded.events(caseload.episode_id) if e.type == "measure.recorded"]
    data = recorded.envelope["data"]
    assert (data["instrument"], data["total"], data["mean"], data["item9"]) == (
        "PEG",
        17,
        5.7,
        None,
    )


def test_a_measure_needs_an_attended_appointment(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    appointment = book(embedded, caseload, free_slots(embedded, caseload.clinician)[0])
    before = embedded.snapshot()
    body = {"instrument": "PHQ-9", "items": PHQ9_SAFE}
    problem = assert_problem(record(embedded, caseload, appointment["id"], body), 409)
    assert problem["current_status"] == "booked"
    assert embedded.snapshot() == before


# --- attendance, DNAs and corrections -------------------------------------------------------


def test_the_second_noshow_publishes_the_dna_threshold_once(embedded: Embedded) -> None:
    """CLINICAL.md lines 95-96: after 2 missed appointments → discharge review alert;
    issue 5, "DNA handling"."""
    caseload = assigned_episode(embedded)
    slots = free_slots(embedded, caseload.clinician)
    booked = [book(embedded, caseload, slot)["id"] for slot in slots[:3]]
    first = act(embedded, caseload, booked[0], "noshow")
    assert first["status"] == "noshow"
    assert "therapy.dna_threshold_reached" not in embedded.types(caseload.episode_id)
    act(embedded, caseload, booked[1], "noshow")
    act(embedded, caseload, booked[2], "noshow")  # a third: no second alert

    events = embedded.events(caseload.episode_id)
    reached = [e for e in events if e.type == "therapy.dna_threshold_reached"]
    assert len(reached) == 1
    assert (reached[0].envelope["data"]["dna_count"], reached[0].envelope["data"]["threshold"]) == (
        2,
        2,
    )
    missed = [e.envelope["data"]["dna_count"] for e in events if e.type == "appointment.missed"]
    assert missed == [1, 2, 3]
    episode = read_episode(embedded, caseload)
    assert episode["dna_count"] == 3
    assert episode["status"] == "active"  # never discharged automatically


def test_a_noshow_corrected_to_fulfilled_lowers_the_dna_count(embedded: Embedded) -> None:
    """CLINICAL.md lines 93-94: a noshow can be corrected; it is not a dead end."""
    caseload = assigned_episode(embedded)
    slots = free_slots(embedded, caseload.clinician)
    first, second = (book(embedded, caseload, slot)["id"] for slot in slots[:2])
    act(embedded, caseload, first, "noshow")
    act(embedded, caseload, second, "noshow")
    assert read_episode(embedded, caseload)["dna_count"] == 2

    corrected = act(
        embedded, caseload, second, "correct", {"status": "fulfilled", "reason": "came late, seen"}
    )
    assert corrected["status"] == "fulfilled"
    assert corrected["status_reason"] == "came late, seen"
    episode = read_episode(embedded, caseload)
    assert (episode["dna_count"], episode["attended_treatment"]) == (1, 1)
    event = embedded.events(caseload.episode_id)[-1]
    assert event.type == "appointment.corrected"
    data = event.envelope["data"]
    assert (data["previous_status"], data["status"], data["dna_count"]) == (
        "noshow",
        "fulfilled",
        1,
    )

    # What the code does: back to noshow, the count reaches 2 again and alerts again.
    act(embedded, caseload, second, "correct", {"status": "noshow", "reason": "entered wrongly"})
    reached = embedded.types(caseload.episode_id).count("therapy.dna_threshold_reached")
    assert reached == 2


def test_a_noshow_can_be_rebooked_and_entered_in_error(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    slots = free_slots(embedded, caseload.clinician)
    appointment = book(embedded, caseload, slots[0])["id"]
    act(embedded, caseload, appointment, "noshow")
    rebooked = act(
        embedded, caseload, appointment, "correct", {"status": "booked", "reason": "clinic error"}
    )
    assert rebooked["status"] == "booked"
    assert slots[0] not in free_slots(embedded, caseload.clinician)  # it holds the slot again
    act(embedded, caseload, appointment, "noshow")
    wrong = act(
        embedded,
        caseload,
        appointment,
        "correct",
        {"status": "entered-in-error", "reason": "wrong patient"},
    )
    assert wrong["status"] == "entered-in-error"
    assert slots[0] in free_slots(embedded, caseload.clinician)  # the slot is free again


def test_illegal_moves_are_409_with_the_current_status(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    appointment = book(embedded, caseload, free_slots(embedded, caseload.clinician)[0])["id"]
    act(embedded, caseload, appointment, "attend")
    before = embedded.snapshot()
    for action, body in (
        ("check-in", None),
        ("noshow", None),
        ("cancel", {"by": "patient", "reason": "unwell"}),
        ("reschedule", {"start": future(3, 9)}),
        ("correct", {"status": "booked", "reason": "no such correction"}),
    ):
        response = embedded.post(
            f"/api/appointments/{appointment}/{action}", body, PSY, caseload.clinician
        )
        assert assert_problem(response, 409)["current_status"] == "fulfilled", action
    assert embedded.snapshot() == before


def test_check_in_cancel_and_reschedule_publish_their_events(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    slots = free_slots(embedded, caseload.clinician)
    first, second = (book(embedded, caseload, slot)["id"] for slot in slots[:2])
    moved = act(embedded, caseload, first, "reschedule", {"start": slots[5]})
    assert moved["start"] == slots[5].replace("+00:00", "Z")
    assert slots[0] in free_slots(embedded, caseload.clinician)
    assert act(embedded, caseload, first, "check-in")["status"] == "arrived"
    cancelled = act(embedded, caseload, second, "cancel", {"by": "patient", "reason": "unwell"})
    assert (cancelled["status"], cancelled["cancelled_by"]) == ("cancelled", "patient")
    assert embedded.types(caseload.episode_id)[-3:] == [
        "appointment.rescheduled",
        "appointment.checked_in",
        "appointment.cancelled",
    ]


# --- discharge --------------------------------------------------------------------------


def refused_discharge(
    embedded: Embedded, caseload: Caseload, body: dict[str, Any], field: str
) -> dict[str, Any]:
    before = embedded.snapshot()
    path = f"/api/therapy-episodes/{caseload.episode_id}/discharge"
    problem = assert_problem(embedded.post(path, body, PSY, caseload.clinician), 422, field)
    assert embedded.snapshot() == before
    assert read_episode(embedded, caseload)["status"] in ("waitlist", "active")
    return problem


def test_a_discharge_without_a_reason_is_refused(embedded: Embedded, untouched: Caseload) -> None:
    """Issue 5, "Bad input": discharge without reason, a problem naming the field."""
    problem = refused_discharge(embedded, untouched, {}, "reason")
    assert "missing" in problem["errors"][0]["message"]
    refused_discharge(embedded, untouched, {"reason": "bored"}, "reason")


def test_did_not_attend_needs_a_note(embedded: Embedded, untouched: Caseload) -> None:
    """CLINICAL.md lines 96-98: discharge after a DNA only with a reason, never automatic."""
    refused_discharge(embedded, untouched, {"reason": "did-not-attend"}, "note")
    refused_discharge(embedded, untouched, {"reason": "did-not-attend", "note": "  "}, "note")
    refused_discharge(embedded, untouched, {"reason": "other"}, "note")


def test_completed_needs_two_attended_treatment_appointments(embedded: Embedded) -> None:
    """CLINICAL.md lines 90-91: at least 2 attended treatment appointments; an attended
    assessment and a missed CBT session do not count."""
    caseload = assigned_episode(embedded)
    slots = free_slots(embedded, caseload.clinician)
    attended(embedded, caseload, slots[0], "assessment")
    attended(embedded, caseload, slots[1], "cbt")
    act(embedded, caseload, book(embedded, caseload, slots[2])["id"], "noshow")
    assert read_episode(embedded, caseload)["attended_treatment"] == 1
    refused_discharge(embedded, caseload, {"reason": "completed"}, "reason")

    attended(embedded, caseload, slots[3], "review")
    done = embedded.post(
        f"/api/therapy-episodes/{caseload.episode_id}/discharge",
        {"reason": "completed"},
        PSY,
        caseload.clinician,
    )
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["attended_treatment"]) == ("finished", 2)


def test_a_discharge_cancels_booked_appointments_and_closes_the_referral(
    embedded: Embedded,
) -> None:
    """Issue 5, "Episode": discharge with reason publishing therapy.episode.discharged;
    CLINICAL.md line 88-89: the episode closes by discharge."""
    caseload = assigned_episode(embedded)
    slots = free_slots(embedded, caseload.clinician)
    first, second = (book(embedded, caseload, slot)["id"] for slot in slots[:2])
    act(embedded, caseload, first, "noshow")
    response = embedded.post(
        f"/api/therapy-episodes/{caseload.episode_id}/discharge",
        {"reason": "did-not-attend", "note": "no reply to two letters"},
        PSY,
        caseload.clinician,
    )
    assert response.status_code == 200, response.text
    episode = response.json()
    assert (episode["status"], episode["discharge_reason"]) == ("finished", "did-not-attend")
    assert episode["discharge_note"] == "no reply to two letters"
    statuses = {a["id"]: (a["status"], a.get("cancelled_by")) for a in episode["appointments"]}
    assert statuses == {first: ("noshow", None), second: ("cancelled", "clinic")}
    assert slots[1] in free_slots(embedded, caseload.clinician)

    events = embedded.events(caseload.episode_id)
    assert [e.type for e in events][-2:] == ["appointment.cancelled", "therapy.episode.discharged"]
    assert events[-2].envelope["data"]["appointment_id"] == second
    discharged = events[-1].envelope["data"]
    assert (discharged["reason"], discharged["referral_id"]) == (
        "did-not-attend",
        caseload.opened.referral_id,
    )

    def referral_status() -> Any:
        path = f"/api/referrals/{caseload.opened.referral_id}"
        status = embedded.get(path, Role.mdt, "mdt-1").json()["status"]
        return status if status == "closed" else None

    assert wait_for(referral_status, "the referral to close") == "closed"

    # A finished episode takes no more bookings or discharges.
    path = f"/api/therapy-episodes/{caseload.episode_id}"
    again = embedded.post(
        f"{path}/appointments", appointment_body(slots[3]), PSY, caseload.clinician
    )
    assert assert_problem(again, 409)["current_status"] == "finished"
    twice = embedded.post(f"{path}/discharge", {"reason": "moved-away"}, PSY, caseload.clinician)
    assert assert_problem(twice, 409)["current_status"] == "finished"


def test_declined_cancels_the_episode(embedded: Embedded) -> None:
    caseload = assigned_episode(embedded)
    response = embedded.post(
        f"/api/therapy-episodes/{caseload.episode_id}/discharge",
        {"reason": "declined"},
        Role.mdt,
        "mdt-1",
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


# --- roles ------------------------------------------------------------------------------


def test_a_psychologist_cannot_book_into_anothers_caseload_and_is_audited(
    embedded: Embedded,
) -> None:
    """Issue 5, "Roles": psychologists manage their own caseload."""
    caseload = assigned_episode(embedded)
    intruder = new_clinician(embedded)
    slot = free_slots(embedded, caseload.clinician)[0]
    denied_before = len(embedded.audit(AuditRecord.outcome == "4"))
    before = embedded.snapshot()
    path = f"/api/therapy-episodes/{caseload.episode_id}/appointments"
    assert_problem(embedded.post(path, appointment_body(slot), PSY, intruder), 403)
    assert embedded.snapshot() == before
    denied = embedded.audit(AuditRecord.outcome == "4")
    assert len(denied) == denied_before + 1
    row = denied[-1]
    assert (row.agent_user, row.agent_role, row.action) == (intruder, "psychologist", "C")
    assert (row.path, row.detail) == (path, "HTTP 403")

    # Nor take the episode over, nor discharge it.
    assign = embedded.post(
        f"/api/therapy-episodes/{caseload.episode_id}/assign",
        {"clinician_id": intruder},
        PSY,
        intruder,
    )
    assert_problem(assign, 403)
    discharge = embedded.post(
        f"/api/therapy-episodes/{caseload.episode_id}/discharge",
        {"reason": "moved-away"},
        PSY,
        intruder,
    )
    assert_problem(discharge, 403)


def test_admin_sees_measures_without_items_and_the_mdt_sees_all(embedded: Embedded) -> None:
    """Issue 5, "Roles": the MDT reads all; admins see statuses, not measures' items."""
    caseload, appointment_id = attended_appointment(embedded)
    body = {"instrument": "PHQ-9", "items": PHQ9_SAFE}
    assert record(embedded, caseload, appointment_id, body).status_code == 201

    admin = read_episode(embedded, caseload, Role.admin)
    (measure,) = admin["appointments"][0]["measures"]
    assert (measure["total"], measure["band"]) == (13, "moderate")
    assert "items" not in measure

    mdt = read_episode(embedded, caseload, Role.mdt)
    assert mdt["appointments"][0]["measures"][0]["items"] == PHQ9_SAFE
    assert [e["id"] for e in episodes_of(embedded, caseload.opened.patient_id, Role.mdt)] == [
        caseload.episode_id
    ]


def test_a_referrer_cannot_list_episodes(embedded: Embedded) -> None:
    response = embedded.get("/api/therapy-episodes", Role.referrer, "gp-1", patient_id=str(uuid4()))
    assert_problem(response, 403)
    assert_problem(embedded.get(f"/api/therapy-episodes/{uuid4()}", Role.referrer, "gp-1"), 403)


def test_only_psychologists_book(embedded: Embedded, untouched: Caseload) -> None:
    slot = free_slots(embedded, untouched.clinician)[0]
    path = f"/api/therapy-episodes/{untouched.episode_id}/appointments"
    before = embedded.snapshot()
    for role in (Role.mdt, Role.admin, Role.referrer, Role.infusion_clinician):
        assert_problem(embedded.post(path, appointment_body(slot), role, untouched.clinician), 403)
    assert embedded.snapshot() == before


def test_an_unknown_episode_is_a_404(embedded: Embedded) -> None:
    assert_problem(embedded.get(f"/api/therapy-episodes/{uuid4()}"), 404)


def test_the_wait_stops_at_the_first_attended_treatment(embedded: Embedded) -> None:
    """CLINICAL.md Waiting times: the psychology standard is to the first attended
    treatment appointment, so a patient in treatment is no longer "waiting"."""
    caseload = assigned_episode(embedded)
    with embedded.runtime("therapy").sessions() as session:
        episode = session.get(TherapyEpisode, UUID(caseload.episode_id))
        assert episode is not None
        episode.referred_at = datetime.now(UTC) - timedelta(days=200)
        session.add(episode)
        session.commit()
    before = read_episode(embedded, caseload)["waiting"]
    assert before["state"] == "breached"
    first = free_slots(embedded, caseload.clinician)[0]
    attended(embedded, caseload, first)
    after = read_episode(embedded, caseload)["waiting"]
    expected = (datetime.fromisoformat(first).date() - before_referral(before)).days
    assert after["days_waiting"] == expected


def before_referral(waiting: dict[str, Any]) -> date:
    return datetime.now(UTC).date() - timedelta(days=waiting["days_waiting"])


def test_another_psychologists_episode_reads_as_a_summary(embedded: Embedded) -> None:
    """Psychologists manage their own caseload and read the team's waiting list."""
    caseload = assigned_episode(embedded)
    attended(embedded, caseload, free_slots(embedded, caseload.clinician)[0])
    own = read_episode(embedded, caseload)
    other = embedded.get(f"/api/therapy-episodes/{caseload.episode_id}", PSY, "psy-someone-else")
    assert other.status_code == 200
    assert "appointments" in own and "appointments" not in other.json()
    mdt = read_episode(embedded, caseload, Role.mdt)
    assert len(mdt["appointments"]) == 1


# --- issue 12: nobody attends an appointment before its day ---------------------------------


def test_an_appointment_is_attended_or_missed_on_its_day_not_before(embedded: Embedded) -> None:
    """Issue 12 ("An appointment cannot be attended ... before its scheduled day"): the
    day is the clinic's (Europe/London); an earlier hour of that day is its day."""
    caseload = assigned_episode(embedded)
    booked = book(embedded, caseload, free_slots(embedded, caseload.clinician)[0])
    start = datetime.fromisoformat(booked["start"])
    path = f"/api/appointments/{booked['id']}"
    before = embedded.snapshot()
    try:
        clinic_clock().set(start - timedelta(days=1))
        for action in ("check-in", "attend", "noshow"):
            refused = embedded.post(f"{path}/{action}", None, PSY, caseload.clinician)
            problem = assert_problem(refused, 422, "start")
            assert "on that day or after" in problem["detail"]
        assert embedded.snapshot() == before  # nothing written
        clinic_clock().set(start.replace(hour=0, minute=30))  # its day, before the hour
        attended = embedded.post(f"{path}/attend", None, PSY, caseload.clinician)
        assert attended.status_code == 200, attended.text
        assert attended.json()["status"] == "fulfilled"
    finally:
        clinic_clock().reset()
    # Cancelling ahead is what cancelling is for.
    later = book(embedded, caseload, free_slots(embedded, caseload.clinician)[1])
    cancel = {"by": "patient", "reason": "work shift"}
    cancelled = embedded.post(
        f"/api/appointments/{later['id']}/cancel", cancel, PSY, caseload.clinician
    )
    assert cancelled.status_code == 200, cancelled.text
