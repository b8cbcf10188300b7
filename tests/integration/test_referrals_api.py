"""The referrals API on a real PostgreSQL (issue 3): transitions and their outbox events,
the inbox, the per-object permission matrix, bad input, and closing the loop.

Tests that need a database of their own (exact counts, a trigger, a worker) take the
``stack`` fixture; the permission matrix and the bad-input cases share one module-wide
referrals database and app, and each case makes the patient and referral it works on.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
import pytest
import redis
from litestar import Litestar
from litestar.testing import TestClient

from services.referrals import domain
from services.referrals.handlers import handle_event
from shared.events import Actor, Envelope, Subject, encode_envelope, new_event
from shared.events.catalogue import InfusionCourseClosed, TherapyEpisodeDischarged
from shared.messaging import make_broker, queue_sender
from tests.conftest import postgres_problem, redis_problem
from tests.integration.conftest import Stack
from tests.support import (
    POSTGRES_ADMIN_URL,
    REDIS_TEST_URL,
    Processes,
    carepath,
    execute,
    patient_body,
    plain_url,
    postgres_databases,
    referral_body,
    scalar,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

PSY, KET, MDT_TEAM = "psychology", "ketamine-infusion", "pain-mdt"
PROBLEM_JSON = "application/problem+json"

# Who calls: name in the tables below → (role in the token, user id).
ACTORS: dict[str, tuple[str, str]] = {
    "owner": ("referrer", "gp-owner"),  # the referrer who registered and referred
    "other-referrer": ("referrer", "gp-other"),
    "psychologist": ("psychologist", "psy-1"),
    "infusion-clinician": ("infusion-clinician", "inf-1"),
    "mdt": ("mdt", "mdt-1"),
    "admin": ("admin", "admin-1"),
    "service": ("service", "svc-1"),
}


def headers(actor: str) -> dict[str, str]:
    role, user = ACTORS[actor]
    return {"Authorization": f"Bearer {token(role, user)}"}


# --- small helpers ------------------------------------------------------------------


def rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        return connection.execute(query, params).fetchall()


def register(client: TestClient[Litestar], actor: str = "owner", **overrides: Any) -> str:
    response = client.post("/api/patients", json=patient_body(**overrides), headers=headers(actor))
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


def refer(
    client: TestClient[Litestar], patient_id: str, actor: str = "owner", **overrides: Any
) -> str:
    body = referral_body(patient_id, **overrides)
    response = client.post("/api/referrals", json=body, headers=headers(actor))
    assert response.status_code == 201, response.text
    referral_id: str = response.json()["id"]
    return referral_id


def act(
    client: TestClient[Litestar], referral_id: str, action: str, body: dict[str, Any], actor: str
) -> Any:
    """POST …/triage, …/info or …/cancel and expect it to succeed."""
    response = client.post(
        f"/api/referrals/{referral_id}/{action}", json=body, headers=headers(actor)
    )
    assert response.status_code == 200, response.text
    return response.json()


@dataclass(frozen=True)
class Snapshot:
    """A referral as the database holds it: status, transitions, outbox events."""

    status: str | None
    transitions: list[tuple[Any, ...]]
    events: list[tuple[str, int]]


def snapshot(database_url: str, referral_id: str) -> Snapshot:
    return Snapshot(
        status=scalar(database_url, "SELECT status FROM referral WHERE id = %s", referral_id),
        transitions=rows(
            database_url,
            "SELECT action, from_status, to_status, by_user, by_role, note"
            " FROM referral_transition WHERE referral_id = %s ORDER BY id",
            referral_id,
        ),
        events=[
            (str(kind), int(sequence))
            for kind, sequence in rows(
                database_url,
                "SELECT type, sequence FROM outbox"
                " WHERE subject_type = 'referral' AND subject_id = %s ORDER BY position",
                referral_id,
            )
        ],
    )


def envelope_of(database_url: str, referral_id: str, event_type: str) -> dict[str, Any]:
    found = rows(
        database_url,
        "SELECT envelope FROM outbox WHERE subject_id = %s AND type = %s",
        referral_id,
        event_type,
    )
    assert len(found) == 1, f"{len(found)} {event_type} events for the referral"
    envelope: dict[str, Any] = found[0][0]
    return envelope


TABLES_WRITTEN = ("patient", "referral", "referral_transition", "referral_note", "outbox")


def row_counts(database_url: str) -> dict[str, int]:
    return {
        table: int(scalar(database_url, f"SELECT count(*) FROM {table}"))
        for table in TABLES_WRITTEN
    }


def denials(database_url: str, path: str, actor: str | None) -> int:
    role, user = ACTORS[actor] if actor else ("none", "anonymous")
    return int(
        scalar(
            database_url,
            "SELECT count(*) FROM audit_log"
            " WHERE outcome = '4' AND path = %s AND agent_user = %s AND agent_role = %s",
            path,
            user,
            role,
        )
    )


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def fields_named(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem.get("errors", [])]


def valid_nhs_number() -> str:
    """A random NHS number with a correct modulus-11 check digit."""
    generator = random.Random()
    while True:
        first_nine = f"{generator.randrange(10**8, 10**9)}"
        total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
        check = (11 - total % 11) % 11
        if check != 10:
            return first_nine + str(check)


def closing_event(event_type: str, referral_id: str, patient_id: str) -> Envelope:
    """The event the infusion or therapy service publishes when care ends, as it sends it."""
    now = datetime.now(UTC)
    aggregate = uuid4()
    data: msgspec.Struct
    if event_type == "infusion.course.closed":
        producer, subject_type = "infusions", "infusion_course"
        data = InfusionCourseClosed(
            course_id=aggregate, referral_id=UUID(referral_id), reason="completed", closed_at=now
        )
    else:
        producer, subject_type = "therapy", "therapy_episode"
        data = TherapyEpisodeDischarged(
            episode_id=aggregate,
            referral_id=UUID(referral_id),
            reason="completed",
            discharged_at=now,
        )
    envelope = new_event(
        type=event_type,
        data=data,
        producer=producer,
        patient_id=UUID(patient_id),
        subject=Subject(type=subject_type, id=str(aggregate)),
        actor=Actor(user_id=producer, role="service"),
        correlation_id="close-the-loop",
    )
    # The producer's outbox would number it; it is that aggregate's first event.
    return msgspec.structs.replace(envelope, sequence=1)


# --- one referrals app and database shared by the matrix and the bad-input cases ----


@dataclass
class SharedApi:
    stack: Stack
    client: TestClient[Litestar]

    @property
    def db(self) -> str:
        return self.stack.databases["referrals"]


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedApi]:
    problems = [p for p in (postgres_problem(), redis_problem()) if p]
    if problems:
        reason = "; ".join(problems)
        if os.environ.get("CAREPATH_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CAREPATH_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"needs real servers: {reason}")
    with postgres_databases("cp_it", ("referrals",)) as urls:
        stack = Stack(urls, REDIS_TEST_URL, tmp_path_factory.mktemp("referrals-api"))
        with TestClient(stack.api("referrals")) as client:
            yield SharedApi(stack, client)
        keys = list(redis.Redis.from_url(stack.redis_url).scan_iter(f"{stack.namespace}*"))
        if keys:
            redis.Redis.from_url(stack.redis_url).delete(*keys)


# === 1. each transition commits its row and its outbox event together ================

# (who, action, body, status after, the transition row's action / from / to / note, event)
LIFECYCLE = [
    (
        "psychologist",
        "triage",
        {"decision": "request-info", "question": "Which antidepressants were tried?"},
        "info-requested",
        ("request-info", "received", "info-requested", "Which antidepressants were tried?"),
        "referral.info_requested",
    ),
    (
        "owner",
        "info",
        {"answer": "Sertraline for a year, then mirtazapine"},
        "received",
        ("provide-info", "info-requested", "received", "Sertraline for a year, then mirtazapine"),
        "referral.info_provided",
    ),
    (
        "psychologist",
        "triage",
        {"decision": "accept", "reason": "Suitable for CBT for chronic pain"},
        "accepted",
        ("accept", "received", "accepted", "Suitable for CBT for chronic pain"),
        "referral.accepted",
    ),
    (
        "owner",
        "cancel",
        {"reason": "The patient has moved out of area"},
        "cancelled",
        ("cancel", "accepted", "cancelled", "The patient has moved out of area"),
        "referral.cancelled",
    ),
]


def test_each_transition_commits_its_row_and_its_outbox_event_together(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    patient_id = register(client)
    referral_id = refer(client, patient_id, target=PSY)

    created = snapshot(db, referral_id)
    assert created.status == "received"
    assert created.transitions == [("refer", None, "received", "gp-owner", "referrer", None)]
    assert created.events == [("referral.received", 1)]

    for actor, action, body, status, transition, event_type in LIFECYCLE:
        before = snapshot(db, referral_id)
        assert act(client, referral_id, action, body, actor)["status"] == status
        after = snapshot(db, referral_id)
        role, user = ACTORS[actor]
        what, from_status, to_status, note = transition
        assert after.status == status
        assert after.transitions == [
            *before.transitions,
            (what, from_status, to_status, user, role, note),
        ]
        assert after.events == [*before.events, (event_type, len(before.events) + 1)]
        envelope = envelope_of(db, referral_id, event_type)
        assert envelope["sequence"] == len(after.events)
        assert envelope["actor"] == {"user_id": user, "role": role}
        assert envelope["data"]["referral_id"] == referral_id
        # Events carry codes and ids; the question, answer and reasons stay in the table.
        assert note not in json.dumps(envelope)

    assert [event for event, _ in snapshot(db, referral_id).events] == [
        "referral.received",
        "referral.info_requested",
        "referral.info_provided",
        "referral.accepted",
        "referral.cancelled",
    ]
    cancelled = envelope_of(db, referral_id, "referral.cancelled")
    assert cancelled["data"]["previous_status"] == "accepted"


def test_a_rejection_commits_its_row_and_its_outbox_event_together(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    referral_id = refer(client, register(client), target=KET)

    reason = "Untreated hypertension: refer back once controlled"
    answer = act(
        client,
        referral_id,
        "triage",
        {"decision": "reject", "reason": reason},
        "infusion-clinician",
    )
    assert answer["status"] == "rejected"
    after = snapshot(db, referral_id)
    assert after.status == "rejected"
    assert after.transitions[-1] == (
        "reject",
        "received",
        "rejected",
        "inf-1",
        "infusion-clinician",
        reason,
    )
    assert after.events == [("referral.received", 1), ("referral.rejected", 2)]
    assert reason not in json.dumps(envelope_of(db, referral_id, "referral.rejected"))


REFUSE_ACCEPTED_EVENTS = """
CREATE FUNCTION test_refuse_accepted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.type = 'referral.accepted' THEN
    RAISE EXCEPTION 'refused by the test';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_refuse_accepted BEFORE INSERT ON outbox
  FOR EACH ROW EXECUTE FUNCTION test_refuse_accepted();
"""


def test_a_transition_whose_event_cannot_be_written_leaves_nothing_behind(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    referral_id = refer(client, register(client), target=PSY)
    execute(db, REFUSE_ACCEPTED_EVENTS)
    before = snapshot(db, referral_id)

    response = client.post(
        f"/api/referrals/{referral_id}/triage",
        json={"decision": "accept", "reason": "Suitable"},
        headers=headers("psychologist"),
    )

    assert_problem(response, 500)
    assert "refused by the test" not in response.text  # the database's words stay inside
    assert snapshot(db, referral_id) == before
    assert before.status == "received"
    # The failed attempt is audited on its own (outcome 8, FHIR "serious failure").
    assert (
        scalar(
            db,
            "SELECT count(*) FROM audit_log WHERE outcome = '8' AND path = %s",
            f"/api/referrals/{referral_id}/triage",
        )
        == 1
    )

    # With the outbox writable again the same accept succeeds, and no sequence was used up.
    execute(db, "DROP TRIGGER test_refuse_accepted ON outbox")
    act(client, referral_id, "triage", {"decision": "accept"}, "psychologist")
    assert snapshot(db, referral_id).events == [
        ("referral.received", 1),
        ("referral.accepted", 2),
    ]


# === 2. the inbox: filters, order, pagination, waiting times ==========================


def inbox_pages(
    client: TestClient[Litestar], actor: str = "mdt", **query: Any
) -> list[list[dict[str, Any]]]:
    """Every page of the inbox for this query, following next_cursor to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/referrals", params=params, headers=headers(actor))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ran out"


def inbox_ids(client: TestClient[Litestar], actor: str = "mdt", **query: Any) -> list[str]:
    return [item["id"] for page in inbox_pages(client, actor, **query) for item in page]


def seed_inbox(client: TestClient[Litestar], db: str) -> None:
    """40 referrals across teams, priorities and statuses, received over 13 weeks.

    Groups of referrals share one received_at exactly, so the id decides their order.
    """
    patient_id = register(client, "mdt")
    targets = (PSY, KET, MDT_TEAM)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for index in range(40):
        target = targets[index % 3]
        priority = "urgent" if index % 4 == 0 else "routine"
        referral_id = refer(client, patient_id, "mdt", target=target, priority=priority)
        match index % 5:
            case 1:
                act(client, referral_id, "triage", {"decision": "accept"}, "mdt")
            case 2:
                act(client, referral_id, "triage", {"decision": "reject", "reason": "no"}, "mdt")
            case 3:
                act(
                    client,
                    referral_id,
                    "triage",
                    {"decision": "request-info", "question": "?"},
                    "mdt",
                )
            case 4:
                act(client, referral_id, "cancel", {"reason": "withdrawn"}, "mdt")
        received_at = base - timedelta(days=3 * ((index * 11) % 30))
        execute(db, "UPDATE referral SET received_at = %s WHERE id = %s", received_at, referral_id)


def expected_order(db: str, **where: str) -> list[str]:
    """The inbox order worked out here: urgent first, then oldest first, then id."""
    columns = ("id", "target", "status", "priority", "priority_rank", "received_at")
    referrals = [
        dict(zip(columns, row, strict=True))
        for row in rows(db, f"SELECT {', '.join(columns)} FROM referral")
    ]
    chosen = [r for r in referrals if all(r[key] == value for key, value in where.items())]
    chosen.sort(key=lambda r: (r["priority_rank"], r["received_at"], r["id"]))
    return [str(r["id"]) for r in chosen]


def test_the_inbox_filters_orders_and_pages_through_every_row_exactly_once(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    seed_inbox(client, db)
    everything = expected_order(db)
    assert len(everything) == 40
    ties = scalar(
        db,
        "SELECT count(*) FROM"
        " (SELECT received_at FROM referral GROUP BY received_at HAVING count(*) > 1) AS tie",
    )
    assert ties >= 5, "the seed must have equal received_at values for the id tie-break"

    # Small pages: every row once, in order, with no gap at any page boundary.
    pages = inbox_pages(client, limit=7)
    assert [len(page) for page in pages] == [7, 7, 7, 7, 7, 5]
    listed = [item["id"] for page in pages for item in page]
    assert listed == everything
    items = [item for page in pages for item in page]
    keys = [(0 if i["priority"] == "urgent" else 1, i["received_at"]) for i in items]
    assert keys == sorted(keys), "urgent first, then the longest waiting"

    # A page that ends exactly at the last row says there is nothing more.
    exact = client.get("/api/referrals", params={"limit": 40}, headers=headers("mdt")).json()
    assert len(exact["items"]) == 40 and exact["next_cursor"] is None

    # Every filter, alone and combined, paged small and large.
    for name, values in (
        ("target", (PSY, KET, MDT_TEAM)),
        ("status", domain.STATUSES),
        ("priority", ("urgent", "routine")),
    ):
        for value in values:
            expected = expected_order(db, **{name: value})
            assert inbox_ids(client, **{name: value}, limit=200) == expected, (name, value)
            assert inbox_ids(client, **{name: value}, limit=3) == expected, (name, value)
    combined = {"target": PSY, "status": "received", "priority": "routine"}
    assert inbox_ids(client, **combined, limit=1) == expected_order(db, **combined)
    assert expected_order(db, status="closed") == []
    assert inbox_ids(client, status="closed") == []


def test_the_inbox_names_possible_duplicates_on_postgresql(shared_api: SharedApi) -> None:
    """Issue 16's possible duplicates, found on PostgreSQL with one array of the page's
    patients (`= ANY`, issue 15): each second referral to a team is linked to its first,
    and nothing else is linked, whatever page the referrals fall on."""
    client = shared_api.client
    firsts, seconds, singles = {}, {}, set()
    for _ in range(3):
        patient_id = register(client)
        firsts[patient_id] = refer(client, patient_id, target=PSY)
        seconds[patient_id] = refer(client, patient_id, target=PSY)
        singles.add(refer(client, patient_id, target=KET))
    for limit in (2, 200):
        pages = inbox_pages(client, "psychologist", target=PSY, status="received", limit=limit)
        items = {item["id"]: item for page in pages for item in page}
        for patient_id, second in seconds.items():
            assert items[second]["possible_duplicate_of"]["id"] == firsts[patient_id]
            assert "possible_duplicate_of" not in items[firsts[patient_id]]
    mdt_view = {item["id"]: item for page in inbox_pages(client, target=KET) for item in page}
    assert all("possible_duplicate_of" not in mdt_view[single] for single in singles)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 201}, "limit"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"rank": 0}').decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'[0, "yesterday", "x"]').decode()}, "cursor"),
        ({"status": "open"}, "status"),
        ({"target": "dermatology"}, "target"),
        ({"priority": "soon"}, "priority"),
    ],
    ids=[
        "limit-201",
        "limit-0",
        "garbage-cursor",
        "dict-cursor",
        "bad-date-cursor",
        "status",
        "target",
        "priority",
    ],
)
def test_a_bad_inbox_query_is_a_422_naming_the_parameter(
    shared_api: SharedApi, query: dict[str, Any], field: str
) -> None:
    response = shared_api.client.get("/api/referrals", params=query, headers=headers("mdt"))
    assert fields_named(assert_problem(response, 422)) == [field]


def test_a_cursor_with_an_infinite_rank_is_a_422(shared_api: SharedApi) -> None:
    cursor = base64.urlsafe_b64encode(
        json.dumps([1e999, "2026-01-01T00:00:00+00:00", str(uuid4())]).encode()
    ).decode()
    response = shared_api.client.get(
        "/api/referrals", params={"cursor": cursor}, headers=headers("mdt")
    )
    assert fields_named(assert_problem(response, 422)) == ["cursor"]


# (target, priority, days since received, standard's at-risk / breach days and unit, state)
# CLINICAL.md "Waiting times": psychology alert at 6 weeks, breach at 18; consultant-led
# care (infusion clinic, pain MDT) alert at 12 weeks, breach at 18; urgent triage in 2
# working days.
WAITING_BOUNDARIES = [
    (PSY, "routine", 0, (42, 126, "days"), "within"),
    (PSY, "routine", 41, (42, 126, "days"), "within"),
    (PSY, "routine", 42, (42, 126, "days"), "at-risk"),
    (PSY, "routine", 125, (42, 126, "days"), "at-risk"),
    (PSY, "routine", 126, (42, 126, "days"), "breached"),
    (KET, "routine", 41, (84, 126, "days"), "within"),
    (KET, "routine", 83, (84, 126, "days"), "within"),
    (KET, "routine", 84, (84, 126, "days"), "at-risk"),
    (KET, "routine", 125, (84, 126, "days"), "at-risk"),
    (KET, "routine", 126, (84, 126, "days"), "breached"),
    (MDT_TEAM, "routine", 84, (84, 126, "days"), "at-risk"),
    # Two calendar weeks hold ten working days whatever the weekday: far past 2.
    (PSY, "urgent", 14, (1, 2, "working days"), "breached"),
]


def test_each_row_carries_its_waiting_time_state_at_the_clinical_boundaries(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    patient_id = register(client, "mdt")
    expected: dict[str, tuple[Any, ...]] = {}
    for target, priority, days, standard, state in WAITING_BOUNDARIES:
        referral_id = refer(client, patient_id, "mdt", target=target, priority=priority)
        execute(
            db,
            "UPDATE referral SET received_at = now() - make_interval(days => %s) WHERE id = %s",
            days,
            referral_id,
        )
        expected[referral_id] = (days, standard, state)

    inbox = {item["id"]: item for item in inbox_pages(client, limit=200)[0]}
    for referral_id, (days, (at_risk, breach, unit), state) in expected.items():
        detail = client.get(f"/api/referrals/{referral_id}", headers=headers("mdt")).json()
        for row in (inbox[referral_id], detail):
            waiting = row["waiting"]
            assert waiting["days_waiting"] == days, row["target"]
            assert waiting["state"] == state, (row["target"], row["priority"], days)
            assert waiting["standard"]["at_risk_after"] == at_risk
            assert waiting["standard"]["breach_after"] == breach
            assert waiting["standard"]["unit"] == unit
            assert waiting["standard"]["name"] and waiting["standard"]["source"]
            assert waiting["clock_stopped"] is False


def test_the_waiting_clock_stops_when_a_referral_leaves_the_list(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    referral_id = refer(client, register(client), target=PSY)
    act(client, referral_id, "triage", {"decision": "reject", "reason": "not CBT"}, "psychologist")
    execute(
        db,
        "UPDATE referral SET received_at = now() - interval '200 days',"
        " status_changed_at = now() - interval '190 days' WHERE id = %s",
        referral_id,
    )
    waiting = client.get(f"/api/referrals/{referral_id}", headers=headers("mdt")).json()["waiting"]
    assert waiting["clock_stopped"] is True
    assert waiting["days_waiting"] == 10
    assert waiting["state"] == "within"


def test_waiting_days_do_not_depend_on_the_database_time_zone(
    stack: Stack, api_client: Callable[[Litestar], TestClient[Litestar]]
) -> None:
    # A zone whose date differs from UTC's at this hour (UTC-12 before noon, UTC+14 after),
    # set before the app opens its first connection.
    zone = "Etc/GMT+12" if datetime.now(UTC).hour < 12 else "Etc/GMT-14"
    db = stack.databases["referrals"]
    database = db.rsplit("/", 1)[1]
    execute(POSTGRES_ADMIN_URL, f"ALTER DATABASE \"{database}\" SET timezone TO '{zone}'")
    client = api_client(stack.api("referrals"))
    referral_id = refer(client, register(client), target=PSY)
    execute(
        db,
        "UPDATE referral SET received_at = now() - interval '41 days' WHERE id = %s",
        referral_id,
    )
    read = client.get(f"/api/referrals/{referral_id}", headers=headers("mdt")).json()
    assert read["waiting"]["days_waiting"] == 41
    assert read["waiting"]["state"] == "within"
    assert read["received_at"].endswith("Z")


# === 3. the object-level permission matrix ============================================

ENDPOINTS: dict[str, tuple[str, str]] = {
    "register-patient": ("POST", "/api/patients"),
    "read-patient": ("GET", "/api/patients/{patient}"),
    "correct-patient": ("PATCH", "/api/patients/{patient}"),
    "refer": ("POST", "/api/referrals"),
    "inbox": ("GET", "/api/referrals"),
    "read-referral": ("GET", "/api/referrals/{referral}"),
    "triage": ("POST", "/api/referrals/{referral}/triage"),
    "answer": ("POST", "/api/referrals/{referral}/info"),
    "cancel": ("POST", "/api/referrals/{referral}/cancel"),
}

SEEN, HIDDEN = "listed", "not listed"  # the inbox answers 200 and lists the referral, or not
ROLES_IN_COLUMNS = tuple(ACTORS)

# One owner's patient with one referral to the team in the second column; each cell is
# what that caller gets. From the issue ("referrers create and cancel their own referrals
# and see their status; psychologists see and triage psychology referrals only; infusion
# clinicians the ketamine-infusion ones; the MDT all; admins see statuses and waiting
# times") as services/referrals/domain.py states it: can_see_referral, can_triage,
# can_act_as_referrer (the MDT may also answer and cancel), plus the route guards
# (admin reads referrals only; service has no referrals route at all). "answer" runs on a
# referral the MDT has asked a question about. "register-patient" and "refer" make a new
# object; the column is the target of the new referral.
# fmt: off
MATRIX: dict[tuple[str, str], tuple[int | str, ...]] = {
    #                              owner  other-ref  psychol  infusion  mdt   admin  service
    ("register-patient", PSY):    (201,   201,       201,     201,      201,  403,   403),
    ("register-patient", KET):    (201,   201,       201,     201,      201,  403,   403),
    ("read-patient", PSY):        (200,   403,       200,     403,      200,  403,   403),
    ("read-patient", KET):        (200,   403,       403,     200,      200,  403,   403),
    ("correct-patient", PSY):     (200,   403,       200,     403,      200,  403,   403),
    ("correct-patient", KET):     (200,   403,       403,     200,      200,  403,   403),
    # No object check: any clinical role may refer any registered patient (see report).
    ("refer", PSY):               (201,   201,       201,     201,      201,  403,   403),
    ("refer", KET):               (201,   201,       201,     201,      201,  403,   403),
    ("inbox", PSY):               (SEEN,  HIDDEN,    SEEN,    HIDDEN,   SEEN, SEEN,  403),
    ("inbox", KET):               (SEEN,  HIDDEN,    HIDDEN,  SEEN,     SEEN, SEEN,  403),
    ("read-referral", PSY):       (200,   403,       200,     403,      200,  200,   403),
    ("read-referral", KET):       (200,   403,       403,     200,      200,  200,   403),
    ("triage", PSY):              (403,   403,       200,     403,      200,  403,   403),
    ("triage", KET):              (403,   403,       403,     200,      200,  403,   403),
    ("answer", PSY):              (200,   403,       403,     403,      200,  403,   403),
    ("answer", KET):              (200,   403,       403,     403,      200,  403,   403),
    ("cancel", PSY):              (200,   403,       403,     403,      200,  403,   403),
    ("cancel", KET):              (200,   403,       403,     403,      200,  403,   403),
}
# fmt: on

MATRIX_CASES = [
    pytest.param(endpoint, target, actor, outcome, id=f"{endpoint}-{target}-{actor}")
    for (endpoint, target), row in MATRIX.items()
    for actor, outcome in zip(ROLES_IN_COLUMNS, row, strict=True)
]


def request_body(endpoint: str, patient_id: str, target: str) -> dict[str, Any] | None:
    return {
        "register-patient": patient_body(),
        "correct-patient": {"contact_preference": "letter"},
        "refer": referral_body(patient_id, target=target),
        "triage": {"decision": "accept"},
        "answer": {"answer": "She tried sertraline for a year"},
        "cancel": {"reason": "The patient asked to withdraw"},
    }.get(endpoint)


def test_the_matrix_covers_every_role_endpoint_and_team() -> None:
    assert {endpoint for endpoint, _ in MATRIX} == set(ENDPOINTS)
    assert {target for _, target in MATRIX} == {PSY, KET}
    assert len(MATRIX_CASES) == len(ENDPOINTS) * 2 * len(ACTORS)


@pytest.mark.parametrize(("endpoint", "target", "actor", "expected"), MATRIX_CASES)
def test_permission_matrix(
    shared_api: SharedApi, endpoint: str, target: str, actor: str, expected: int | str
) -> None:
    client, db = shared_api.client, shared_api.db
    patient_id = register(client, "owner")
    referral_id = refer(client, patient_id, "owner", target=target)
    if endpoint == "answer":
        act(client, referral_id, "triage", {"decision": "request-info", "question": "?"}, "mdt")
    method, template = ENDPOINTS[endpoint]
    path = template.format(patient=patient_id, referral=referral_id)
    before, denied_before = snapshot(db, referral_id), denials(db, path, actor)
    query = {"target": target, "status": "received", "limit": 200} if endpoint == "inbox" else None

    response = client.request(
        method,
        path,
        params=query,
        json=request_body(endpoint, patient_id, target),
        headers=headers(actor),
    )

    status = 200 if expected in (SEEN, HIDDEN) else expected
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403)
        assert denials(db, path, actor) == denied_before + 1, "the denial is audited"
        if "{patient}" in template:
            assert (
                scalar(
                    db,
                    "SELECT count(*) FROM audit_log WHERE outcome = '4' AND path = %s"
                    " AND patient_id = %s",
                    path,
                    patient_id,
                )
                == denied_before + 1
            )
        assert snapshot(db, referral_id) == before, "a denied call changes nothing"
        return
    assert denials(db, path, actor) == denied_before
    body = response.json()
    if endpoint == "inbox":
        listed = inbox_ids(client, actor, target=target, status="received", limit=200)
        assert (referral_id in listed) is (expected == SEEN)
        role, user = ACTORS[actor]
        if role == "referrer":
            assert {item["created_by"] for item in body["items"]} <= {user}
    elif endpoint == "triage":
        assert body["status"] == snapshot(db, referral_id).status == "accepted"
    elif endpoint == "answer":
        assert body["status"] == snapshot(db, referral_id).status == "received"
    elif endpoint == "cancel":
        assert body["status"] == snapshot(db, referral_id).status == "cancelled"
    elif endpoint == "correct-patient":
        assert body["contact_preference"] == "letter"
    elif endpoint == "refer":
        assert body["status"] == "received" and body["created_by"] == ACTORS[actor][1]
    elif endpoint in ("read-patient", "register-patient"):
        assert body["family_name"] == "Patient"
    else:
        assert body["id"] == referral_id


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_a_call_without_a_token_is_a_401_and_is_audited(
    shared_api: SharedApi, endpoint: str
) -> None:
    client, db = shared_api.client, shared_api.db
    patient_id = register(client, "owner")
    referral_id = refer(client, patient_id, "owner", target=PSY)
    method, template = ENDPOINTS[endpoint]
    path = template.format(patient=patient_id, referral=referral_id)
    denied_before = denials(db, path, None)

    response = client.request(method, path, json=request_body(endpoint, patient_id, PSY))

    assert_problem(response, 401)
    assert denials(db, path, None) == denied_before + 1


def test_a_token_signed_with_another_secret_is_a_401_and_is_audited(shared_api: SharedApi) -> None:
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    forged = issue_token(PlatformSettings(jwt_secret="another-secret-" * 4), "mdt-1", Role.mdt)
    path = "/api/referrals"
    denied_before = denials(shared_api.db, path, None)
    response = shared_api.client.get(path, headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401)
    assert denials(shared_api.db, path, None) == denied_before + 1


FREE_TEXT_KEYS = {"reason", "prior_treatments", "attachments", "patient"}


def test_admins_see_status_and_waiting_but_no_free_text_or_names(shared_api: SharedApi) -> None:
    client = shared_api.client
    secrets = {
        "given": "Ottoline",
        "family": "Quenby",
        "born": "1961-02-03",
        "reason": "Night pain wakes her since the accident",
        "tried": "duloxetine",
        "letter": "Letter: she could not tolerate pregabalin",
        "question": "Has she had CBT before?",
        "answer": "Six sessions in 2023 with some benefit",
        "triage": "Suitable for group CBT",
    }
    patient_id = register(
        client,
        given_name=secrets["given"],
        family_name=secrets["family"],
        birth_date=secrets["born"],
    )
    referral_id = refer(
        client,
        patient_id,
        target=PSY,
        reason=secrets["reason"],
        prior_treatments=[{"name": secrets["tried"], "kind": "medicine", "outcome": "none"}],
        attachments=[{"title": "GP letter", "text": secrets["letter"]}],
    )
    question = {"decision": "request-info", "question": secrets["question"]}
    act(client, referral_id, "triage", question, "mdt")
    act(client, referral_id, "info", {"answer": secrets["answer"]}, "owner")
    act(client, referral_id, "triage", {"decision": "accept", "reason": secrets["triage"]}, "mdt")

    detail = client.get(f"/api/referrals/{referral_id}", headers=headers("admin"))
    assert detail.status_code == 200, detail.text
    listed = client.get(
        "/api/referrals",
        params={"target": PSY, "status": "accepted", "limit": 200},
        headers=headers("admin"),
    )
    row = next(item for item in listed.json()["items"] if item["id"] == referral_id)
    for response, shown in ((detail, detail.json()), (listed, row)):
        assert shown["status"] == "accepted"
        assert shown["waiting"]["state"] == "within" and "days_waiting" in shown["waiting"]
        assert FREE_TEXT_KEYS.isdisjoint(shown)
        for text in secrets.values():
            assert text not in response.text
    history = detail.json()["history"]
    actions = [step["action"] for step in history]
    assert actions == ["refer", "request-info", "provide-info", "accept"]
    assert all(step["note"] is None for step in history)

    # The MDT, as a control, reads all of it.
    clinical = client.get(f"/api/referrals/{referral_id}", headers=headers("mdt"))
    for text in secrets.values():
        assert text in clinical.text


# === 4. bad input: a problem+json naming the field or state, and nothing written =======


@dataclass(frozen=True)
class BadInputScene:
    patient_id: str
    other_patient_id: str
    other_nhs_number: str
    received: str
    closed: str
    cancelled: str


def close_with_handler(shared_api: SharedApi, referral_id: str, patient_id: str) -> None:
    runtime = shared_api.client.app.state.runtimes["referrals"]
    envelope = closing_event("infusion.course.closed", referral_id, patient_id)
    with runtime.sessions() as session:
        handle_event(session, envelope)
        session.commit()


@pytest.fixture
def scene(shared_api: SharedApi) -> BadInputScene:
    client = shared_api.client
    patient_id = register(client, nhs_number=valid_nhs_number())
    other_nhs_number = valid_nhs_number()
    other_patient_id = register(client, nhs_number=other_nhs_number)
    received = refer(client, patient_id, target=PSY)
    closed = refer(client, patient_id, target=KET)
    act(client, closed, "triage", {"decision": "accept"}, "infusion-clinician")
    close_with_handler(shared_api, closed, patient_id)
    assert snapshot(shared_api.db, closed).status == "closed"
    cancelled = refer(client, patient_id, target=PSY)
    act(client, cancelled, "cancel", {"reason": "withdrawn"}, "owner")
    return BadInputScene(
        patient_id, other_patient_id, other_nhs_number, received, closed, cancelled
    )


def new_referral(
    *, drop: str | None = None, patient: str | None = None, **overrides: Any
) -> Callable[[str], Any]:
    """A referral body for the scene's patient, with fields changed or one left out."""

    def body(patient_id: str) -> dict[str, Any]:
        made = referral_body(patient or patient_id, **overrides)
        return {key: value for key, value in made.items() if key != drop}

    return body


# (case, who, "METHOD path" with the scene's ids, body, status, what the problem names).
# "field" is an errors[].field; "current_status" the state a 409 names; and
# "existing_patient_id" the patient a duplicate NHS number belongs to.
R = "POST /api/referrals"
TRIAGE_RECEIVED = "POST /api/referrals/{received}/triage"
PATCH_PATIENT = "PATCH /api/patients/{patient_id}"
ITEM_OF_4 = [1, 1, 1, 4, 1, 1, 1, 1, 1]
UNKNOWN = str(uuid4())
BAD_INPUT: list[tuple[str, str, str, Any, int, tuple[str, str]]] = [
    ("wrong-target", "owner", R, new_referral(target="dermatology"), 422, ("field", "target")),
    (
        "wrong-condition",
        "owner",
        R,
        new_referral(conditions=["gout"]),
        422,
        ("field", "conditions[0]"),
    ),
    ("missing-reason", "owner", R, new_referral(drop="reason"), 422, ("field", "reason")),
    (
        "ketamine-without-prior-treatments",
        "owner",
        R,
        new_referral(target=KET, prior_treatments=[]),
        422,
        ("field", "prior_treatments"),
    ),
    (
        "phq9-with-8-items",
        "owner",
        R,
        new_referral(baseline={"phq9_items": [1] * 8}),
        422,
        ("field", "baseline.phq9_items"),
    ),
    (
        "phq9-item-of-4",
        "owner",
        R,
        new_referral(baseline={"phq9_items": ITEM_OF_4}),
        422,
        ("field", "baseline.phq9_items[3]"),
    ),
    (
        "pain-nrs-of-11",
        "owner",
        R,
        new_referral(baseline={"pain_nrs": 11}),
        422,
        ("field", "baseline.pain_nrs"),
    ),
    ("unknown-patient", "owner", R, new_referral(patient=UNKNOWN), 404, ("field", "patient_id")),
    (
        "triage-a-closed-referral",
        "mdt",
        "POST /api/referrals/{closed}/triage",
        {"decision": "accept"},
        409,
        ("current_status", "closed"),
    ),
    (
        "triage-a-cancelled-referral",
        "mdt",
        "POST /api/referrals/{cancelled}/triage",
        {"decision": "reject", "reason": "not for us"},
        409,
        ("current_status", "cancelled"),
    ),
    (
        "cancel-a-closed-referral",
        "owner",
        "POST /api/referrals/{closed}/cancel",
        {"reason": "too late"},
        409,
        ("current_status", "closed"),
    ),
    (
        "answer-when-no-question-was-asked",
        "owner",
        "POST /api/referrals/{received}/info",
        {"answer": "unasked"},
        409,
        ("current_status", "received"),
    ),
    ("no-reject-reason", "mdt", TRIAGE_RECEIVED, {"decision": "reject"}, 422, ("field", "reason")),
    (
        "reject-with-a-blank-reason",
        "mdt",
        TRIAGE_RECEIVED,
        {"decision": "reject", "reason": "  "},
        422,
        ("field", "reason"),
    ),
    (
        "request-info-without-question",
        "mdt",
        TRIAGE_RECEIVED,
        {"decision": "request-info"},
        422,
        ("field", "question"),
    ),
    ("unknown-decision", "mdt", TRIAGE_RECEIVED, {"decision": "maybe"}, 422, ("field", "decision")),
    (
        "patch-a-duplicate-nhs-number",
        "owner",
        PATCH_PATIENT,
        {"nhs_number": "{other_nhs_number}"},
        409,
        ("existing_patient_id", "{other_patient_id}"),
    ),
    (
        "patch-an-invalid-nhs-number",
        "owner",
        PATCH_PATIENT,
        {"nhs_number": "1234567890"},
        422,
        ("field", "nhs_number"),
    ),
    (
        "register-a-duplicate-nhs-number",
        "owner",
        "POST /api/patients",
        patient_body(nhs_number="{other_nhs_number}"),
        409,
        ("existing_patient_id", "{other_patient_id}"),
    ),
    (
        "register-a-birth-date-in-the-future",
        "owner",
        "POST /api/patients",
        patient_body(birth_date="2999-01-01"),
        422,
        ("field", "birth_date"),
    ),
]


def fill_in(value: Any, scene: BadInputScene) -> Any:
    """Put the scene's ids into a template string, or into a body's string values."""
    ids = vars(scene)
    if callable(value):
        return value(scene.patient_id)
    if isinstance(value, dict):
        return {key: fill_in(item, scene) for key, item in value.items()}
    return value.format(**ids) if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("actor", "route", "body", "status", "names"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_a_problem_naming_the_field_or_state_and_writes_nothing(
    shared_api: SharedApi,
    scene: BadInputScene,
    actor: str,
    route: str,
    body: Any,
    status: int,
    names: tuple[str, str],
) -> None:
    method, path = fill_in(route, scene).split(" ")
    before = row_counts(shared_api.db)
    patient_before = rows(shared_api.db, "SELECT * FROM patient WHERE id = %s", scene.patient_id)

    response = shared_api.client.request(
        method, path, json=fill_in(body, scene), headers=headers(actor)
    )

    problem = assert_problem(response, status)
    kind, value = names[0], fill_in(names[1], scene)
    if kind == "field":
        assert value in fields_named(problem), problem
    else:
        assert problem[kind] == value, problem
    if kind == "current_status":
        assert value in problem["detail"]
    assert row_counts(shared_api.db) == before
    patient_after = rows(shared_api.db, "SELECT * FROM patient WHERE id = %s", scene.patient_id)
    assert patient_after == patient_before


# === 5. closing the loop through the real worker ======================================


def start_referrals_worker(stack: Stack, processes: Processes) -> Callable[[Envelope], None]:
    """Run `carepath worker referrals` and return a way to put an event on its queue."""
    processes.start("referrals-worker", carepath("worker", "referrals"), stack.env())
    send = queue_sender(make_broker(stack.platform()))
    return lambda envelope: send("referrals", encode_envelope(envelope))


def consumed(db: str, envelope: Envelope) -> bool:
    return scalar(db, "SELECT count(*) FROM inbox WHERE event_id = %s", envelope.event_id) == 1


def test_a_discharge_closes_the_accepted_referral_once_through_the_real_worker(
    stack: Stack,
    api_client: Callable[[Litestar], TestClient[Litestar]],
    processes: Processes,
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    patient_id = register(client)
    referral_id = refer(client, patient_id, target=PSY)
    act(client, referral_id, "triage", {"decision": "accept"}, "psychologist")
    deliver = start_referrals_worker(stack, processes)

    discharged = closing_event("therapy.episode.discharged", referral_id, patient_id)
    deliver(discharged)
    wait_until(
        lambda: snapshot(db, referral_id).status == "closed",
        timeout=30,
        what="the worker to close the referral",
    )

    closed = snapshot(db, referral_id)
    assert closed.transitions[-1] == (
        "close",
        "accepted",
        "closed",
        "therapy",
        "service",
        "therapy.episode.discharged: completed",
    )
    assert closed.events == [
        ("referral.received", 1),
        ("referral.accepted", 2),
        ("referral.closed", 3),
    ]
    event = envelope_of(db, referral_id, "referral.closed")
    assert event["causation_id"] == str(discharged.event_id)
    assert event["correlation_id"] == "close-the-loop"
    assert event["data"]["closed_by"] == "therapy.episode.discharged"
    assert event["data"]["outcome"] == "completed"
    assert consumed(db, discharged)
    read = client.get(f"/api/referrals/{referral_id}", headers=headers("owner")).json()
    assert (read["status"], read["task_status"]) == ("closed", "completed")

    # A redelivery of the same event is acknowledged and ignored.
    deliver(discharged)
    wait_until(
        lambda: "event.duplicate_ignored" in processes.log("referrals-worker"),
        what="the redelivered event to be ignored",
    )
    # A second, different closing event for the closed referral changes nothing either.
    course_closed = closing_event("infusion.course.closed", referral_id, patient_id)
    deliver(course_closed)
    wait_until(lambda: consumed(db, course_closed), what="the second closing event")
    assert snapshot(db, referral_id) == closed
    assert scalar(db, "SELECT count(*) FROM dead_letter") == 0


def test_a_closing_event_for_a_cancelled_referral_leaves_it_cancelled(
    stack: Stack,
    api_client: Callable[[Litestar], TestClient[Litestar]],
    processes: Processes,
) -> None:
    client = api_client(stack.api("referrals"))
    db = stack.databases["referrals"]
    patient_id = register(client)
    referral_id = refer(client, patient_id, target=KET)
    act(client, referral_id, "triage", {"decision": "accept"}, "infusion-clinician")
    act(client, referral_id, "cancel", {"reason": "The patient declined"}, "owner")
    cancelled = snapshot(db, referral_id)
    deliver = start_referrals_worker(stack, processes)

    course_closed = closing_event("infusion.course.closed", referral_id, patient_id)
    deliver(course_closed)
    # And one for a referral this service never had: acknowledged, not dead-lettered.
    unknown = closing_event("therapy.episode.discharged", str(uuid4()), patient_id)
    deliver(unknown)
    wait_until(
        lambda: consumed(db, course_closed) and consumed(db, unknown),
        timeout=30,
        what="both closing events to be consumed",
    )

    assert snapshot(db, referral_id) == cancelled
    assert cancelled.status == "cancelled"
    assert scalar(db, "SELECT count(*) FROM outbox WHERE type = 'referral.closed'") == 0
    assert scalar(db, "SELECT count(*) FROM dead_letter") == 0
