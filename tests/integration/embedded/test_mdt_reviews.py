"""MDT reviews, the MDT worklist and names on the pathway, over the embedded app.

A decision to refer is recorded with its event; the referrals service makes the referral
from it (issue 16). Names come from the referrals service at read time, for readers it
lets see them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import msgspec
import pytest
from sqlmodel import col, select

from services.coordinator.models import MdtReview, PathwayRow
from services.coordinator.schemas import PathwayRead
from services.referrals.models import Referral
from shared.auth import Role
from shared.catchup import FeedFollower
from shared.events import Envelope, decode_envelope
from shared.events.subscriptions import feeds_of
from shared.tables import AuditRecord, OutboxEvent
from tests.embedded import Embedded, assert_problem, referral_body, register

REVIEW = {"attendees": ["Dr Pain", "Dr Mood", "Nurse Lead"], "decision": "continue"}
REFERRAL = {"reason": "CBT for low mood alongside infusions", "conditions": ["depression"]}


def pathway(
    embedded: Embedded, patient_id: str, role: Role = Role.mdt, user: str = "dr-reader"
) -> dict[str, Any]:
    headers = embedded.headers(role, user=user)
    response = embedded.client.get(f"/api/pathways/{patient_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def eventually(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def referred(embedded: Embedded, target: str = "ketamine-infusion", item9: int = 0) -> str:
    patient_id = register(embedded)
    body = referral_body(patient_id, target=target)
    body["baseline"]["phq9_items"][8] = item9
    response = embedded.client.post(
        "/api/referrals", json=body, headers=embedded.headers(Role.referrer)
    )
    assert response.status_code == 201, response.text
    # The registration makes the pathway first: wait for the referral on it.
    eventually(lambda: referral_folded(embedded, patient_id), "the referral on the pathway")
    return patient_id


def referral_folded(embedded: Embedded, patient_id: str) -> bool:
    response = embedded.client.get(
        f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt)
    )
    timeline = response.json()["timeline"] if response.status_code == 200 else []
    return "referral.received" in {entry["type"] for entry in timeline}


def review(embedded: Embedded, patient_id: str, role: Role = Role.mdt, **body: Any) -> Any:
    return embedded.client.post(
        f"/api/pathways/{patient_id}/reviews",
        json={**REVIEW, **body},
        headers=embedded.headers(role, user="dr-mdt-lead"),
    )


def reviews_of(embedded: Embedded, patient_id: str) -> int:
    return embedded.count("coordinator", MdtReview, MdtReview.patient_id == UUID(patient_id))


# --- names ------------------------------------------------------------------------------


def test_the_mdt_sees_the_name_the_referrals_service_holds(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    shown = pathway(embedded, patient_id)
    assert (shown["patient_name"], shown["name_status"]) == ("Ada Example", "shown")
    # The referrals service decided, and its audit log says so: a read of the name alone
    # (its names call), not of the record with the NHS number and birth date.
    reads = embedded.audit(
        AuditRecord.entity_type == "Patient", AuditRecord.entity_id == patient_id
    )
    assert any(
        (record.action, record.agent_role, record.detail) == ("R", "mdt", "names")
        for record in reads
    )


def test_the_answer_is_the_stored_pathway_with_the_name_added(embedded: Embedded) -> None:
    """Issue 15: the read sends the stored document's text with two members added; the
    answer must still be a whole PathwayRead (every field of the projection's Pathway,
    strictly typed) and the API's description must still say so."""
    patient_id = referred(embedded)
    response = embedded.client.get(
        f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt, user="dr-reader")
    )
    assert response.headers["content-type"] == "application/json"
    read = msgspec.json.decode(response.content, type=PathwayRead)
    assert (read.patient_id, read.patient_name, read.name_status) == (
        UUID(patient_id),
        "Ada Example",
        "shown",
    )
    with embedded.runtime("coordinator").sessions() as session:
        stored = session.get(PathwayRow, UUID(patient_id))
        assert stored is not None
        document = dict(stored.document)
    answered = response.json()
    assert set(answered) == set(document) | {"patient_name", "name_status"}
    assert {key: answered[key] for key in document} == document
    schema = embedded.client.get("/schema/openapi.json").json()
    ok = schema["paths"]["/api/pathways/{patient_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PathwayRead"
    }


def test_names_are_asked_over_the_connections_the_app_keeps(embedded: Embedded) -> None:
    """Each read asks the referrals service through the one pool the app opened at start
    (shared.client.connection_pool), which a call leaves open for the next."""
    patient_id = referred(embedded)
    pool = embedded.app.state.peer_pool
    for _ in range(2):
        assert pathway(embedded, patient_id)["name_status"] == "shown"
        assert embedded.app.state.peer_pool is pool
        assert not pool.is_closed


def test_admins_get_no_name_and_the_referrals_service_is_not_asked(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    patient_reads = (AuditRecord.entity_type == "Patient", AuditRecord.entity_id == patient_id)
    before = len(embedded.audit(*patient_reads))
    shown = pathway(embedded, patient_id, Role.admin)
    assert (shown["patient_name"], shown["name_status"]) == (None, "not-asked")
    assert len(embedded.audit(*patient_reads)) == before


def test_a_psychologist_sees_the_pathways_with_a_psychology_referral_only(
    embedded: Embedded,
) -> None:
    infusion_only = referred(embedded, target="ketamine-infusion")
    psychology = referred(embedded, target="psychology")
    headers = embedded.headers(Role.psychologist, user="dr-psych")
    refused = embedded.client.get(f"/api/pathways/{infusion_only}", headers=headers)
    assert_problem(refused, 403)
    denied = embedded.count(
        "coordinator",
        AuditRecord,
        AuditRecord.patient_id == UUID(infusion_only),
        AuditRecord.outcome == "4",
    )
    assert denied == 1
    shown = pathway(embedded, psychology, Role.psychologist, user="dr-psych")
    assert (shown["patient_name"], shown["name_status"]) == ("Ada Example", "shown")
    listed = embedded.client.get("/api/pathways?limit=200", headers=headers).json()["items"]
    assert psychology in [item["patient_id"] for item in listed]
    assert all("psychology" in item["teams"] for item in listed)
    alerts = embedded.client.get("/api/alerts?limit=200", headers=headers).json()["items"]
    assert infusion_only not in [alert["patient_id"] for alert in alerts]


# --- reviews ----------------------------------------------------------------------------


def test_a_review_is_recorded_on_the_pathway_with_its_notes_kept_in_the_coordinator(
    embedded: Embedded,
) -> None:
    patient_id = referred(embedded)
    response = review(embedded, patient_id, notes="Tolerating well; BP stable.")
    assert response.status_code == 201, response.text
    recorded = response.json()
    assert recorded["decision"] == "continue" and recorded["reviewed_by"] == "dr-mdt-lead"
    (stream,) = pathway(embedded, patient_id)["streams"]["mdt_reviews"]
    assert stream["id"] == recorded["id"]
    assert stream["attendees"] == REVIEW["attendees"]
    assert "notes" not in stream  # free text stays out of events and the projection
    listed = embedded.client.get(
        f"/api/pathways/{patient_id}/reviews", headers=embedded.headers(Role.infusion_clinician)
    )
    assert [item["notes"] for item in listed.json()] == ["Tolerating well; BP stable."]
    # The infusion clinic is on this pathway; psychology is not.
    elsewhere = embedded.client.get(
        f"/api/pathways/{patient_id}/reviews", headers=embedded.headers(Role.psychologist)
    )
    assert_problem(elsewhere, 403)


def referral_made(embedded: Embedded, referral_id: str) -> Referral | None:
    with embedded.runtime("referrals").sessions() as session:
        return session.get(Referral, UUID(referral_id))


def referrals_for(embedded: Embedded, patient_id: str) -> int:
    return embedded.count("referrals", Referral, Referral.patient_id == UUID(patient_id))


def all_sent(embedded: Embedded, service: str) -> bool:
    unsent = col(OutboxEvent.sent_at).is_(None)
    return embedded.count(service, OutboxEvent, unsent) == 0


def review_event(embedded: Embedded, review_id: str) -> Envelope:
    with embedded.runtime("coordinator").sessions() as session:
        row = session.exec(
            select(OutboxEvent).where(
                OutboxEvent.type == "mdt.review.recorded", OutboxEvent.subject_id == review_id
            )
        ).one()
        return decode_envelope(row.envelope)


def test_a_decision_to_refer_makes_the_referral_once_as_the_reviewer(embedded: Embedded) -> None:
    """Issue 16: the review and its decision are one write in the coordinator; the
    referrals service makes the referral by consuming the event, as the reviewing
    clinician, audited, and a second delivery makes nothing more."""
    patient_id = referred(embedded)
    response = review(embedded, patient_id, decision="refer-psychology", referral=REFERRAL)
    assert response.status_code == 201, response.text
    referral_id = response.json()["referral_id"]
    made = eventually(lambda: referral_made(embedded, referral_id), "the referral")
    assert (made.target, made.created_by, made.created_by_role) == (
        "psychology",
        "dr-mdt-lead",
        "mdt",
    )
    assert made.reason == REFERRAL["reason"]  # read from the coordinator, not the event
    assert made.referrer == {"name": "dr-mdt-lead", "role": "MDT", "organisation": "pain MDT"}
    (audit,) = embedded.audit(AuditRecord.entity_id == referral_id)
    assert (audit.agent_user, audit.agent_role, audit.action) == ("dr-mdt-lead", "mdt", "C")
    assert audit.path == "event:mdt.review.recorded"
    read = embedded.audit(col(AuditRecord.path).endswith("/referral"), service="coordinator")
    assert [(r.agent_user, r.agent_role) for r in read][-1:] == [("referrals", "service")]

    event = review_event(embedded, response.json()["id"])
    assert "reason" not in str(event.data)  # free text never travels in an event
    runtime = embedded.runtime("referrals")
    assert runtime.consume(event) is False  # redelivered: the inbox knows it
    replayed = msgspec.structs.replace(event, event_id=uuid4())
    assert runtime.consume(replayed) is True  # past the inbox, the referral's id holds
    assert referrals_for(embedded, patient_id) == 2  # the first referral and the MDT's

    def with_the_referral() -> dict[str, Any] | None:
        shown = pathway(embedded, patient_id)
        referrals = shown["streams"]["referrals"]
        return shown if any(r["id"] == referral_id for r in referrals) else None

    shown = eventually(with_the_referral, "the new referral on the pathway")
    (stream,) = shown["streams"]["mdt_reviews"]
    assert stream["referral_id"] == referral_id


def test_a_review_recorded_while_the_referrals_service_is_away_makes_its_referral_later(
    embedded: Embedded,
) -> None:
    """Issue 16: the review is recorded when the referrals service cannot take it; the
    referral is made once the service is back (from the coordinator's feed), once."""
    patient_id = referred(embedded)
    relay = embedded.runtime("coordinator").relay
    deliver = relay.send
    relay.send = lambda consumer, envelope: (  # type: ignore[method-assign]
        None if consumer == "referrals" else deliver(consumer, envelope)
    )
    try:
        response = review(embedded, patient_id, decision="refer-psychology", referral=REFERRAL)
        eventually(lambda: all_sent(embedded, "coordinator"), "the coordinator's relay to send")
    finally:
        relay.send = deliver  # type: ignore[method-assign]
    assert response.status_code == 201, response.text
    referral_id = response.json()["referral_id"]
    assert referral_made(embedded, referral_id) is None

    runtime = embedded.runtime("referrals")
    reading = runtime.peers.read

    def coordinator_down(*_: Any) -> Any:
        raise httpx.ConnectError("the coordinator does not answer")

    event = review_event(embedded, response.json()["id"])
    runtime.peers.read = coordinator_down
    try:
        with pytest.raises(httpx.ConnectError):
            runtime.consume(event)  # retried later: nothing kept, not even the inbox row
    finally:
        runtime.peers.read = reading
    assert referral_made(embedded, referral_id) is None

    # Back: its catch-up reads the coordinator's feed (no grace: the queue lost it).
    follower = FeedFollower(
        "referrals",
        runtime.sessions,
        feeds_of("referrals"),
        runtime.read_feed_page,
        runtime.decode,
        runtime.consume,
        grace_s=0,
    )
    assert follower.catch_up("coordinator") == 1
    assert referral_made(embedded, referral_id) is not None
    assert follower.catch_up("coordinator") == 0
    assert referrals_for(embedded, patient_id) == 2
    assert referrals_for(embedded, patient_id) == 2


def test_a_refer_decision_without_the_referral_is_a_422_and_records_nothing(
    embedded: Embedded,
) -> None:
    patient_id = referred(embedded)
    assert_problem(review(embedded, patient_id, decision="refer-psychology"), 422, "referral")
    assert_problem(review(embedded, patient_id, referral=REFERRAL), 422, "referral")
    assert reviews_of(embedded, patient_id) == 0


def test_a_referral_that_could_not_be_made_records_no_review(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    bad = {**REFERRAL, "conditions": ["not-a-condition"]}
    response = review(embedded, patient_id, decision="refer-psychology", referral=bad)
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"].startswith("referral.conditions")
    assert reviews_of(embedded, patient_id) == 0


def test_bad_review_input_names_the_field(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    assert_problem(review(embedded, patient_id, decision="carry-on"), 422, "decision")
    assert_problem(review(embedded, patient_id, attendees=[]), 422, "attendees")
    assert reviews_of(embedded, patient_id) == 0


def test_only_the_mdt_records_reviews(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    assert_problem(review(embedded, patient_id, Role.psychologist), 403)
    assert_problem(review(embedded, str(uuid4())), 404)
    assert reviews_of(embedded, patient_id) == 0


# --- worklist ---------------------------------------------------------------------------


def worklist(embedded: Embedded, **params: Any) -> dict[str, Any]:
    response = embedded.client.get(
        "/api/mdt/worklist", params=params, headers=embedded.headers(Role.mdt)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def all_worklist(embedded: Embedded) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = worklist(embedded, limit=2, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        if not (cursor := page["next_cursor"]):
            return items


def test_the_worklist_puts_urgent_reasons_first_and_a_review_takes_a_patient_off(
    embedded: Embedded,
) -> None:
    urgent = referred(embedded, item9=2)  # PHQ-9 item 9 above 0: an urgent MDT alert
    calm = referred(embedded)
    listed = all_worklist(embedded)
    ids = [item["patient_id"] for item in listed]
    assert urgent in ids and calm not in ids
    ranks = [(item["severity"] is None, item["review_due"]) for item in listed]
    assert ranks == sorted(ranks)  # urgent first, then soonest due, across pages
    entry = next(item for item in listed if item["patient_id"] == urgent)
    assert entry["severity"] == "urgent" and "item 9" in entry["reason"]

    assert review(embedded, urgent).status_code == 201
    assert urgent not in [item["patient_id"] for item in all_worklist(embedded)]


def test_the_worklist_is_for_the_mdt(embedded: Embedded) -> None:
    response = embedded.client.get("/api/mdt/worklist", headers=embedded.headers(Role.admin))
    assert_problem(response, 403)
