"""The infusions API over in-process HTTP: the embedded app on SQLite files with the
in-process broker (issue 4, "Must be shown by tests"; rules from ../shared/CLINICAL.md,
"Ketamine infusions" lines 36-84 and "Change that matters" lines 24-34).

One app per module; every test opens its own course from an accepted referral, so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from dramatiq import Broker
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from sqlmodel import col, func, select

from services.infusions.handlers import handle_event
from services.infusions.models import (
    AdverseEvent,
    DosingPlan,
    EligibilityAssessment,
    InfusionCourse,
    InfusionSession,
    VitalsReading,
)
from services.registry import all_specs
from shared.auth import Role, issue_token
from shared.clock import clinic_clock
from shared.events import decode_envelope
from shared.events.subscriptions import queue_name
from shared.messaging import InProcessWorkers, make_broker, queue_sender
from shared.runtime import ServiceRuntime
from shared.settings import BrokerKind, PlatformSettings, RunMode, load_service_settings
from shared.tables import AuditRecord, InboxEvent, OutboxEvent
from shared.urgent_alerts import UrgentAlert
from shared.web import build_app
from tests.embedded import BASELINE_PHQ9, assessment_body, checklist, plan_body

SECRET = "unit-test-secret-for-infusions-0123456789abcdef"
CLINICIAN = "ic-1"
INFUSION_TABLES = (
    InfusionCourse,
    EligibilityAssessment,
    DosingPlan,
    InfusionSession,
    VitalsReading,
    AdverseEvent,
    OutboxEvent,
)
LATER_PHQ9 = [1, 1, 1, 1, 1, 1, 1, 0, 0]  # 7: a 50% fall


@dataclass
class Embedded:
    client: TestClient[Litestar]
    app: Litestar
    platform: PlatformSettings
    broker: Broker

    def runtime(self, name: str) -> ServiceRuntime:
        runtimes: dict[str, ServiceRuntime] = self.app.state.runtimes
        return runtimes[name]

    def headers(self, role: Role, user: str = CLINICIAN) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.platform, user, role)}"}

    def count(self, model: Any, *where: Any, service: str = "infusions") -> int:
        with self.runtime(service).sessions() as session:
            return int(session.exec(select(func.count()).select_from(model).where(*where)).one())

    def snapshot(self) -> dict[str, int]:
        """Rows in every infusions table and the outbox: 'nothing written' compares two."""
        return {model.__tablename__: self.count(model) for model in INFUSION_TABLES}  # type: ignore[attr-defined]

    def events(self, course_id: str) -> list[OutboxEvent]:
        with self.runtime("infusions").sessions() as session:
            statement = (
                select(OutboxEvent)
                .where(OutboxEvent.subject_id == course_id)
                .order_by(col(OutboxEvent.position))
            )
            return list(session.exec(statement).all())

    def audit(self, *where: Any) -> list[AuditRecord]:
        with self.runtime("infusions").sessions() as session:
            statement = select(AuditRecord).where(*where).order_by(col(AuditRecord.id))
            return list(session.exec(statement).all())

    def post(self, path: str, body: Any = None, role: Role = Role.infusion_clinician) -> Any:
        return self.client.post(path, json=body, headers=self.headers(role))

    def get(self, path: str, role: Role = Role.infusion_clinician, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers(role))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    platform = PlatformSettings(
        env=RunMode.development,
        jwt_secret=SECRET,
        broker=BrokerKind.memory,
        data_dir=tmp_path_factory.mktemp("infusions-embedded"),
        relay_interval_s=0.05,
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
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Opened:
    patient_id: str
    referral_id: str
    course_id: str


def refer_and_accept(embedded: Embedded, target: str = "ketamine-infusion") -> tuple[str, str]:
    patient = embedded.post(
        "/api/patients",
        {
            "given_name": "Ada",
            "family_name": "Example",
            "birth_date": "1971-02-03",
            "sex": "female",
        },
        Role.referrer,
    )
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]
    referral = embedded.post(
        "/api/referrals",
        {
            "patient_id": patient_id,
            "target": target,
            "priority": "routine",
            "reason": "CRPS of the right hand with low mood despite treatment",
            "conditions": ["crps", "depression"],
            "referrer": {"name": "Dr Ref", "role": "pain consultant", "organisation": "Unit"},
            "prior_treatments": [{"name": "pregabalin", "kind": "medicine", "outcome": "none"}],
            "baseline": {"phq9_items": BASELINE_PHQ9, "pain_nrs": 8},
        },
        Role.referrer,
    )
    assert referral.status_code == 201, referral.text
    referral_id = referral.json()["id"]
    triager = Role.infusion_clinician if target == "ketamine-infusion" else Role.psychologist
    accepted = embedded.post(
        f"/api/referrals/{referral_id}/triage", {"decision": "accept"}, triager
    )
    assert accepted.status_code == 200, accepted.text
    return patient_id, referral_id


def courses_of(embedded: Embedded, patient_id: str) -> list[dict[str, Any]]:
    response = embedded.get("/api/infusion-courses", patient_id=patient_id)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def open_course(embedded: Embedded) -> Opened:
    patient_id, referral_id = refer_and_accept(embedded)
    items = wait_for(lambda: courses_of(embedded, patient_id), "the course to open")
    return Opened(patient_id, referral_id, items[0]["id"])


def assess(embedded: Embedded, course_id: str, **overrides: Any) -> dict[str, Any]:
    response = embedded.post(
        f"/api/infusion-courses/{course_id}/assessments", assessment_body(**overrides)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def agree_plan(embedded: Embedded, course_id: str, **overrides: Any) -> dict[str, Any]:
    response = embedded.post(f"/api/infusion-courses/{course_id}/plan", plan_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def planned_course(embedded: Embedded) -> Opened:
    """A course assessed as eligible with a pain plan agreed (so active)."""
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    agree_plan(embedded, opened.course_id)
    return opened


def slot(days: float = 0, minutes: float = 5, hours: float = 4) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(days=days, minutes=minutes)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()}


def schedule(embedded: Embedded, course_id: str, **when: float) -> dict[str, Any]:
    response = embedded.post(f"/api/infusion-courses/{course_id}/sessions", slot(**when))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


DEPRESSION_PLAN = {
    "indication": "depression",
    "rate_mg_per_kg_per_h": None,
    "duration_hours": None,
    "dose_mg_per_kg": 0.5,
    "infusion_minutes": 40,
}
VITALS_OK = {"systolic": 130, "diastolic": 80, "heart_rate": 72, "spo2": 97}


def step(embedded: Embedded, session_id: str, action: str, body: Any = None) -> dict[str, Any]:
    response = embedded.post(f"/api/infusion-sessions/{session_id}/{action}", body)
    assert response.status_code in (200, 201), f"{action}: {response.text}"
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    """A test that moves the clinic clock (to a booked day) puts it back."""
    yield
    clinic_clock().reset()


def on_the_day(session: dict[str, Any]) -> None:
    """Issue 12: an infusion starts on its booked day, so the clinic clock moves there."""
    clinic_clock().set(datetime.fromisoformat(session["scheduled_start"]))


def start_session(embedded: Embedded, session_id: str) -> None:
    step(embedded, session_id, "check-in")
    step(embedded, session_id, "vitals", {"phase": "before", **VITALS_OK})
    step(embedded, session_id, "scores-before", {"pain_nrs": 8, "mood": 3})
    step(embedded, session_id, "start")


def run_session(embedded: Embedded, session_id: str) -> dict[str, Any]:
    start_session(embedded, session_id)
    step(embedded, session_id, "vitals", {"phase": "during", **VITALS_OK})
    step(embedded, session_id, "dose", {"given_mg": 84})
    return step(
        embedded, session_id, "complete", {"pain_nrs": 4, "mood": 6, "phq9_items": LATER_PHQ9}
    )


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


# --- the course opens from an accepted referral -------------------------------------------


def test_an_accepted_ketamine_referral_opens_a_course(embedded: Embedded) -> None:
    """Issue 4, "Course": opened by consuming referral.accepted for ketamine-infusion."""
    patient_id, referral_id = refer_and_accept(embedded)
    items = wait_for(lambda: courses_of(embedded, patient_id), "the course to open")
    assert len(items) == 1
    course = items[0]
    assert course["patient_id"] == patient_id
    assert course["referral_id"] == referral_id
    assert course["status"] == "planned"
    UUID(course["id"])
    (opened,) = embedded.events(course["id"])
    assert opened.type == "infusion.course.opened"
    assert opened.sequence == 1
    assert opened.envelope["data"]["referral_id"] == referral_id


def accepted_envelope(embedded: Embedded, referral_id: str) -> dict[str, Any]:
    with embedded.runtime("referrals").sessions() as session:
        row = session.exec(
            select(OutboxEvent).where(
                OutboxEvent.type == "referral.accepted", OutboxEvent.subject_id == referral_id
            )
        ).one()
        return dict(row.envelope)


def test_a_psychology_referral_opens_no_course(embedded: Embedded) -> None:
    patient_id, referral_id = refer_and_accept(embedded, target="psychology")
    event_id = UUID(accepted_envelope(embedded, referral_id)["event_id"])
    # The infusions consumer has seen it (the inbox row) and did nothing with it.
    wait_for(
        lambda: embedded.count(InboxEvent, InboxEvent.event_id == event_id),
        "the infusions service to consume referral.accepted",
    )
    assert courses_of(embedded, patient_id) == []
    assert embedded.count(InfusionCourse, InfusionCourse.referral_id == UUID(referral_id)) == 0


def duplicates_seen() -> float:
    value = REGISTRY.get_sample_value(
        "carepath_events_consumed_total", {"service": "infusions", "outcome": "duplicate"}
    )
    return value or 0.0


def test_a_redelivered_referral_accepted_opens_nothing_more(embedded: Embedded) -> None:
    """Issue 4: one course per referral however often the event arrives."""
    opened = open_course(embedded)
    envelope = accepted_envelope(embedded, opened.referral_id)
    before = embedded.snapshot()
    duplicates = duplicates_seen()

    # The same message again through the broker: the inbox turns it away.
    queue_sender(embedded.broker)("infusions", envelope)
    embedded.broker.join(queue_name("infusions"), timeout=5000)
    assert duplicates_seen() == duplicates + 1

    # Straight into the handler, past the inbox: the unique referral stops it.
    with embedded.runtime("infusions").sessions() as session:
        handle_event(session, decode_envelope(envelope))
        session.commit()

    # An operator's replay with a new event id: still one course.
    replay = msgspec.structs.replace(decode_envelope(envelope), event_id=uuid4())
    with embedded.runtime("infusions").sessions() as session:
        handle_event(session, replay)
        session.commit()

    assert embedded.snapshot() == before
    assert len(courses_of(embedded, opened.patient_id)) == 1
    assert [e.type for e in embedded.events(opened.course_id)] == ["infusion.course.opened"]


# --- a full induction series ---------------------------------------------------------------


def test_a_full_induction_series_publishes_its_events_in_order(embedded: Embedded) -> None:
    """Issue 4, "Sessions", "Response" and "Maintenance"; CLINICAL.md lines 33-34 (response
    thresholds) and 80-81 (maintenance after the induction series, at the plan's
    interval)."""
    opened = open_course(embedded)
    cid = opened.course_id
    assert assess(embedded, cid)["outcome"] == "eligible"
    plan = agree_plan(embedded, cid, induction_count=2, maintenance_interval_days=28)
    assert (plan["total_mg"], plan["rate_mg_per_h"]) == (84.0, 21.0)

    first = schedule(embedded, cid)
    # The first chronic-pain infusion is capped at 80 mg (issue 12; Cohen 2018).
    assert (first["number"], first["status"], first["planned_mg"]) == (1, "scheduled", 80.0)
    done = run_session(embedded, first["id"])
    assert done["status"] == "completed"
    course = embedded.get(f"/api/infusion-courses/{cid}").json()
    assert course["completed_sessions"] == 1
    assert "maintenance_due_at" not in course  # still inside the induction series

    # The series waits for the reassessment after the first infusion (Cohen 2018).
    path = f"/api/infusion-courses/{cid}/sessions"
    refused(embedded, path, slot(days=3), "assessment")
    assess(embedded, cid)
    second = schedule(embedded, cid, days=3)
    assert (second["number"], second["planned_mg"]) == (2, 84.0)
    on_the_day(second)
    run_session(embedded, second["id"])
    finished_at = clinic_clock().now()

    events = embedded.events(cid)
    assert [e.type for e in events] == [
        "infusion.course.opened",
        "infusion.assessment.recorded",
        "infusion.course.status_changed",
        "infusion.plan.agreed",
        "infusion.session.scheduled",
        "infusion.session.started",
        "infusion.session.completed",
        "infusion.assessment.recorded",
        "infusion.session.scheduled",
        "infusion.session.started",
        "infusion.session.completed",
    ]
    assert [e.sequence for e in events] == list(range(1, 12))
    occurred = [e.occurred_at for e in events]
    assert occurred == sorted(occurred)
    assert events[2].envelope["data"]["status"] == "active"
    assert events[2].envelope["data"]["previous_status"] == "planned"

    completed = [e.envelope["data"] for e in events if e.type == "infusion.session.completed"]
    assert [c["number"] for c in completed] == [1, 2]
    assert [c["completed_sessions"] for c in completed] == [1, 2]
    assert completed[0]["maintenance_due_at"] is None
    assert completed[1]["maintenance_due_at"] is not None

    # Pain 8 → 4 is a 50% fall: meaningful and substantial; PHQ-9 14 → 7 a response.
    assert completed[0]["response"] == {
        "pain_change_fraction": 0.5,
        "phq9_change_fraction": 0.5,
        "pain_meaningful": True,
        "pain_substantial": True,
        "phq9_response": True,
        "responded": True,
    }
    assert completed[0]["pain_before"] == 8
    assert completed[0]["pain_after"] == 4
    assert completed[0]["given_mg"] == 84.0  # 5% over the capped 80 mg
    assert completed[0]["phq9_total"] == 7

    course = embedded.get(f"/api/infusion-courses/{cid}").json()
    assert course["completed_sessions"] == 2
    due = datetime.fromisoformat(course["maintenance_due_at"])
    assert abs(due - (finished_at + timedelta(days=28))) < timedelta(minutes=1)
    assert [s["status"] for s in course["sessions"]] == ["completed", "completed"]

    now = clinic_clock().now()
    soon = embedded.get("/api/infusion-courses", due_before=(now + timedelta(days=29)).isoformat())
    later = embedded.get("/api/infusion-courses", due_before=(now + timedelta(days=27)).isoformat())
    assert soon.status_code == later.status_code == 200
    assert cid in [item["id"] for item in soon.json()["items"]]
    assert cid not in [item["id"] for item in later.json()["items"]]


def test_a_dose_override_is_audited_and_visible_on_the_plan(embedded: Embedded) -> None:
    """CLINICAL.md lines 55-56: a dose outside the band is refused unless a named clinician
    overrides it with a reason, which is audited."""
    opened = open_course(embedded)
    cid = opened.course_id
    assess(embedded, cid)
    plan = agree_plan(
        embedded,
        cid,
        rate_mg_per_kg_per_h=0.5,
        override={"reason": "CRPS flare; tolerated 0.5 mg/kg/h before"},
    )
    override = plan["override"]
    assert override["clinician"] == CLINICIAN
    assert override["reason"] == "CRPS flare; tolerated 0.5 mg/kg/h before"
    assert override["fields"] == ["rate_mg_per_kg_per_h"]
    assert plan["total_mg"] == 140.0  # 0.5 x 70 x 4

    (row,) = embedded.audit(
        AuditRecord.entity_type == "DosingPlan", AuditRecord.entity_id == plan["id"]
    )
    assert row.detail is not None and row.detail.startswith("dose override")
    assert "rate_mg_per_kg_per_h" in row.detail
    assert (row.agent_user, row.action, row.outcome) == (CLINICIAN, "C", "0")
    assert row.patient_id == UUID(opened.patient_id)

    # Visible on the pathway: the MDT reads the plan with its override.
    seen = embedded.get(f"/api/infusion-courses/{cid}", Role.mdt).json()
    assert seen["plan"]["override"]["clinician"] == CLINICIAN
    assert seen["plan"]["override"]["reason"].startswith("CRPS flare")
    (agreed,) = [e for e in embedded.events(cid) if e.type == "infusion.plan.agreed"]
    assert agreed.envelope["data"]["overridden_fields"] == ["rate_mg_per_kg_per_h"]


def test_a_plan_inside_the_band_is_not_audited_as_an_override(embedded: Embedded) -> None:
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    plan = agree_plan(embedded, opened.course_id, override={"reason": "not needed"})
    assert plan["override"] is None
    (row,) = embedded.audit(AuditRecord.entity_id == plan["id"])
    assert row.detail is None


def test_vitals_out_of_range_publish_an_event(embedded: Embedded) -> None:
    """CLINICAL.md lines 68-69: systolic ≥ 160 before starting alerts (local policy)."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    step(embedded, session["id"], "check-in")
    calm = step(embedded, session["id"], "vitals", {"phase": "before", **VITALS_OK})
    assert calm["out_of_range"] == []
    assert "infusion.vitals.out_of_range" not in [e.type for e in embedded.events(opened.course_id)]

    high = step(
        embedded,
        session["id"],
        "vitals",
        {"phase": "before", "systolic": 165, "diastolic": 90, "heart_rate": 80, "spo2": 91},
    )
    assert high["out_of_range"] == ["systolic 165 ≥ 160", "SpO2 91% < 92%"]
    (event,) = [
        e for e in embedded.events(opened.course_id) if e.type == "infusion.vitals.out_of_range"
    ]
    data = event.envelope["data"]
    assert data["session_id"] == session["id"]
    assert data["phase"] == "before"
    assert data["crossed"] == ["systolic 165 ≥ 160", "SpO2 91% < 92%"]
    assert (data["systolic"], data["spo2"]) == (165, 91)


def test_a_serious_adverse_event_abandons_the_session(embedded: Embedded) -> None:
    """CLINICAL.md lines 72-73: a serious adverse event closes the session and raises an
    MDT alert; "Course rules": it puts the course on hold until an MDT review resumes it
    (issue 12)."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    start_session(embedded, session["id"])
    mild = step(embedded, session["id"], "adverse-events", {"code": "nausea", "severity": "mild"})
    assert mild["status"] == "in-progress"
    serious = step(
        embedded,
        session["id"],
        "adverse-events",
        {"code": "hypertension", "severity": "serious", "note": "BP 210/120"},
    )
    assert serious["status"] == "abandoned"
    assert serious["status_reason"] == "serious adverse event: hypertension"
    assert [a["severity"] for a in serious["adverse_events"]] == ["mild", "serious"]

    events = [e for e in embedded.events(opened.course_id) if e.type.startswith("infusion.")]
    types = [e.type for e in events]
    assert types[-4:] == [
        "infusion.adverse_event.recorded",
        "infusion.adverse_event.recorded",
        "infusion.session.abandoned",
        "infusion.course.status_changed",
    ]
    assert [e.envelope["data"]["serious"] for e in events[-4:-2]] == [False, True]
    assert events[-2].envelope["data"]["previous_status"] == "in-progress"
    assert events[-1].envelope["data"]["status"] == "onhold"
    # Only an MDT review resumes it: a clinician's resume names what would.
    path = f"/api/infusion-courses/{opened.course_id}/resume"
    problem = refused(embedded, path, {"reason": "BP settled"}, "reason")
    assert "MDT" in problem["errors"][0]["message"]
    # An abandoned session takes no more steps.
    again = embedded.post(
        f"/api/infusion-sessions/{session['id']}/complete", {"pain_nrs": 4, "mood": 5}
    )
    assert assert_problem(again, 409)["current_status"] == "abandoned"


def mdt_review(embedded: Embedded, patient_id: str, decision: str) -> None:
    def recorded() -> bool:
        response = embedded.client.post(
            f"/api/pathways/{patient_id}/reviews",
            json={"attendees": ["Dr Pain", "Dr Mood"], "decision": decision},
            headers=embedded.headers(Role.mdt, user="dr-mdt-lead"),
        )
        return bool(response.status_code == 201)

    wait_for(recorded, "the coordinator to record the review")


def course_status(embedded: Embedded, opened: Opened) -> str:
    status: str = courses_of(embedded, opened.patient_id)[0]["status"]
    return status


def test_the_mdt_review_resumes_a_held_course_and_stops_infusions(embedded: Embedded) -> None:
    """Issue 12; CLINICAL.md "Course rules": a course held after a serious adverse event is
    resumed by the MDT review (continue), and stop-infusions closes it: the infusions
    service consumes mdt.review.recorded."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    start_session(embedded, session["id"])
    step(embedded, session["id"], "adverse-events", {"code": "sedation", "severity": "serious"})
    assert course_status(embedded, opened) == "onhold"
    mdt_review(embedded, opened.patient_id, "continue")
    wait_for(lambda: course_status(embedded, opened) == "active", "the course to resume")
    mdt_review(embedded, opened.patient_id, "stop-infusions")
    wait_for(lambda: course_status(embedded, opened) == "finished", "the course to close")
    closed = courses_of(embedded, opened.patient_id)[0]
    assert closed["close_reason"] == "stopped"


def test_a_high_reading_before_blocks_the_start_unless_a_clinician_overrides(
    embedded: Embedded,
) -> None:
    """Issue 12; CLINICAL.md "During a session": systolic >= 160 or diastolic >= 100
    before starting (local policy, vitals.before_*): a 422 naming override.reason and the
    limit; a named clinician's override with a reason starts it, recorded."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    sid = session["id"]
    step(embedded, sid, "check-in")
    step(embedded, sid, "vitals", {**VITALS_OK, "systolic": 160, "diastolic": 90})
    path = f"/api/infusion-sessions/{sid}/start"
    problem = refused(embedded, path, None, "override.reason")
    assert "160/100" in problem["errors"][0]["message"]
    started = step(embedded, sid, "start", {"override": {"reason": "white-coat; repeat at 10'"}})
    assert started["status"] == "in-progress"
    assert started["start_override"]["clinician"] == CLINICIAN
    assert started["start_override"]["reading"] == "160/90"
    # The phase follows the session: an old client's "before" now contradicts it.
    vitals = f"/api/infusion-sessions/{sid}/vitals"
    refused(embedded, vitals, {"phase": "before", **VITALS_OK}, "phase")
    assert step(embedded, sid, "vitals", VITALS_OK)["phase"] == "during"


def test_an_infusion_is_not_started_before_its_booked_day(embedded: Embedded) -> None:
    """Issue 12: not before its scheduled day in the clinic's time zone (Europe/London)."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id, days=2)
    step(embedded, session["id"], "check-in")
    step(embedded, session["id"], "vitals", VITALS_OK)
    path = f"/api/infusion-sessions/{session['id']}/start"
    problem = refused(embedded, path, None, "scheduled_start")
    assert "not before" in problem["errors"][0]["message"]
    on_the_day(session)
    assert step(embedded, session["id"], "start")["status"] == "in-progress"


def test_booking_keeps_the_induction_series_and_the_pain_series_rules(
    embedded: Embedded,
) -> None:
    """Issue 12; CLINICAL.md "Dosing plan" and "Course rules": the first chronic-pain
    infusion is capped at about 80 mg and the series waits for its reassessment (Cohen
    2018); the induction series keeps the plan's spacing; a new plan re-doses the
    sessions not yet started."""
    opened = planned_course(embedded)  # pain, 84 mg, 2 inductions 3 days apart
    path = f"/api/infusion-courses/{opened.course_id}/sessions"
    first = schedule(embedded, opened.course_id)
    assert first["planned_mg"] == 80.0
    problem = refused(embedded, path, slot(days=4), "assessment")
    assert "reassessment" in problem["errors"][0]["message"]

    depression = open_course(embedded)
    assess(embedded, depression.course_id)
    agree_plan(embedded, depression.course_id, **DEPRESSION_PLAN)  # 0.5 x 70 = 35 mg
    booked = schedule(embedded, depression.course_id, days=1)
    spacing = f"/api/infusion-courses/{depression.course_id}/sessions"
    problem = refused(embedded, spacing, slot(days=2), "start")
    assert "at least 3 days" in problem["errors"][0]["message"]
    agree_plan(embedded, depression.course_id, **{**DEPRESSION_PLAN, "dose_mg_per_kg": 0.4})
    again = embedded.get(f"/api/infusion-sessions/{booked['id']}").json()
    assert (booked["planned_mg"], again["planned_mg"]) == (35.0, 28.0)
    assert embedded.events(depression.course_id)[-1].type == "infusion.session.redosed"


def test_closing_the_course_closes_the_referral(embedded: Embedded) -> None:
    """Issue 4, "Course": closed with a reason, publishing infusion.course.closed; the
    referrals service closes the referral that opened it."""
    opened = planned_course(embedded)
    booked = schedule(embedded, opened.course_id)
    closed = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/close", {"reason": "completed"}
    )
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["status"], body["close_reason"]) == ("finished", "completed")
    assert [s["status"] for s in body["sessions"]] == ["cancelled"]
    assert embedded.get(f"/api/infusion-sessions/{booked['id']}").json()["status"] == "cancelled"

    types = [e.type for e in embedded.events(opened.course_id)]
    assert types[-2:] == ["infusion.course.status_changed", "infusion.course.closed"]

    def referral_status() -> str | None:
        response = embedded.get(f"/api/referrals/{opened.referral_id}", Role.mdt)
        status: str = response.json()["status"]
        return status if status == "closed" else None

    assert wait_for(referral_status, "the referral to close") == "closed"
    again = embedded.post(f"/api/infusion-courses/{opened.course_id}/close", {"reason": "other"})
    assert assert_problem(again, 409)["current_status"] == "finished"


def test_a_course_declined_before_a_plan_is_cancelled(embedded: Embedded) -> None:
    opened = open_course(embedded)
    closed = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/close", {"reason": "declined"}
    )
    assert closed.json()["status"] == "cancelled"


# --- bad input: a problem naming the field, nothing written -------------------------------


def refused(
    embedded: Embedded, path: str, body: Any, field: str, status: int = 422
) -> dict[str, Any]:
    before = embedded.snapshot()
    problem = assert_problem(embedded.post(path, body), status, field)
    assert embedded.snapshot() == before
    return problem


def test_a_dose_above_the_ceiling_is_refused_even_with_an_override(embedded: Embedded) -> None:
    """CLINICAL.md line 60: default hard ceiling 1 mg/kg/h (local policy)."""
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    path = f"/api/infusion-courses/{opened.course_id}/plan"
    refused(embedded, path, plan_body(rate_mg_per_kg_per_h=1.2), "rate_mg_per_kg_per_h")
    refused(
        embedded,
        path,
        plan_body(rate_mg_per_kg_per_h=1.2, override={"reason": "asked nicely"}),
        "rate_mg_per_kg_per_h",
    )
    refused(
        embedded,
        path,
        plan_body(
            indication="depression",
            rate_mg_per_kg_per_h=None,
            duration_hours=None,
            dose_mg_per_kg=1.1,
            infusion_minutes=40,
        ),
        "dose_mg_per_kg",
    )


def test_a_dose_outside_the_band_without_override_is_refused(embedded: Embedded) -> None:
    """CLINICAL.md lines 55-60: outside the band needs a named clinician's override."""
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    path = f"/api/infusion-courses/{opened.course_id}/plan"
    problem = refused(embedded, path, plan_body(rate_mg_per_kg_per_h=0.5), "rate_mg_per_kg_per_h")
    assert "override" in problem["errors"][0]["message"]
    refused(embedded, path, plan_body(duration_hours=1.5), "duration_hours")
    refused(
        embedded,
        path,
        plan_body(
            indication="depression",
            rate_mg_per_kg_per_h=None,
            duration_hours=None,
            dose_mg_per_kg=0.8,
            infusion_minutes=40,
        ),
        "dose_mg_per_kg",
    )
    # Still planned: no plan, no status change.
    assert courses_of(embedded, opened.patient_id)[0]["status"] == "planned"


def test_issue_12_dose_refusals_name_the_field_and_what_is_acceptable(
    embedded: Embedded,
) -> None:
    """Issue 12; CLINICAL.md "Dosing plan": a depression plan faster than 0.75 mg/kg/h
    (0.5 mg/kg over 40 minutes, Sanacora 2017); the hard duration and total ceilings
    (local policy) an override cannot pass; the plan's weight against the assessment's."""
    opened = open_course(embedded)
    assess(embedded, opened.course_id)  # 70 kg
    path = f"/api/infusion-courses/{opened.course_id}/plan"
    depression = {
        "indication": "depression",
        "rate_mg_per_kg_per_h": None,
        "duration_hours": None,
        "dose_mg_per_kg": 0.75,
        "infusion_minutes": 10,
    }
    problem = refused(embedded, path, plan_body(**depression), "infusion_minutes")
    assert "at least 60 minutes" in problem["errors"][0]["message"]
    assert "override" in problem["errors"][0]["message"]
    long = plan_body(rate_mg_per_kg_per_h=1.0, duration_hours=48, override={"reason": "x"})
    refused(embedded, path, long, "duration_hours")
    problem = refused(embedded, path, plan_body(weight_kg=154), "weight_kg")
    assert "70 kg" in problem["errors"][0]["message"]
    assert courses_of(embedded, opened.patient_id)[0]["status"] == "planned"


def test_a_plan_needs_an_eligible_assessment(embedded: Embedded) -> None:
    opened = open_course(embedded)
    path = f"/api/infusion-courses/{opened.course_id}/plan"
    refused(embedded, path, plan_body(), "assessment")
    assess(embedded, opened.course_id, checklist=checklist("psychosis"))
    problem = refused(embedded, path, plan_body(), "assessment")
    assert "ineligible" in problem["detail"]


def test_a_session_before_the_plan_is_refused(embedded: Embedded) -> None:
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    refused(embedded, f"/api/infusion-courses/{opened.course_id}/sessions", slot(), "plan")


def test_overlapping_sessions_are_refused(embedded: Embedded) -> None:
    # A depression plan and maintenance bookings: neither the pain series' wait for the
    # first infusion's reassessment nor the induction spacing applies (issue 12).
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    agree_plan(embedded, opened.course_id, **DEPRESSION_PLAN)
    first = schedule(embedded, opened.course_id, minutes=60)
    path = f"/api/infusion-courses/{opened.course_id}/sessions"
    refused(embedded, path, slot(minutes=120), "start")
    refused(embedded, path, slot(minutes=30, hours=1), "start")
    # Touching is not overlapping: ending as the other starts, starting as it ends.
    start = datetime.fromisoformat(first["scheduled_start"])
    end = datetime.fromisoformat(first["scheduled_end"])
    for when in (
        {
            "start": (start - timedelta(minutes=30)).isoformat(),
            "end": start.isoformat(),
            "kind": "maintenance",
        },
        {
            "start": end.isoformat(),
            "end": (end + timedelta(hours=1)).isoformat(),
            "kind": "maintenance",
        },
    ):
        response = embedded.post(path, when)
        assert response.status_code == 201, response.text


def test_a_session_in_the_past_or_too_long_is_refused(embedded: Embedded) -> None:
    opened = planned_course(embedded)
    path = f"/api/infusion-courses/{opened.course_id}/sessions"
    refused(embedded, path, slot(minutes=-60), "start")
    refused(embedded, path, slot(hours=11), "end")
    refused(embedded, path, slot(hours=-1), "end")


VITALS_OUT_OF_RANGE = [
    ("systolic", 0),
    ("systolic", 400),
    ("diastolic", 0),
    ("diastolic", 140),  # above the systolic 130
    ("heart_rate", 0),
    ("spo2", 101),
]


def test_vitals_outside_physiological_range_are_refused(embedded: Embedded) -> None:
    """Issue 4, as issue 12 narrows it: only impossible vitals (systolic 0 or 400, SpO2
    101: the policy's vitals.impossible_above_*) are a 422 naming the field, nothing
    written. (Systolic 20 was refused; issue 12 records critically abnormal values.)"""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    step(embedded, session["id"], "check-in")
    path = f"/api/infusion-sessions/{session['id']}/vitals"
    for field, value in VITALS_OUT_OF_RANGE:
        refused(embedded, path, {"phase": "before", **VITALS_OK, field: value}, field)


def test_critically_abnormal_vitals_are_recorded_not_refused(embedded: Embedded) -> None:
    """Issue 12; CLINICAL.md "During a session": SpO2 45 and systolic 60 are recorded (and
    SpO2 < 92% crosses its alert), never refused as out of range."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    step(embedded, session["id"], "check-in")
    critical = {"phase": "before", "systolic": 60, "diastolic": 35, "heart_rate": 40, "spo2": 45}
    reading = step(embedded, session["id"], "vitals", critical)
    assert (reading["systolic"], reading["spo2"]) == (60, 45)
    # The alert limit crossed, then what is critically abnormal (for the urgent alert).
    assert reading["out_of_range"] == [
        "SpO2 45% < 92%",
        "systolic 60 ≤ 90",
        "pulse 40 ≤ 40",
        "SpO2 45% < 88%",
    ]


def test_a_negative_weight_is_refused(embedded: Embedded) -> None:
    opened = open_course(embedded)
    path = f"/api/infusion-courses/{opened.course_id}/assessments"
    refused(embedded, path, assessment_body(weight_kg=-70), "weight_kg")
    assess(embedded, opened.course_id)
    refused(
        embedded,
        f"/api/infusion-courses/{opened.course_id}/plan",
        plan_body(weight_kg=-70),
        "weight_kg",
    )


def test_an_assessment_with_bad_items_is_refused_naming_them(embedded: Embedded) -> None:
    """CLINICAL.md Measures: an item count that does not fit the instrument is a 422 naming
    the item; nothing is stored. Lines 43 and 50-51: every checklist item is answered and
    the prior treatments are recorded."""
    opened = open_course(embedded)
    path = f"/api/infusion-courses/{opened.course_id}/assessments"
    refused(embedded, path, assessment_body(phq9_items=[1] * 8), "phq9_items")
    refused(
        embedded, path, assessment_body(phq9_items=[0, 0, 4, 0, 0, 0, 0, 0, 0]), "phq9_items[2]"
    )
    partial = checklist()
    del partial["pregnancy"]
    refused(embedded, path, assessment_body(checklist=partial), "checklist.pregnancy")
    refused(embedded, path, assessment_body(prior_treatments=[]), "prior_treatments")
    refused(embedded, path, assessment_body(systolic=0), "systolic")
    refused(
        embedded,
        path,
        assessment_body(overrides=[{"caution": "controlled-hypertension", "reason": "fine"}]),
        "overrides.controlled-hypertension",
    )


def test_a_caution_needs_an_override_before_a_plan(embedded: Embedded) -> None:
    """CLINICAL.md lines 48-49: cautions need a named clinician's override with a reason."""
    opened = open_course(embedded)
    waiting = assess(embedded, opened.course_id, checklist=checklist("controlled-hypertension"))
    assert waiting["outcome"] == "needs-override"
    assert waiting["cautions_without_override"] == ["controlled-hypertension"]
    refused(embedded, f"/api/infusion-courses/{opened.course_id}/plan", plan_body(), "assessment")
    overridden = assess(
        embedded,
        opened.course_id,
        checklist=checklist("controlled-hypertension"),
        overrides=[{"caution": "controlled-hypertension", "reason": "on amlodipine, 130/80"}],
    )
    assert overridden["outcome"] == "eligible"
    assert overridden["overrides"][0]["clinician"] == CLINICIAN
    (row,) = embedded.audit(AuditRecord.entity_id == overridden["id"])
    assert row.detail == "caution override: controlled-hypertension"
    agree_plan(embedded, opened.course_id)


def test_a_dose_given_far_from_the_plan_needs_a_reason_and_is_then_recorded(
    embedded: Embedded,
) -> None:
    """CLINICAL.md line 61: every dose is computed from the plan's weight; issue 12: a dose
    outside ±10% (dose.given_tolerance_fraction) needs a reason, it is never unrecordable.
    (It was refused outright.)"""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    start_session(embedded, session["id"])
    refused(
        embedded,
        f"/api/infusion-sessions/{session['id']}/complete",
        {"pain_nrs": 4, "mood": 5},
        "given_mg",
    )
    path = f"/api/infusion-sessions/{session['id']}/dose"
    # 84 mg planned, the first pain infusion capped at 80 mg (Cohen 2018)
    problem = refused(embedded, path, {"given_mg": 100}, "reason")
    assert "80 mg" in problem["errors"][0]["message"]
    given = step(embedded, session["id"], "dose", {"given_mg": 100, "reason": "pump re-primed"})
    assert (given["given_mg"], given["given_reason"]) == (100, "pump re-primed")


def test_an_infusion_stopped_early_records_the_dose_it_gave(embedded: Embedded) -> None:
    """Issue 12: abandoned sessions record the dose given, with the reason; the event
    carries the dose for the pathway."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    start_session(embedded, session["id"])
    stopped = step(
        embedded, session["id"], "abandon", {"reason": "dizzy at 40 min", "given_mg": 21}
    )
    assert (stopped["status"], stopped["given_mg"]) == ("abandoned", 21)
    assert stopped["given_reason"] == "dizzy at 40 min"
    abandoned = embedded.events(opened.course_id)[-1]
    assert abandoned.type == "infusion.session.abandoned"
    assert abandoned.envelope["data"]["given_mg"] == 21


def test_a_step_out_of_order_is_a_409(embedded: Embedded) -> None:
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    before = embedded.snapshot()
    problem = assert_problem(embedded.post(f"/api/infusion-sessions/{session['id']}/start"), 422)
    assert problem["errors"][0]["field"] == "vitals"  # vitals before starting
    step(embedded, session["id"], "check-in")
    conflict = assert_problem(
        embedded.post(f"/api/infusion-sessions/{session['id']}/check-in"), 409
    )
    assert conflict["current_status"] == "checked-in"
    assert embedded.snapshot() == before


# --- roles ----------------------------------------------------------------------------------


def test_psychologists_and_admins_read_the_summary_only(embedded: Embedded) -> None:
    """Issue 4, "Roles": psychologists read the summary only; admins see statuses."""
    opened = planned_course(embedded)
    schedule(embedded, opened.course_id)
    for role in (Role.psychologist, Role.admin):
        course = embedded.get(f"/api/infusion-courses/{opened.course_id}", role)
        assert course.status_code == 200, course.text
        body = course.json()
        assert body["status"] == "active"
        assert body["completed_sessions"] == 0
        assert not {"assessment", "plan", "sessions", "status_reason"} & set(body), role
        listed = embedded.get("/api/infusion-courses", role, patient_id=opened.patient_id)
        assert not {"assessment", "plan", "sessions"} & set(listed.json()["items"][0])
        session_read = embedded.get(f"/api/infusion-sessions/{uuid4()}", role)
        assert_problem(session_read, 403)


def test_the_mdt_reads_the_clinical_detail(embedded: Embedded) -> None:
    opened = planned_course(embedded)
    body = embedded.get(f"/api/infusion-courses/{opened.course_id}", Role.mdt).json()
    assert body["assessment"]["outcome"] == "eligible"
    assert body["plan"]["total_mg"] == 84.0
    assert body["sessions"] == []


def test_a_psychologist_cannot_record_an_assessment_and_is_audited(embedded: Embedded) -> None:
    opened = open_course(embedded)
    denied_before = len(embedded.audit(AuditRecord.outcome == "4"))
    before = embedded.snapshot()
    response = embedded.client.post(
        f"/api/infusion-courses/{opened.course_id}/assessments",
        json=assessment_body(),
        headers=embedded.headers(Role.psychologist, "psy-1"),
    )
    assert_problem(response, 403)
    assert embedded.snapshot() == before
    denied = embedded.audit(AuditRecord.outcome == "4")
    assert len(denied) == denied_before + 1
    assert (denied[-1].agent_user, denied[-1].agent_role) == ("psy-1", "psychologist")
    assert denied[-1].path == f"/api/infusion-courses/{opened.course_id}/assessments"
    assert denied[-1].action == "C"
    assert denied[-1].detail == "HTTP 403"


def test_the_mdt_can_hold_and_resume_a_course(embedded: Embedded) -> None:
    """Issue 4, "Roles": the MDT reads all and can put a course on hold."""
    opened = planned_course(embedded)
    cid = opened.course_id
    held = embedded.post(f"/api/infusion-courses/{cid}/hold", {"reason": "MDT review"}, Role.mdt)
    assert held.status_code == 200, held.text
    assert held.json()["status"] == "onhold"
    assert held.json()["status_reason"] == "MDT review"

    before = embedded.snapshot()
    problem = assert_problem(embedded.post(f"/api/infusion-courses/{cid}/sessions", slot()), 409)
    assert problem["current_status"] == "onhold"
    assert embedded.snapshot() == before
    again = embedded.post(f"/api/infusion-courses/{cid}/hold", {"reason": "twice"}, Role.mdt)
    assert assert_problem(again, 409)["current_status"] == "onhold"

    resumed = embedded.post(f"/api/infusion-courses/{cid}/resume", {"reason": "reviewed"}, Role.mdt)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"
    schedule(embedded, cid)
    changes = [
        e.envelope["data"]["status"]
        for e in embedded.events(cid)
        if e.type == "infusion.course.status_changed"
    ]
    assert changes == ["active", "onhold", "active"]


def test_only_clinicians_and_the_mdt_hold_a_course(embedded: Embedded) -> None:
    opened = planned_course(embedded)
    path = f"/api/infusion-courses/{opened.course_id}/hold"
    for role in (Role.psychologist, Role.admin, Role.referrer):
        assert_problem(embedded.post(path, {"reason": "x"}, role), 403)
    held = embedded.post(path, {"reason": "patient away"}, Role.infusion_clinician)
    assert held.json()["status"] == "onhold"


def test_the_mdt_cannot_close_a_course(embedded: Embedded) -> None:
    opened = open_course(embedded)
    response = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/close", {"reason": "stopped"}, Role.mdt
    )
    assert_problem(response, 403)


def test_a_referrer_cannot_list_courses(embedded: Embedded) -> None:
    response = embedded.get("/api/infusion-courses", Role.referrer, patient_id=str(uuid4()))
    assert_problem(response, 403)


def test_an_unknown_course_is_a_404(embedded: Embedded) -> None:
    assert_problem(embedded.get(f"/api/infusion-courses/{uuid4()}"), 404)


def test_an_unknown_status_filter_is_a_422(embedded: Embedded) -> None:
    assert_problem(embedded.get("/api/infusion-courses", status="paused"), 422, "status")


# --- once source bugs, now fixed ------------------------------------------------------------


def test_a_negative_pain_rate_is_refused(embedded: Embedded) -> None:
    opened = open_course(embedded)
    assess(embedded, opened.course_id)
    refused(
        embedded,
        f"/api/infusion-courses/{opened.course_id}/plan",
        plan_body(rate_mg_per_kg_per_h=-0.2),
        "rate_mg_per_kg_per_h",
    )


def test_a_dose_exactly_ten_percent_over_the_plan_is_accepted(embedded: Embedded) -> None:
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    start_session(embedded, session["id"])
    # The first pain infusion is capped at 80 mg (issue 12): 88 mg is 10% over.
    response = embedded.post(f"/api/infusion-sessions/{session['id']}/dose", {"given_mg": 88})
    assert response.status_code == 200, response.text


def test_closing_a_course_publishes_its_booked_sessions_cancelled(embedded: Embedded) -> None:
    opened = planned_course(embedded)
    schedule(embedded, opened.course_id)
    closed = embedded.post(f"/api/infusion-courses/{opened.course_id}/close", {"reason": "stopped"})
    assert closed.status_code == 200, closed.text
    types = [e.type for e in embedded.events(opened.course_id)]
    assert "infusion.session.cancelled" in types


def test_a_later_ineligible_assessment_blocks_scheduling(embedded: Embedded) -> None:
    """CLINICAL.md lines 44-47: a blocking contraindication blocks a plan."""
    opened = planned_course(embedded)
    assess(embedded, opened.course_id, checklist=checklist("pregnancy"))
    response = embedded.post(f"/api/infusion-courses/{opened.course_id}/sessions", slot())
    assert response.status_code in (409, 422), response.text


# --- opioid use (issue 12; CLINICAL.md, course rules: opioid reduction) -------------------


def medicine(drug: str, dose: float, **given: Any) -> dict[str, Any]:
    return {"drug": drug, "dose": dose, "unit": "mg", "route": "oral", **given}


def test_opioid_use_at_assessment_is_recorded_per_medicine_with_mme(embedded: Embedded) -> None:
    opened = open_course(embedded)
    body = assess(
        embedded,
        opened.course_id,
        opioid_mme_per_day=None,
        medicines=[
            medicine("oxycodone", 20, doses_per_day=2),  # 40 mg x 1.5 = 60
            medicine("morphine", 30),  # 30
            {"drug": "diazepam", "dose": 5, "unit": "mg", "route": "oral", "doses_per_day": 3},
        ],
    )
    use = body["opioid_use"]
    assert body["opioid_mme_per_day"] == 90.0
    assert use["total_mme_per_day"] == 90.0
    assert use["conversion_table"] == "opioids-aware"
    assert [m["mme_per_day"] for m in use["medicines"]] == [60.0, 30.0, None]
    # CLINICAL.md: flag at 50 and at 90 MME/day (the threshold itself counts), and a
    # benzodiazepine taken with an opioid (CDC 2022).
    assert use["flags"] == ["≥ 90 MME/day", "≥ 50 MME/day", "benzodiazepine with an opioid"]
    assert use["complete"] is True
    types = [e.type for e in embedded.events(opened.course_id)]
    assert "infusion.opioid_use.recorded" in types


def test_opioid_use_at_follow_up_makes_the_mme_trend_on_the_pathway(embedded: Embedded) -> None:
    opened = open_course(embedded)
    tramadol = medicine("tramadol", 100, doses_per_day=4)  # 400 mg x 0.1 = 40
    assess(embedded, opened.course_id, opioid_mme_per_day=None, medicines=[tramadol])
    follow_up = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/opioid-use",
        {"medicines": [medicine("tramadol", 50, doses_per_day=4)]},
    )
    assert follow_up.status_code == 201, follow_up.text
    assert follow_up.json()["total_mme_per_day"] == 20.0  # 200 mg x 0.1
    assert follow_up.json()["flags"] == []
    course = embedded.get(f"/api/infusion-courses/{opened.course_id}").json()
    assert [u["total_mme_per_day"] for u in course["opioid_use"]] == [40.0, 20.0]

    def trend() -> list[float] | None:
        pathway = embedded.get(f"/api/pathways/{opened.patient_id}", Role.mdt).json()
        points = [p["score"] for p in pathway["measures"]["opioid_mme"]]
        return points if len(points) == 2 else None

    assert wait_for(trend, "the follow-up in the pathway's MME series") == [40.0, 20.0]
    pathway = embedded.get(f"/api/pathways/{opened.patient_id}", Role.mdt).json()
    assert pathway["opioid_use"]["context"] == "follow-up"
    assert pathway["opioid_use"]["total_mme_per_day"] == 20.0
    admin = embedded.get(f"/api/pathways/{opened.patient_id}", Role.admin).json()
    assert admin.get("opioid_use") is None  # a dose is clinical detail
    assert admin["measures"]["opioid_mme"] == []


def test_a_medicine_without_a_factor_is_not_counted_and_the_total_says_so(
    embedded: Embedded,
) -> None:
    opened = open_course(embedded)
    use = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/opioid-use",
        {"medicines": [medicine("morphine", 10), medicine("pethidine", 50)]},
    ).json()
    assert use["total_mme_per_day"] == 10.0
    assert use["complete"] is False
    assert "not counted" in use["medicines"][1]["note"]


def test_opioid_use_refusals_name_the_field(embedded: Embedded) -> None:
    opened = open_course(embedded)
    before = embedded.snapshot()
    # Neither the medicines nor a figure: the clinic must record what the patient takes.
    response = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/assessments",
        assessment_body(opioid_mme_per_day=None),
    )
    assert_problem(response, 422, "medicines")
    # Two numbers for one fact: the stated figure must be what the medicines come to.
    response = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/assessments",
        assessment_body(opioid_mme_per_day=10, medicines=[medicine("morphine", 60)]),
    )
    assert "60" in assert_problem(response, 422, "opioid_mme_per_day")["detail"]
    response = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/opioid-use",
        {"medicines": [medicine("morphine", -5)]},
    )
    assert response.status_code in (400, 422)
    assert "dose" in response.text
    response = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/opioid-use",
        {"medicines": [{**medicine("morphine", 5), "unit": "grain"}]},
    )
    assert response.status_code in (400, 422)
    assert "unit" in response.text
    assert embedded.snapshot() == before
    psychologist = embedded.post(
        f"/api/infusion-courses/{opened.course_id}/opioid-use",
        {"medicines": []},
        Role.psychologist,
    )
    assert psychologist.status_code == 403


# --- an open urgent alert stops the course closing (issue 12) -------------------------------


def test_a_course_with_an_open_urgent_alert_is_not_closed_until_it_is_resolved(
    embedded: Embedded,
) -> None:
    """Issue 12, "Alerts that stay until a person acts": closing a course with an open
    urgent alert is refused unless the alert is resolved first (CLINICAL.md, "During a
    session": critically abnormal vitals raise an urgent alert)."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    step(embedded, session["id"], "check-in")
    critical = {"systolic": 60, "diastolic": 35, "heart_rate": 40, "spo2": 85}
    step(embedded, session["id"], "vitals", critical)

    def known_to_infusions() -> int | None:
        found = embedded.count(UrgentAlert, UrgentAlert.patient_id == UUID(opened.patient_id))
        return found or None

    wait_for(known_to_infusions, "the urgent alert to reach the infusions service")
    before = embedded.snapshot()
    path = f"/api/infusion-courses/{opened.course_id}/close"
    refused = assert_problem(embedded.post(path, {"reason": "completed"}), 409, "alerts")
    assert "vitals-critical" in refused["detail"]
    (alert,) = refused["open_urgent_alerts"]
    assert embedded.snapshot() == before  # nothing written, the session still booked

    resolve = embedded.post(
        f"/api/alerts/{alert['id']}/resolve", {"note": "reviewed, observations recovered"}
    )
    assert resolve.status_code == 200, resolve.text

    def closes() -> dict[str, Any] | None:
        response = embedded.post(path, {"reason": "completed"})
        return response.json() if response.status_code == 200 else None

    closed = wait_for(closes, "the course to close once the alert is resolved")
    assert closed["status"] == "finished"


@pytest.mark.parametrize(
    ("reading", "finding"),
    [
        ({"systolic": 85, "diastolic": 60, "heart_rate": 72, "spo2": 97}, "systolic 85 ≤ 90"),
        ({"systolic": 120, "diastolic": 70, "heart_rate": 38, "spo2": 97}, "pulse 38 ≤ 40"),
        ({"systolic": 120, "diastolic": 70, "heart_rate": 135, "spo2": 97}, "pulse 135 ≥ 131"),
    ],
)
def test_a_lone_critical_reading_crosses_no_alert_limit_but_raises_the_urgent_alert(
    embedded: Embedded, reading: dict[str, int], finding: str
) -> None:
    """Issue 12 ("Critically abnormal values ... raise an urgent alert"): a low systolic or
    an extreme pulse alone crosses none of the 160/100, 180/110 or SpO2 limits, and must
    still reach the coordinator (CLINICAL.md, During a session; NEWS2 red scores)."""
    opened = planned_course(embedded)
    session = schedule(embedded, opened.course_id)
    step(embedded, session["id"], "check-in")
    recorded = step(embedded, session["id"], "vitals", reading)
    assert finding in recorded["out_of_range"]
    types = [e.type for e in embedded.events(opened.course_id)]
    assert types[-1] == "infusion.vitals.out_of_range"

    def urgent() -> list[dict[str, Any]] | None:
        alerts = embedded.get(f"/api/pathways/{opened.patient_id}", Role.mdt).json()["alerts"]
        found = [a for a in alerts if a["kind"] == "vitals-critical"]
        return found or None

    (alert,) = wait_for(urgent, "the urgent alert for a critical reading")
    assert alert["severity"] == "urgent" and finding in alert["reason"]
