"""Idempotency-Key over HTTP, on the embedded app (issue 16): a repeated request gets the
first answer and makes no second change; another request with the key is refused; keys
are per caller; a failed request does not keep its key; keys expire with the policy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from services.coordinator.models import MdtReview
from services.referrals.models import Patient, Referral
from shared.auth import Role
from shared.clock import clinic_clock
from shared.tables import AuditRecord, IdempotencyKey
from tests.embedded import Embedded, assert_problem, patient_body, referral_body, register
from tests.support import wait_until

from .test_mdt_reviews import REFERRAL, REVIEW, referred


def keyed(embedded: Embedded, key: str, role: Role = Role.referrer, user: str = "gp-1") -> Any:
    return {**embedded.headers(role, user=user), "Idempotency-Key": key}


def refer(
    embedded: Embedded, patient_id: str, key: str, user: str = "gp-1", **overrides: Any
) -> Any:
    return embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, **overrides),
        headers=keyed(embedded, key, user=user),
    )


def referrals_of(embedded: Embedded, patient_id: str) -> int:
    return embedded.count("referrals", Referral, Referral.patient_id == UUID(patient_id))


@pytest.fixture
def clock() -> Iterator[None]:
    yield
    clinic_clock().reset()


def test_a_repeat_with_the_same_key_and_body_makes_one_referral(embedded: Embedded) -> None:
    patient_id = register(embedded)
    key = str(uuid4())
    first = refer(embedded, patient_id, key)
    second = refer(embedded, patient_id, key)
    assert first.status_code == second.status_code == 201, first.text
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert referrals_of(embedded, patient_id) == 1


def test_a_replay_is_audited_as_a_read_of_what_it_shows(embedded: Embedded) -> None:
    patient_id = register(embedded)
    key = str(uuid4())
    refer(embedded, patient_id, key)
    refer(embedded, patient_id, key)
    replays = embedded.audit(
        AuditRecord.detail == "replayed the stored answer to an Idempotency-Key"
    )
    assert [(r.action, r.agent_user, r.entity_type, r.path) for r in replays][-1] == (
        "R",
        "gp-1",
        "ServiceRequest",
        "/api/referrals",
    )


def test_the_same_key_with_another_body_is_refused_naming_the_header(
    embedded: Embedded,
) -> None:
    patient_id = register(embedded)
    key = str(uuid4())
    assert refer(embedded, patient_id, key).status_code == 201
    refused = refer(embedded, patient_id, key, priority="urgent")
    body = assert_problem(refused, 422, field="Idempotency-Key")
    assert "another request" in body["detail"]
    assert referrals_of(embedded, patient_id) == 1


def test_the_same_key_on_another_route_is_refused(embedded: Embedded) -> None:
    key = str(uuid4())
    registered = embedded.client.post(
        "/api/patients", json=patient_body(), headers=keyed(embedded, key)
    )
    assert registered.status_code == 201
    refused = refer(embedded, registered.json()["id"], key)
    assert_problem(refused, 422, field="Idempotency-Key")


@pytest.mark.parametrize("key", ["", "x" * 256, "\x7f"])
def test_a_malformed_key_is_refused_naming_the_header(embedded: Embedded, key: str) -> None:
    patient_id = register(embedded)
    assert_problem(refer(embedded, patient_id, key), 422, field="Idempotency-Key")
    assert referrals_of(embedded, patient_id) == 0


def test_another_callers_same_key_is_another_request(embedded: Embedded) -> None:
    patient_id = register(embedded)
    key = str(uuid4())
    first = refer(embedded, patient_id, key, user="gp-1")
    other = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id),
        headers=keyed(embedded, key, role=Role.mdt, user="gp-2"),
    )
    assert first.status_code == other.status_code == 201, other.text
    assert first.json()["id"] != other.json()["id"]
    assert referrals_of(embedded, patient_id) == 2


def test_a_failed_request_does_not_keep_its_key(embedded: Embedded) -> None:
    key = str(uuid4())
    unknown_patient = str(uuid4())
    failed = refer(embedded, unknown_patient, key)
    assert failed.status_code >= 400
    patient_id = register(embedded)
    corrected = refer(embedded, patient_id, key)
    assert corrected.status_code == 201, corrected.text
    assert "Idempotent-Replayed" not in corrected.headers
    assert referrals_of(embedded, patient_id) == 1


def test_a_failed_transition_rolls_back_and_a_retry_succeeds(embedded: Embedded) -> None:
    """A change refused by the domain (409) keeps nothing; NHS-number duplicates are
    refused again, not replayed, since the refusal was never stored."""
    key = str(uuid4())
    first = embedded.client.post(
        "/api/patients", json=patient_body(nhs_number="9434765919"), headers=keyed(embedded, key)
    )
    assert first.status_code == 201, first.text
    other_key = str(uuid4())
    duplicate = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number="9434765919", given_name="Bea"),
        headers=keyed(embedded, other_key),
    )
    assert_problem(duplicate, 409)
    retried = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number="9434765919", given_name="Bea"),
        headers=keyed(embedded, other_key),
    )
    assert_problem(retried, 409)
    assert embedded.count("referrals", Patient, Patient.nhs_number == "9434765919") == 1


def test_a_key_older_than_the_policy_period_acts_as_new(embedded: Embedded, clock: None) -> None:
    patient_id = register(embedded)
    key = str(uuid4())
    assert refer(embedded, patient_id, key).status_code == 201
    clinic_clock().advance(timedelta(hours=23))
    assert refer(embedded, patient_id, key).headers["Idempotent-Replayed"] == "true"
    clinic_clock().advance(timedelta(hours=2))
    again = refer(embedded, patient_id, key, priority="urgent")
    assert again.status_code == 201, again.text
    assert "Idempotent-Replayed" not in again.headers
    assert referrals_of(embedded, patient_id) == 2
    keys = embedded.count("referrals", IdempotencyKey, IdempotencyKey.key == key)
    assert keys == 1


def test_a_transition_repeated_with_its_key_is_replayed_not_refused(embedded: Embedded) -> None:
    patient_id = register(embedded)
    referral = refer(embedded, patient_id, str(uuid4())).json()
    key = str(uuid4())
    headers = keyed(embedded, key, role=Role.infusion_clinician, user="inf-1")
    accepted = embedded.client.post(
        f"/api/referrals/{referral['id']}/triage",
        json={"decision": "accept"},
        headers=headers,
    )
    assert accepted.status_code == 200, accepted.text
    again = embedded.client.post(
        f"/api/referrals/{referral['id']}/triage",
        json={"decision": "accept"},
        headers=headers,
    )
    # Without the key this would be a 409 (already accepted): the answer is replayed.
    assert (again.status_code, again.content) == (200, accepted.content)
    assert again.headers["Idempotent-Replayed"] == "true"


def test_an_mdt_review_repeated_with_its_key_is_recorded_once(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    headers = keyed(embedded, str(uuid4()), role=Role.mdt, user="dr-mdt-lead")
    body = {**REVIEW, "decision": "refer-psychology", "referral": REFERRAL}
    url = f"/api/pathways/{patient_id}/reviews"
    first = embedded.client.post(url, json=body, headers=headers)
    second = embedded.client.post(url, json=body, headers=headers)
    assert first.status_code == second.status_code == 201, first.text
    assert second.content == first.content
    reviews = embedded.count("coordinator", MdtReview, MdtReview.patient_id == UUID(patient_id))
    assert reviews == 1

    # The referrals service makes the referral when its worker consumes the review's
    # event, a moment after the answer: wait for it, then see that no second one follows.
    def psychology_referrals() -> int:
        return embedded.count(
            "referrals",
            Referral,
            Referral.patient_id == UUID(patient_id),
            Referral.target == "psychology",
        )

    wait_until(lambda: psychology_referrals() >= 1, timeout=20, what="the MDT's referral")
    time.sleep(0.5)
    assert psychology_referrals() == 1


# Routes that change something but take no key, and why: the feed repair commits in
# transactions of its own and is harmless to repeat; the clinic clock is not a database
# change (and never moves in production).
# Routes that save nothing (a preview) or commit in transactions of their own (the clock).
UNKEYED = {"reconcileFeeds", "setClock", "advanceClock", "resetClock", "previewDosingPlan"}


def test_every_changing_route_documents_the_header(embedded: Embedded) -> None:
    schema = embedded.client.get("/schema/openapi.json").json()
    keyed_operations, unkeyed = set(), set()
    for operations in schema["paths"].values():
        for method, operation in operations.items():
            if method not in {"post", "put", "patch"}:
                continue
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            target = keyed_operations if "Idempotency-Key" in names else unkeyed
            target.add(operation["operationId"])
    assert unkeyed <= UNKEYED  # the platform routes are not in the embedded app's schema
    assert {"createReferral", "registerPatient", "recordMdtReview", "bookAppointment"} <= (
        keyed_operations
    )
    assert len(keyed_operations) >= 35


def test_two_requests_with_one_key_at_once_make_one_referral_on_sqlite(
    embedded: Embedded,
) -> None:
    patient_id = register(embedded)
    key = str(uuid4())
    start = threading.Barrier(2)
    responses: list[Any] = []

    def send() -> None:
        start.wait()
        responses.append(refer(embedded, patient_id, key))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    first, second = responses
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.content == second.content
    assert referrals_of(embedded, patient_id) == 1
