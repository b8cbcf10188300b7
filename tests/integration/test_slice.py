"""The slice end to end on the real broker: referral → outbox → Redis → worker → pathway."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import (
    Processes,
    carepath,
    free_port,
    patient_body,
    referral_body,
    scalar,
    timeline_types,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration


def _pathway_with(client: Any, patient_id: str, *event_types: str) -> dict[str, Any] | None:
    response = client.get(
        f"/api/pathways/{patient_id}", headers={"Authorization": f"Bearer {token('mdt')}"}
    )
    if response.status_code != 200:
        return None
    pathway: dict[str, Any] = response.json()
    return pathway if set(event_types) <= set(timeline_types(pathway)) else None


def test_referral_reaches_the_pathway_through_redis_and_a_real_worker(
    stack: Any, api_client: Any, processes: Processes
) -> None:
    referrals = api_client(stack.api("referrals"))
    coordinator = api_client(stack.api("coordinator"))
    metrics_port = free_port()
    processes.start(
        "coordinator-worker",
        carepath("worker", "coordinator", "--metrics-port", str(metrics_port)),
        stack.env(),
    )
    auth = {"Authorization": f"Bearer {token('referrer')}", "X-Correlation-ID": "slice-test-1"}

    patient = referrals.post("/api/patients", json=patient_body(), headers=auth)
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]
    referral = referrals.post("/api/referrals", json=referral_body(patient_id), headers=auth)
    assert referral.status_code == 201, referral.text
    assert referral.json()["status"] == "received"

    pathway = wait_until(
        lambda: _pathway_with(coordinator, patient_id, "patient.registered", "referral.received"),
        timeout=30,
        what="the referral on the pathway",
    )
    assert pathway["stage"] == "referred"
    assert timeline_types(pathway) == ["patient.registered", "referral.received"]
    # The correlation id travelled from the HTTP request through the event to the consumer.
    stored = scalar(
        stack.databases["coordinator"],
        "SELECT envelope->>'correlation_id' FROM stored_event WHERE type = %s",
        "referral.received",
    )
    assert stored == "slice-test-1"
    wait_until(
        lambda: "slice-test-1" in processes.log("coordinator-worker"),
        timeout=5,
        what="the correlation id in the worker's log",
    )
    # No demographics in the worker's logs or the coordinator's store.
    assert "Patient" not in processes.log("coordinator-worker")
    assert (
        scalar(
            stack.databases["coordinator"],
            "SELECT count(*) FROM stored_event WHERE envelope::text LIKE %s",
            "%1975-04-12%",
        )
        == 0
    )
    assert (
        scalar(stack.databases["referrals"], "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        == 0
    )
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert (
        'carepath_events_consumed_total{outcome="processed",service="coordinator"} 2.0' in metrics
    )


def test_the_same_event_delivered_twice_has_one_effect(
    stack: Any, api_client: Any, processes: Processes
) -> None:
    from shared.messaging import queue_sender

    referrals = api_client(stack.api("referrals"))
    auth = {"Authorization": f"Bearer {token('referrer')}"}
    patient_id = referrals.post("/api/patients", json=patient_body(), headers=auth).json()["id"]
    referrals.post("/api/referrals", json=referral_body(patient_id), headers=auth)
    referrals_db = stack.databases["referrals"]
    wait_until(
        lambda: scalar(referrals_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0,
        what="the relay to send",
    )
    envelope = scalar(
        referrals_db, "SELECT envelope FROM outbox WHERE type = %s", "referral.received"
    )

    # Send it again twice more, as a redelivery after a crash would.
    stack.runtime("coordinator")  # migrates its database, as `carepath migrate` would
    send = queue_sender(stack.runtime("referrals").broker)
    send("coordinator", envelope)
    send("coordinator", envelope)
    processes.start("coordinator-worker", carepath("worker", "coordinator"), stack.env())

    coordinator_db = stack.databases["coordinator"]
    wait_until(
        lambda: processes.log("coordinator-worker").count("event.duplicate_ignored") == 2,
        what="both extra copies to be ignored",
    )
    assert (
        scalar(
            coordinator_db,
            "SELECT count(*) FROM stored_event WHERE event_id = %s",
            envelope["event_id"],
        )
        == 1
    )
    assert scalar(coordinator_db, "SELECT count(*) FROM inbox") == 2
    assert (
        scalar(coordinator_db, "SELECT event_count FROM pathway WHERE patient_id = %s", patient_id)
        == 2
    )
