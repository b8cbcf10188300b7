"""Fault suite (issue 10): the whole system as processes, a mixed load through the APIs,
one fault per test; afterwards every acknowledged write has all its effects in every
consumer, none twice, no outbox row unsent, every pathway equal to its rebuild, and
`carepath reconcile` finds nothing missing. Each test prints lost, duplicated and the
time to recover (also summarised at the end of the run)."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable

import pytest

from shared.events.subscriptions import consumers_of
from shared.messaging import event_message, make_broker
from shared.settings import BrokerKind, PlatformSettings
from tests.faults.harness import (
    ADMIN,
    BackgroundLoad,
    Ledger,
    LoadDriver,
    System,
    assert_recovered,
    free_port,
    report,
    wait_for_recovery,
)
from tests.support import SERVICES, token, wait_until

pytestmark = [pytest.mark.faults]

Emit = Callable[[str], None]


def test_redis_stopped_and_restarted_empty_while_messages_are_queued_for_every_consumer(
    system: System, emit: Emit
) -> None:
    system.start()
    ledger = Ledger()
    load = LoadDriver(system, ledger, label="redis")
    # Courses and episodes to end later, while the workers are stopped.
    load.patients(16)
    load.wait_opened()

    system.stop_workers()
    # With no worker running, every consumer's messages pile up in Redis: care ended
    # (for the referrals worker) and new patients, referrals and triage (for the others).
    load.close_all()
    load.patients(16)
    queued = wait_until(
        lambda: (
            (lengths := system.redis.queue_lengths(system.namespace))
            and all(lengths.values())
            and not any(system.unsent().values())
            and lengths
        ),
        timeout=60,
        what="messages queued for every consumer",
    )
    emit(f"queued before Redis was killed: {queued}")

    system.redis.restart_empty()
    assert system.redis.queue_lengths(system.namespace) == dict.fromkeys(SERVICES, 0)
    during = system.feed_lag()
    emit(f"feed lag while the workers were down (from /metrics): {during}")
    # Once past the grace period the queues had, what Redis forgot is reported missing.
    compared = wait_until(
        lambda: (done := system.run("reconcile")).returncode == 1 and done,
        timeout=60,
        interval=1.0,
        what="carepath reconcile to report the events Redis forgot",
    )
    emit(f"carepath reconcile while the workers were down:\n{compared.stdout.strip()}")
    assert "missing (" in compared.stdout
    for service in SERVICES:
        assert f"{service} <- " in compared.stdout
    started = time.monotonic()
    system.start_workers()

    recovery = wait_for_recovery(system, ledger, started)
    report("redis-restarted-empty", recovery, ledger, emit)
    assert_recovered(system, recovery)
    after = system.feed_lag()
    emit(f"feed lag after recovery (from /metrics): {after}")
    # What Redis forgot came through the feeds, to every consumer it was queued for.
    for service, count in queued.items():
        assert after[service]["recovered"] >= count, (service, after[service], count)
        assert after[service]["lag_events"] == 0


# A consumer's handler sleeps in the middle of one message (its Nth insert into the table
# the handler writes), so the worker can be killed while it is certainly mid-message.
# nextval is not rolled back with the transaction, so only that one attempt sleeps.
SLEEP_ONCE = """
CREATE SEQUENCE test_slow_calls;
CREATE FUNCTION test_slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('test_slow_calls') = {nth} THEN
    PERFORM pg_sleep(4);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_slow BEFORE INSERT ON {table}
  FOR EACH ROW {when} EXECUTE FUNCTION test_slow_once();
"""
# What each consumer writes when it acts on an event.
CONSUMER_WRITES = {
    "coordinator": ("stored_event", 12, ""),
    "infusions": ("infusion_course", 3, ""),
    "therapy": ("therapy_episode", 3, ""),
    "referrals": ("referral_transition", 2, "WHEN (NEW.action = 'close')"),
}


def test_a_worker_killed_mid_message_loses_nothing_and_does_nothing_twice(
    system: System, emit: Emit
) -> None:
    for service, (table, nth, when) in CONSUMER_WRITES.items():
        system.execute(service, SLEEP_ONCE.format(table=table, nth=nth, when=when))
    system.start()
    ledger = Ledger()
    load = BackgroundLoad(LoadDriver(system, ledger, label="killed"), 32).start()

    # Each worker, once it is in the middle of a message, is SIGKILLed and restarted.
    killed: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(killed) < len(SERVICES) and time.monotonic() < deadline:
        for service in SERVICES:
            if service in killed:
                continue
            sleeping = system.query(
                service,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event = 'PgSleep'",
            )[0][0]
            if sleeping:
                system.stop(f"{service}-worker", signal.SIGKILL)
                killed[service] = time.monotonic()
                system.start_worker(service, wait=False)
        time.sleep(0.1)
    assert set(killed) == set(SERVICES), f"only {sorted(killed)} were caught mid-message"
    for service in SERVICES:
        system.wait_worker(service)
    load.join()
    started = max(max(killed.values()), time.monotonic())

    recovery = wait_for_recovery(system, ledger, started)
    report("worker-killed-mid-message", recovery, ledger, emit)
    assert_recovered(system, recovery)


def test_an_api_killed_between_commit_and_send_loses_nothing(system: System, emit: Emit) -> None:
    system.start()
    ledger = Ledger()
    load = LoadDriver(system, ledger, label="api")
    load.patients(12)
    load.wait_opened()

    # The referrals and infusions APIs commit, but cannot send: their Redis does not
    # answer, and their workers (whose relays sweep the same outboxes) are stopped.
    producers = ("referrals", "infusions")
    system.stop_workers(producers)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    for service in producers:
        system.stop(f"{service}-api")
        system.start_api(service, CAREPATH_REDIS_URL=nowhere)
    load.close_all()  # infusion courses closed through the infusions API
    load.patients(12)  # patients, referrals and triage through the referrals API
    unsent = system.unsent()
    assert all(unsent[service] for service in producers), unsent
    for service in producers:
        wait_until(
            lambda service=service: "relay.broker_down" in system.processes.log(f"{service}-api"),
            timeout=30,
            what=f"the {service} API's relay to find its broker down",
        )
        system.stop(f"{service}-api", signal.SIGKILL)
    emit(f"committed but never sent when the APIs were killed: {unsent}")

    started = time.monotonic()
    for service in producers:
        system.start_api(service, wait=False)
    system.start_workers(producers)
    recovery = wait_for_recovery(system, ledger, started)
    report("api-killed-between-commit-and-send", recovery, ledger, emit)
    assert_recovered(system, recovery)


def test_postgresql_connections_dropped_under_load_lose_no_acknowledged_write(
    system: System, emit: Emit
) -> None:
    system.start()
    ledger = Ledger()
    load = BackgroundLoad(LoadDriver(system, ledger, label="dropped"), 32).start()
    terminated: list[int] = []
    while load.running() and len(terminated) < 6:
        time.sleep(1.0)
        terminated.append(system.terminate_connections())
    load.join()
    started = time.monotonic()
    emit(
        f"connections terminated per round: {terminated};"
        f" writes not acknowledged: {dict(ledger.refused)}"
    )
    assert len(terminated) >= 3, "the load ended before the connections were dropped"

    recovery = wait_for_recovery(system, ledger, started)
    report("postgres-connections-dropped", recovery, ledger, emit)
    assert_recovered(system, recovery)


def test_the_same_event_delivered_several_times_in_shuffled_order(
    system: System, emit: Emit
) -> None:
    # The referrals and coordinator workers are not running: every event they consume
    # is first delivered to them below, three times over, in shuffled order.
    system.start(workers=("infusions", "therapy"))
    ledger = Ledger()
    load = LoadDriver(system, ledger, label="shuffled")
    load.patients(24)
    load.close_all()
    system.stop_workers(("infusions", "therapy"))
    wait_until(lambda: not any(system.unsent().values()), timeout=60, what="every row sent")
    system.redis.client().flushall()  # the in-order copies the relays sent

    envelopes = [
        row[0]
        for service in SERVICES
        for row in system.query(service, "SELECT envelope FROM outbox ORDER BY position")
    ]
    messages = [
        event_message(consumer, envelope)
        for envelope in envelopes
        for consumer in sorted(consumers_of(envelope["type"]))
        for _ in range(3)
    ]
    seed = random.randrange(1_000_000)
    random.Random(seed).shuffle(messages)
    broker = make_broker(
        PlatformSettings(
            broker=BrokerKind.redis, redis_url=system.redis.url, redis_namespace=system.namespace
        )
    )
    try:
        for message in messages:
            broker.enqueue(message)
    finally:
        broker.close()
    emit(f"{len(envelopes)} events enqueued as {len(messages)} messages, shuffled (seed {seed})")

    # The workers cannot read any feed (their producers' URLs lead nowhere): what they
    # consume comes from the shuffled, repeated messages alone.
    nowhere = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    system.start_workers(**{f"CAREPATH_{s.upper()}_URL": nowhere for s in SERVICES})
    recovery = wait_for_recovery(system, ledger, started)
    report("duplicated-and-shuffled", recovery, ledger, emit)
    assert_recovered(system, recovery)
    logs = "".join(system.processes.log(f"{s}-worker") for s in SERVICES)
    assert "feed.event_recovered" not in logs, "an event came from a feed, not the broker"
    assert logs.count("event.duplicate_ignored") >= 2 * len(envelopes)


BLOCK_REFERRAL = """
CREATE TABLE test_blocked_referral (referral_id uuid PRIMARY KEY);
CREATE FUNCTION test_refuse_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM test_blocked_referral WHERE referral_id = NEW.referral_id) THEN
    RAISE EXCEPTION 'refused by the fault test';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_refuse BEFORE INSERT ON therapy_episode
  FOR EACH ROW EXECUTE FUNCTION test_refuse_blocked();
"""


def test_a_poison_message_is_dead_lettered_the_queue_flows_on_and_replay_works(
    system: System, emit: Emit
) -> None:
    import httpx

    system.execute("therapy", BLOCK_REFERRAL)
    system.start()
    # First in every consumer's queue: a message that can never be a valid event.
    broker = make_broker(
        PlatformSettings(
            broker=BrokerKind.redis, redis_url=system.redis.url, redis_namespace=system.namespace
        )
    )
    try:
        for service in SERVICES:
            broker.enqueue(
                event_message(service, {"type": "referral.accepted", "data": {"not": "valid"}})
            )
    finally:
        broker.close()

    # And a valid event that fails in the therapy consumer until the test lets it: the
    # acceptance of the first psychology referral.
    ledger = Ledger()
    load = LoadDriver(system, ledger, label="poison")
    blocked: list[str] = []

    def block_first_psychology_referral(record: object) -> None:
        if not blocked and getattr(record, "target", None) == "psychology":
            blocked.append(record.id)  # type: ignore[attr-defined]
            system.execute("therapy", "INSERT INTO test_blocked_referral VALUES (%s)", blocked[0])

    load.before_triage = block_first_psychology_referral
    load.patients(24)
    assert blocked and ledger.referrals[blocked[0]].decision == "accept"

    def dead_lettered() -> list[int]:
        return [
            row[0]
            for row in system.query(
                "therapy",
                "SELECT id FROM dead_letter WHERE event_type = 'referral.accepted'"
                " AND event_id IS NOT NULL AND replayed_at IS NULL ORDER BY id",
            )
        ]

    failed = wait_until(dead_lettered, timeout=90, what="the failing event dead-lettered")
    for service in SERVICES:
        wait_until(
            lambda service=service: system.query(
                service, "SELECT count(*) FROM dead_letter WHERE event_id IS NULL"
            )[0][0],
            timeout=60,
            what=f"the poison message dead-lettered by {service}",
        )
    # The queues flowed on behind them: every other accepted referral has its effect.
    load.wait_opened(excluding=frozenset(blocked))
    assert not system.query(
        "therapy", "SELECT count(*) FROM therapy_episode WHERE referral_id = %s", blocked[0]
    )[0][0]

    admin = {"Authorization": f"Bearer {token(*ADMIN)}"}
    listed = httpx.get(f"{system.url('therapy')}/api/dead-letters", headers=admin, timeout=30)
    assert listed.status_code == 200, listed.text
    assert {item["id"] for item in listed.json()} >= set(failed)
    assert any("refused by the fault test" in item["error"] for item in listed.json())

    # Let the event succeed, and replay it with the operator's command.
    system.execute("therapy", "DELETE FROM test_blocked_referral")
    started = time.monotonic()
    replayed = system.run("dead-letters", "replay", "--service", "therapy", *map(str, failed))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.count("replayed ") == len(failed)
    load.close_all()
    recovery = wait_for_recovery(
        system, ledger, started, expected_dead_letters=dict.fromkeys(SERVICES, 1)
    )
    emit(f"dead-lettered and replayed in therapy: {failed}; poison left in each consumer: 1")
    report("poison-message", recovery, ledger, emit)
    assert_recovered(system, recovery)
