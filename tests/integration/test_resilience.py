"""Nothing is lost: Redis down during a write, a failing consumer, a killed worker."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.support import (
    Processes,
    carepath,
    execute,
    free_port,
    patient_body,
    referral_body,
    scalar,
    token,
    wait_for_http,
    wait_until,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {token('referrer')}"}


def _refer(referrals: Any) -> str:
    patient = referrals.post("/api/patients", json=patient_body(), headers=AUTH)
    assert patient.status_code == 201, patient.text
    patient_id: str = patient.json()["id"]
    referral = referrals.post("/api/referrals", json=referral_body(patient_id), headers=AUTH)
    assert referral.status_code == 201, referral.text
    return patient_id


def _stored(stack: Any, patient_id: str) -> int:
    return int(
        scalar(
            stack.databases["coordinator"],
            "SELECT count(*) FROM stored_event WHERE patient_id = %s",
            patient_id,
        )
    )


def test_a_write_while_redis_is_down_succeeds_and_its_events_arrive_when_it_returns(
    stack: Any, api_client: Any, processes: Processes, private_redis: Any
) -> None:
    stack.redis_url = private_redis.url
    referrals = api_client(stack.api("referrals"))
    stack.runtime("coordinator")
    processes.start("coordinator-worker", carepath("worker", "coordinator"), stack.env())

    private_redis.stop()
    patient_id = _refer(referrals)  # both writes answer 201 with Redis gone

    referrals_db = stack.databases["referrals"]
    assert scalar(referrals_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 2
    assert _stored(stack, patient_id) == 0

    private_redis.start()
    wait_until(
        lambda: _stored(stack, patient_id) == 2,
        timeout=40,
        what="the events held in the outbox to arrive after Redis returned",
    )
    assert scalar(referrals_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0


BLOCK_PATIENT = """
CREATE TABLE test_blocked_patient (patient_id uuid PRIMARY KEY);
CREATE FUNCTION test_refuse_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM test_blocked_patient WHERE patient_id = NEW.patient_id) THEN
    RAISE EXCEPTION 'refused by the test';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_refuse BEFORE INSERT ON stored_event
  FOR EACH ROW EXECUTE FUNCTION test_refuse_blocked();
"""


def test_a_failing_consumer_dead_letters_after_its_retries_and_the_command_replays_it(
    stack: Any, api_client: Any, processes: Processes
) -> None:
    referrals = api_client(stack.api("referrals"))
    stack.runtime("coordinator")
    coordinator_db = stack.databases["coordinator"]
    execute(coordinator_db, BLOCK_PATIENT)

    # The first patient's events fail in the consumer; a second patient's flow on.
    patient_id = referrals.post("/api/patients", json=patient_body(), headers=AUTH).json()["id"]
    execute(coordinator_db, "INSERT INTO test_blocked_patient VALUES (%s)", patient_id)
    referrals.post("/api/referrals", json=referral_body(patient_id), headers=AUTH)
    processes.start("coordinator-worker", carepath("worker", "coordinator"), stack.env())
    other_patient = _refer(referrals)

    wait_until(
        lambda: scalar(coordinator_db, "SELECT count(*) FROM dead_letter") == 2,
        timeout=30,
        what="both failing events in the dead-letter table",
    )
    wait_until(lambda: _stored(stack, other_patient) == 2, what="the other patient's events")
    assert _stored(stack, patient_id) == 0
    retried = processes.log("coordinator-worker").count("Retrying message")
    assert retried >= 2 * 2, "each failing message was retried max_retries times first"

    port = free_port()
    env = stack.env(CAREPATH_COORDINATOR_URL=f"http://127.0.0.1:{port}")
    processes.start("coordinator-api", carepath("serve", "coordinator", "--port", str(port)), env)
    wait_for_http(f"http://127.0.0.1:{port}/health")
    listed = _run(carepath("dead-letters", "list", "--service", "coordinator"), env)
    assert listed.count("coordinator.events") == 2 and "refused by the test" in listed

    execute(coordinator_db, "DELETE FROM test_blocked_patient")
    replayed = _run(carepath("dead-letters", "replay", "--service", "coordinator", "--all"), env)
    assert replayed.count("replayed ") == 2
    wait_until(lambda: _stored(stack, patient_id) == 2, what="the replayed events to land")
    assert scalar(coordinator_db, "SELECT count(*) FROM dead_letter WHERE replayed_at IS NULL") == 0


def test_a_poison_message_is_dead_lettered_at_once_and_does_not_block_the_queue(
    stack: Any, api_client: Any, processes: Processes
) -> None:
    from shared.messaging import queue_sender

    referrals = api_client(stack.api("referrals"))
    stack.runtime("coordinator")
    send = queue_sender(stack.runtime("referrals").broker)
    send("coordinator", {"type": "referral.received", "data": {"not": "an envelope"}})
    processes.start("coordinator-worker", carepath("worker", "coordinator"), stack.env())
    patient_id = _refer(referrals)

    coordinator_db = stack.databases["coordinator"]
    wait_until(lambda: _stored(stack, patient_id) == 2, what="events behind the poison message")
    wait_until(
        lambda: scalar(coordinator_db, "SELECT count(*) FROM dead_letter") == 1,
        what="the poison message in the dead-letter table",
    )
    assert "Retrying message" not in processes.log("coordinator-worker")
    assert scalar(coordinator_db, "SELECT error FROM dead_letter").startswith(
        "shared.events.envelope.InvalidEvent"
    )


SLOW_ONCE = """
CREATE TABLE test_slow_patient (patient_id uuid PRIMARY KEY);
CREATE SEQUENCE test_slow_calls;
CREATE FUNCTION test_slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- nextval is not rolled back with the transaction, so only the first attempt sleeps.
  IF EXISTS (SELECT 1 FROM test_slow_patient WHERE patient_id = NEW.patient_id)
     AND nextval('test_slow_calls') = 1 THEN
    PERFORM pg_sleep(8);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_slow BEFORE INSERT ON stored_event
  FOR EACH ROW EXECUTE FUNCTION test_slow_once();
"""


def test_a_worker_killed_mid_message_loses_nothing(
    stack: Any, api_client: Any, processes: Processes
) -> None:
    referrals = api_client(stack.api("referrals"))
    stack.runtime("coordinator")
    coordinator_db = stack.databases["coordinator"]
    execute(coordinator_db, SLOW_ONCE)
    patient_id = referrals.post("/api/patients", json=patient_body(), headers=AUTH).json()["id"]
    execute(coordinator_db, "INSERT INTO test_slow_patient VALUES (%s)", patient_id)

    processes.start("worker-1", carepath("worker", "coordinator"), stack.env())
    wait_until(
        lambda: scalar(
            coordinator_db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        ),
        what="the first worker to be in the middle of the message",
    )
    processes.stop("worker-1", signal.SIGKILL)

    # The dead worker's unacknowledged message returns after the heartbeat timeout.
    processes.start("worker-2", carepath("worker", "coordinator"), stack.env())
    wait_until(
        lambda: _stored(stack, patient_id) == 1,
        timeout=40,
        what="the killed worker's message to be redelivered and processed",
    )
    assert scalar(coordinator_db, "SELECT count(*) FROM inbox") == 1
    assert (
        scalar(coordinator_db, "SELECT event_count FROM pathway WHERE patient_id = %s", patient_id)
        == 1
    )


def _run(command: list[str], env: dict[str, str]) -> str:
    import subprocess

    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
