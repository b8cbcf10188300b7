"""The idempotent consumer and dead letters (DESIGN.md, steps 4 and 6), on dramatiq's
StubBroker with one in-process worker thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from shared.db import SessionFactory, make_session_factory
from shared.events import Envelope, encode_envelope
from shared.messaging import declare_consumer, describe_error, make_broker, queue_sender
from shared.settings import BrokerKind, PlatformSettings
from shared.tables import DeadLetter, InboxEvent

from .factories import patient_registered, sqlite_engine

SERVICE = "therapy"
QUEUE = "therapy.events"

# A stand-in for a service's own table, kept out of SQLModel's shared metadata.
effects = Table(
    "unit_effect",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("event_id", String(64), nullable=False),
)


@dataclass
class Harness:
    broker: StubBroker
    engine: Engine
    sessions: SessionFactory
    calls: list[str] = field(default_factory=list)
    worker: dramatiq.Worker | None = None

    def declare(self, handle: Callable[[Session, Envelope], None]) -> None:
        def recording(session: Session, envelope: Envelope) -> None:
            self.calls.append(str(envelope.event_id))
            handle(session, envelope)

        declare_consumer(self.broker, SERVICE, self.sessions, recording)

    def send(self, raw: Any) -> None:
        queue_sender(self.broker)(SERVICE, raw)

    def run(self) -> None:
        """Start the worker (once), then wait until the queue and its retries are done."""
        if self.worker is None:
            self.worker = dramatiq.Worker(self.broker, worker_threads=1, worker_timeout=20)
            self.worker.start()
        self.broker.join(QUEUE, fail_fast=False, timeout=10_000)
        self.worker.join()

    def count(self, statement: Any) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def inbox(self) -> list[InboxEvent]:
        with self.sessions() as session:
            return list(session.exec(select(InboxEvent)).all())

    def dead_letters(self) -> list[DeadLetter]:
        with self.sessions() as session:
            return list(session.exec(select(DeadLetter)).all())


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    settings = PlatformSettings(
        broker=BrokerKind.memory, max_retries=1, min_backoff_ms=1, max_backoff_ms=2
    )
    broker = make_broker(settings)
    assert isinstance(broker, StubBroker)
    engine = sqlite_engine(tmp_path, "consumer.db", extra=[effects])
    running = Harness(broker=broker, engine=engine, sessions=make_session_factory(engine))
    try:
        yield running
    finally:
        if running.worker is not None:
            running.worker.stop(timeout=5_000)
        broker.close()
        engine.dispose()


def write_effect(session: Session, envelope: Envelope) -> None:
    session.connection().execute(insert(effects).values(event_id=str(envelope.event_id)))


def valid_raw() -> dict[str, Any]:
    return encode_envelope(patient_registered(uuid4()))


def test_the_same_envelope_delivered_twice_has_one_effect(harness: Harness) -> None:
    harness.declare(write_effect)
    raw = valid_raw()
    harness.send(raw)
    harness.send(raw)
    harness.run()

    assert harness.calls == [raw["event_id"]]
    assert [str(row.event_id) for row in harness.inbox()] == [raw["event_id"]]
    assert harness.count(sa_select(func.count()).select_from(effects)) == 1
    assert harness.dead_letters() == []


def test_distinct_envelopes_each_take_effect(harness: Harness) -> None:
    harness.declare(write_effect)
    first, second = valid_raw(), valid_raw()
    harness.send(first)
    harness.send(second)
    harness.run()
    assert sorted(harness.calls) == sorted([first["event_id"], second["event_id"]])
    assert harness.count(sa_select(func.count()).select_from(effects)) == 2


def test_an_invalid_envelope_is_dead_lettered_at_once_without_retries(harness: Harness) -> None:
    harness.declare(write_effect)
    raw = valid_raw()
    raw["sequence"] = 0  # never valid: the outbox always assigns 1 or more
    harness.send(raw)
    harness.run()

    assert harness.calls == []
    (dead,) = harness.dead_letters()
    assert dead.queue_name == QUEUE
    assert dead.actor_name == "therapy.handle_event"
    assert dead.event_id == raw["event_id"]
    assert dead.event_type == "patient.registered"
    # No retry was scheduled: dramatiq counts retries in the message options.
    assert dead.message["options"].get("retries", 0) == 0
    assert dead.message["args"][0]["event_id"] == raw["event_id"]
    assert harness.inbox() == []
    assert len(harness.broker.dead_letters) == 1


def test_a_payload_failing_its_schema_is_dead_lettered(harness: Harness) -> None:
    harness.declare(write_effect)
    raw = valid_raw()
    raw["data"]["patient_id"] = "not-a-uuid"
    harness.send(raw)
    harness.run()
    assert harness.calls == []
    assert [row.event_id for row in harness.dead_letters()] == [raw["event_id"]]


def test_a_message_that_is_not_an_envelope_is_dead_lettered_with_no_ids(harness: Harness) -> None:
    harness.declare(write_effect)
    harness.send("garbage")
    harness.run()
    (dead,) = harness.dead_letters()
    assert dead.event_id is None
    assert dead.event_type is None


def test_a_dead_lettered_invalid_envelope_records_why(harness: Harness) -> None:
    harness.declare(write_effect)
    raw = valid_raw()
    raw["sequence"] = 0
    harness.send(raw)
    harness.run()
    (dead,) = harness.dead_letters()
    assert dead.error.startswith("shared.events.envelope.InvalidEvent:")
    assert "sequence" in dead.error


def test_a_dead_letter_keeps_an_overlong_event_id_within_its_column(harness: Harness) -> None:
    harness.declare(write_effect)
    raw = valid_raw()
    raw["event_id"] = "x" * 200  # not a UUID, so the envelope is invalid
    harness.send(raw)
    harness.run()
    (dead,) = harness.dead_letters()
    assert dead.event_id is not None
    assert len(dead.event_id) <= 64


def test_a_failing_handler_is_retried_then_dead_lettered_and_its_writes_rolled_back(
    harness: Harness,
) -> None:
    def write_then_fail(session: Session, envelope: Envelope) -> None:
        write_effect(session, envelope)
        session.flush()
        raise RuntimeError("the handler always fails")

    harness.declare(write_then_fail)
    raw = valid_raw()
    harness.send(raw)
    harness.run()

    # max_retries=1: the first attempt and one retry.
    assert harness.calls == [raw["event_id"], raw["event_id"]]
    (dead,) = harness.dead_letters()
    assert dead.event_id == raw["event_id"]
    assert dead.message["options"]["retries"] == 2
    assert "RuntimeError" in dead.error
    assert harness.count(sa_select(func.count()).select_from(effects)) == 0
    assert harness.inbox() == []


def test_a_handler_that_fails_once_succeeds_on_retry_with_one_effect(harness: Harness) -> None:
    failures = [RuntimeError("transient")]

    def flaky(session: Session, envelope: Envelope) -> None:
        write_effect(session, envelope)
        if failures:
            raise failures.pop()

    harness.declare(flaky)
    raw = valid_raw()
    harness.send(raw)
    harness.run()

    assert len(harness.calls) == 2
    assert harness.dead_letters() == []
    assert harness.count(sa_select(func.count()).select_from(effects)) == 1
    assert len(harness.inbox()) == 1


def test_a_poison_message_does_not_block_the_queue(harness: Harness) -> None:
    harness.declare(write_effect)
    poison = valid_raw()
    poison["occurred_at"] = "2025-03-03T09:00:00"  # naive: never valid
    good = valid_raw()
    harness.send(poison)
    harness.send(good)
    harness.run()
    assert harness.calls == [good["event_id"]]
    assert [row.event_id for row in harness.dead_letters()] == [poison["event_id"]]


def test_describe_error_keeps_the_type_and_only_the_first_line_of_a_database_error() -> None:
    """A database error's later lines quote the row's values, which may be patient data."""

    class DriverError(Exception):
        pass

    wrapped = IntegrityError(
        "INSERT INTO patient ...",
        {"given_name": "Ada"},
        DriverError("duplicate key value\nDETAIL: Key (nhs_number)=(9434765919) exists"),
    )
    note = describe_error(wrapped)
    assert note.startswith("sqlalchemy.exc.IntegrityError: duplicate key value")
    assert "9434765919" not in note
    assert "Ada" not in note
    assert len(describe_error(RuntimeError("x" * 2000))) == 500
