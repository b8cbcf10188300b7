"""Every consumer catches up from the feeds it subscribes to (issue 10; shared.catchup).

The embedded app with the timer off, so each test decides when a consumer reads its
feeds. A "lost" message is one the referrals relay marks sent but never hands to the
consumer's queue, as when Redis restarts empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from sqlmodel import col, select

from services.infusions.models import InfusionCourse
from services.therapy.models import TherapyEpisode
from shared.auth import Role
from shared.catchup import FeedFollower
from shared.events import Envelope
from shared.events.subscriptions import feeds_of
from shared.tables import DeadLetter, FeedPosition, OutboxEvent
from tests.embedded import Embedded, embedded_app, patient_body, referral_body
from tests.support import wait_until


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    with embedded_app(tmp_path, catchup_interval_s=0, catchup_grace_s=0) as app:
        yield app


def wait_for(check: Callable[[], Any], what: str) -> Any:
    return wait_until(check, timeout=10, what=what)


def lose_messages_for(embedded: Embedded, *consumers: str) -> None:
    """The referrals relay marks rows sent, but these consumers' messages vanish."""
    relay = embedded.runtime("referrals").relay
    deliver = relay.send

    def send(consumer: str, envelope: dict[str, Any]) -> None:
        if consumer not in consumers:
            deliver(consumer, envelope)

    relay.send = send


def accepted_referral(embedded: Embedded, target: str) -> str:
    referrer = embedded.headers(Role.referrer)
    patient = embedded.client.post("/api/patients", json=patient_body(), headers=referrer)
    referral = embedded.client.post(
        "/api/referrals", json=referral_body(patient.json()["id"], target=target), headers=referrer
    )
    assert referral.status_code == 201, referral.text
    referral_id: str = referral.json()["id"]
    triager = Role.infusion_clinician if target == "ketamine-infusion" else Role.psychologist
    accepted = embedded.client.post(
        f"/api/referrals/{referral_id}/triage",
        json={"decision": "accept"},
        headers=embedded.headers(triager),
    )
    assert accepted.status_code == 200, accepted.text
    return referral_id


def all_sent(embedded: Embedded) -> bool:
    return embedded.count("referrals", OutboxEvent, col(OutboxEvent.sent_at).is_(None)) == 0


def courses_for(embedded: Embedded, referral_id: str) -> int:
    return embedded.count(
        "infusions", InfusionCourse, InfusionCourse.referral_id == UUID(referral_id)
    )


def reconcile(embedded: Embedded, service: str, repair: bool = False) -> dict[str, Any]:
    response = embedded.client.post(
        f"/{service}/api/feeds/reconcile",
        json={"repair": repair},
        headers=embedded.headers(Role.admin),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_accepted_referral_the_broker_lost_still_opens_its_course_from_the_feed(
    embedded: Embedded,
) -> None:
    lose_messages_for(embedded, "infusions")
    referral_id = accepted_referral(embedded, "ketamine-infusion")
    wait_for(lambda: all_sent(embedded), "the referrals relay to mark its rows sent")
    assert courses_for(embedded, referral_id) == 0

    before = reconcile(embedded, "infusions")
    assert before["unresolved"] == 1
    # Infusions reads two feeds: referrals (referral.accepted) and, since issue 12, the
    # coordinator's (mdt.review.recorded).
    (feed,) = [f for f in before["feeds"] if f["producer"] == "referrals"]
    assert feed["missing"] == {"referral.accepted": 1}

    follower = embedded.runtime("infusions").follower()
    assert follower.catch_up_all()["referrals"] == 1
    assert courses_for(embedded, referral_id) == 1
    # Read again: nothing new, nothing twice.
    assert follower.catch_up_all()["referrals"] == 0
    assert courses_for(embedded, referral_id) == 1
    assert reconcile(embedded, "infusions")["unresolved"] == 0

    positions = embedded.client.get(
        "/infusions/api/feeds", headers=embedded.headers(Role.admin)
    ).json()
    assert [(p["producer"], p["lag_events"], p["recovered"]) for p in positions] == [
        ("coordinator", 0, 0),
        ("referrals", 0, 1),
    ]
    assert positions[0]["caught_up_at"] is not None
    metrics = embedded.client.get("/metrics").text
    assert (
        'carepath_feed_recovered_events_total{consumer="infusions",producer="referrals"} 1.0'
        in metrics
    )
    assert 'carepath_feed_lag_seconds{consumer="infusions",producer="referrals"}' in metrics


def test_reconcile_with_repair_consumes_what_is_missing(embedded: Embedded) -> None:
    lose_messages_for(embedded, "therapy")
    referral_id = accepted_referral(embedded, "psychology")
    wait_for(lambda: all_sent(embedded), "the referrals relay to mark its rows sent")
    episodes = (TherapyEpisode, TherapyEpisode.referral_id == UUID(referral_id))
    assert embedded.count("therapy", *episodes) == 0

    repaired = reconcile(embedded, "therapy", repair=True)
    # Therapy reads the referrals feed and the coordinator's (for urgent alerts).
    feeds = {feed["producer"]: feed for feed in repaired["feeds"]}
    feed = feeds["referrals"]
    assert (feed["missing"], feed["repaired"], feed["failed"]) == ({"referral.accepted": 1}, 1, 0)
    assert feeds["coordinator"]["missing"] == {}
    assert repaired["unresolved"] == 0
    assert embedded.count("therapy", *episodes) == 1
    assert all(feed["missing"] == {} for feed in reconcile(embedded, "therapy")["feeds"])


def test_a_failing_event_is_retried_then_dead_lettered_and_the_feed_moves_on(
    embedded: Embedded,
) -> None:
    lose_messages_for(embedded, "infusions")
    poison = accepted_referral(embedded, "ketamine-infusion")
    healthy = accepted_referral(embedded, "ketamine-infusion")
    wait_for(lambda: all_sent(embedded), "the referrals relay to mark its rows sent")
    runtime = embedded.runtime("infusions")

    def consume(envelope: Envelope) -> bool:
        if str(msgspec.to_builtins(envelope.data).get("referral_id")) == poison:
            raise RuntimeError("the handler cannot take this event")
        return runtime.consume(envelope)

    follower = FeedFollower(
        "infusions",
        runtime.sessions,
        feeds_of("infusions"),
        runtime.read_feed_page,
        runtime.decode,
        consume,
        attempts_before_dead_letter=2,
        grace_s=0,
    )
    assert follower.catch_up("referrals") == 0
    with runtime.sessions() as session:
        position = session.get(FeedPosition, "referrals")
        assert position is not None
        assert (position.failures, position.behind) == (1, 2)
        assert position.caught_up_at is None
    assert courses_for(embedded, healthy) == 0  # held behind the failing event, for now

    assert follower.catch_up("referrals") == 1  # second failure: dead-lettered, moved on
    assert courses_for(embedded, healthy) == 1
    with runtime.sessions() as session:
        (dead,) = session.exec(select(DeadLetter)).all()
        position = session.get(FeedPosition, "referrals")
        assert position is not None
        assert (position.failures, position.failing_event_id) == (0, None)
    assert dead.event_type == "referral.accepted"
    assert dead.queue_name == "infusions.events"
    # The reconciliation knows it waits for a person; replay takes it (the live actor).
    (feed,) = [f for f in reconcile(embedded, "infusions")["feeds"] if f["producer"] == "referrals"]
    assert feed["dead_lettered"] == {"referral.accepted": 1}
    replayed = embedded.client.post(
        f"/infusions/api/dead-letters/{dead.id}/replay", headers=embedded.headers(Role.admin)
    )
    assert replayed.status_code == 200, replayed.text
    wait_for(lambda: courses_for(embedded, poison) == 1, "the replayed event to open its course")
    # Next read: the replayed event is consumed, so nothing is retried or recovered.
    assert follower.catch_up("referrals") == 0
    assert reconcile(embedded, "infusions")["unresolved"] == 0


def test_ready_reports_a_consumer_whose_feed_is_behind_without_refusing_traffic(
    embedded: Embedded,
) -> None:
    embedded.runtime("therapy").follower().catch_up_all()
    assert embedded.client.get("/ready").json()["checks"]["therapy.feeds"] == "ok"
    with embedded.runtime("therapy").sessions() as session:
        position = session.get(FeedPosition, "referrals")
        assert position is not None
        position.caught_up_at = datetime.now(UTC) - timedelta(hours=1)
        session.add(position)
        session.commit()
    response = embedded.client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["therapy.feeds"].startswith("lagging: referrals 36")
    assert body["checks"]["infusions.feeds"] == "ok"


def test_each_consumer_follows_the_feeds_of_what_it_subscribes_to() -> None:
    # Issue 12: the MDT's decision, and the urgent alerts that stop a close or discharge.
    urgent = {"pathway.urgent_alert.opened", "pathway.alert.resolved"}
    assert feeds_of("infusions") == {
        "coordinator": frozenset({"mdt.review.recorded", *urgent}),
        "referrals": frozenset({"referral.accepted"}),
    }
    assert feeds_of("therapy") == {
        "coordinator": frozenset(urgent),
        "referrals": frozenset({"referral.accepted"}),
    }
    assert feeds_of("referrals") == {
        "coordinator": frozenset({"mdt.review.recorded"}),  # issue 16: the MDT's referral
        "infusions": frozenset({"infusion.course.closed"}),
        "therapy": frozenset({"therapy.episode.discharged"}),
    }
    assert feeds_of("coordinator") == {"referrals": None, "infusions": None, "therapy": None}


def test_a_fresh_event_is_left_to_its_queue_for_the_grace_period(embedded: Embedded) -> None:
    lose_messages_for(embedded, "infusions")
    referral_id = accepted_referral(embedded, "ketamine-infusion")
    wait_for(lambda: all_sent(embedded), "the referrals relay to mark its rows sent")
    runtime = embedded.runtime("infusions")
    patient = FeedFollower(
        "infusions",
        runtime.sessions,
        feeds_of("infusions"),
        runtime.read_feed_page,
        runtime.decode,
        runtime.consume,
        grace_s=3600,
    )
    assert patient.catch_up("referrals") == 0
    assert courses_for(embedded, referral_id) == 0
    report = patient.reconcile("referrals", repair=False)
    assert (report.missing, report.in_flight) == ({}, 1)
    with runtime.sessions() as session:
        position = session.get(FeedPosition, "referrals")
        assert position is not None and position.behind == 1
        assert position.caught_up_at is not None  # up to an hour ago: all older is consumed
    # Past the grace period (here: none) it is taken from the feed.
    assert runtime.follower().catch_up("referrals") == 1
    assert courses_for(embedded, referral_id) == 1
