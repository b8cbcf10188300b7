"""A lost message is recovered from the producer's feed; rebuild equals live."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.support import (
    Processes,
    carepath,
    free_port,
    patient_body,
    referral_body,
    scalar,
    token,
    wait_for_http,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_dropped_event_is_recovered_from_the_feed_and_rebuild_equals_live(
    stack: Any, api_client: Any, processes: Processes
) -> None:
    stack.runtime("coordinator")
    # The in-process referrals API hands its events to a namespace nobody consumes:
    # every message it sends is lost, as if Redis had forgotten it.
    namespace = stack.namespace
    stack.namespace = f"{namespace}-void"
    referrals = api_client(stack.api("referrals"))
    stack.namespace = namespace

    port = free_port()
    env = stack.env(
        CAREPATH_REFERRALS_URL=f"http://127.0.0.1:{port}",
        CAREPATH_CATCHUP_INTERVAL_S="1",
        CAREPATH_CATCHUP_GRACE_S="0",
    )
    processes.start("referrals-api", carepath("serve", "referrals", "--port", str(port)), env)
    wait_for_http(f"http://127.0.0.1:{port}/health")

    auth = {"Authorization": f"Bearer {token('referrer')}"}
    patient_id = referrals.post("/api/patients", json=patient_body(), headers=auth).json()["id"]
    created = referrals.post("/api/referrals", json=referral_body(patient_id), headers=auth)
    assert created.status_code == 201, created.text
    referrals_db = stack.databases["referrals"]
    wait_until(
        lambda: scalar(referrals_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0,
        what="the (lost) sends",
    )

    processes.start("coordinator-worker", carepath("worker", "coordinator"), env)
    coordinator_db = stack.databases["coordinator"]
    wait_until(
        lambda: (
            scalar(
                coordinator_db,
                "SELECT count(*) FROM stored_event WHERE patient_id = %s",
                patient_id,
            )
            == 2
        ),
        timeout=30,
        what="both lost events recovered from the referrals feed",
    )
    # The line is written just after the commit the count above saw: wait for it too.
    wait_until(
        lambda: processes.log("coordinator-worker").count("feed.event_recovered") == 2,
        timeout=10,
        what="both recoveries logged",
    )
    assert (
        scalar(coordinator_db, "SELECT stage FROM pathway WHERE patient_id = %s", patient_id)
        == "referred"
    )
    cursor = scalar(
        coordinator_db, "SELECT cursor FROM feed_position WHERE producer = %s", "referrals"
    )
    assert cursor.endswith(".2")  # "txid.position": past both rows of the referrals feed

    rebuilt = subprocess.run(
        carepath("coordinator", "rebuild", "--check"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert rebuilt.stdout.startswith("0 pathway(s) differ")
