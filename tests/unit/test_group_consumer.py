"""Issue 15: the events worker threads hold while a transaction runs are consumed
together in the next one (shared.messaging.GroupConsumer), each still exactly once, and
a batch that fails leaves each of its events to succeed or fail alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID, uuid4

import dramatiq
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shared.db import SessionFactory, make_session_factory
from shared.events import Envelope, encode_envelope
from shared.messaging import (
    GroupConsumer,
    consume,
    consume_together,
    declare_consumer,
    make_broker,
    queue_sender,
)
from shared.settings import BrokerKind, PlatformSettings
from shared.tables import InboxEvent

from .factories import patient_registered, sqlite_engine
from .test_consumer import effects

SERVICE = "coordinator"


class Interrupted(BaseException):
    """As dramatiq's own interrupts (a time limit, a shutdown): not an Exception."""


@dataclass
class Effects:
    """A batch handler that writes one effect row an event and notes each call."""

    batches: list[list[UUID]] = field(default_factory=list)
    # The first call waits here, so the others gather behind it.
    gate: threading.Event = field(default_factory=threading.Event)
    fail_on: UUID | None = None
    interrupt_batches: bool = False

    def __call__(self, session: Session, envelopes: Sequence[Envelope]) -> None:
        ids = [envelope.event_id for envelope in envelopes]
        first = not self.batches
        self.batches.append(ids)
        if first:
            assert self.gate.wait(10)
        if self.interrupt_batches and len(ids) > 1:
            raise Interrupted
        for event_id in ids:
            if event_id == self.fail_on:
                raise ValueError("this event cannot be folded")
            session.connection().execute(insert(effects).values(event_id=str(event_id)))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path, "batches.db", extra=[effects])
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return make_session_factory(engine)


def effect_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(select(effects.c.event_id)).scalars())


def inbox_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(InboxEvent)).scalar_one())


def in_threads(
    group: GroupConsumer, envelopes: list[Envelope], handler: Effects
) -> dict[UUID, bool | BaseException]:
    """The first envelope's thread starts a transaction and holds it at the handler's
    gate until every other thread has queued its envelope behind it."""
    outcomes: dict[UUID, bool | BaseException] = {}

    def run(envelope: Envelope) -> None:
        try:
            outcomes[envelope.event_id] = group.consume(envelope)
        except BaseException as error:  # the outcome under test
            outcomes[envelope.event_id] = error

    threads = [threading.Thread(target=run, args=(envelope,)) for envelope in envelopes]
    threads[0].start()
    wait_for(lambda: len(handler.batches) == 1)
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: group.waiting() == len(envelopes) - 1)
    handler.gate.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a thread was left waiting"
    return outcomes


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def events(count: int) -> list[Envelope]:
    return [patient_registered(uuid4()) for _ in range(count)]


def test_events_that_gather_behind_a_transaction_are_consumed_together_each_once(
    engine: Engine, sessions: SessionFactory
) -> None:
    handler = Effects()
    group = GroupConsumer(SERVICE, sessions, handler, most=16)
    envelopes = events(6)

    outcomes = in_threads(group, envelopes, handler)

    first, *rest = [envelope.event_id for envelope in envelopes]
    assert handler.batches[0] == [first]  # a quiet queue: alone, as before
    assert len(handler.batches) == 2
    assert sorted(handler.batches[1]) == sorted(rest)
    assert outcomes == {envelope.event_id: True for envelope in envelopes}
    assert effect_ids(engine) == sorted(str(envelope.event_id) for envelope in envelopes)
    assert inbox_count(engine) == 6
    assert group.waiting() == 0


def test_a_batch_is_no_larger_than_most(engine: Engine, sessions: SessionFactory) -> None:
    handler = Effects()
    group = GroupConsumer(SERVICE, sessions, handler, most=2)

    in_threads(group, events(6), handler)

    assert [len(batch) for batch in handler.batches] == [1, 2, 2, 1]
    assert len(effect_ids(engine)) == 6


def test_events_consumed_before_and_twice_in_a_batch_take_effect_once(
    engine: Engine, sessions: SessionFactory
) -> None:
    handler = Effects()
    handler.gate.set()
    earlier, fresh = events(2)
    assert consume(SERVICE, sessions, lambda s, e: handler(s, [e]), earlier)

    outcomes = consume_together(SERVICE, sessions, handler, [fresh, earlier, fresh])

    assert outcomes == [True, False, False]
    assert handler.batches[-1] == [fresh.event_id]
    assert effect_ids(engine) == sorted([str(earlier.event_id), str(fresh.event_id)])
    assert inbox_count(engine) == 2


def test_a_batch_that_fails_leaves_each_event_to_succeed_or_fail_alone(
    engine: Engine, sessions: SessionFactory
) -> None:
    envelopes = events(5)
    bad = envelopes[3].event_id
    handler = Effects(fail_on=bad)
    group = GroupConsumer(SERVICE, sessions, handler, most=16)

    outcomes = in_threads(group, envelopes, handler)

    assert isinstance(outcomes.pop(bad), ValueError)
    assert set(outcomes.values()) == {True}
    # The failed batch wrote nothing; each good event's effect and inbox row are there once.
    assert effect_ids(engine) == sorted(str(event_id) for event_id in outcomes)
    assert inbox_count(engine) == 4
    assert [len(batch) for batch in handler.batches[1:]] == [4, 1, 1, 1, 1]


def test_an_interrupted_leader_does_not_leave_the_others_waiting(
    engine: Engine, sessions: SessionFactory
) -> None:
    handler = Effects(interrupt_batches=True)
    group = GroupConsumer(SERVICE, sessions, handler, most=16)
    envelopes = events(4)

    outcomes = in_threads(group, envelopes, handler)

    interrupted = [key for key, outcome in outcomes.items() if isinstance(outcome, Interrupted)]
    assert len(interrupted) == 1  # the leader of the batch of three
    assert sum(outcome is True for outcome in outcomes.values()) == 3
    assert len(effect_ids(engine)) == 3
    assert group.waiting() == 0
    # The consumer still works afterwards: a new event leads at once.
    handler.interrupt_batches = False
    (later,) = events(1)
    assert group.consume(later) is True


def test_the_live_actor_consumes_together_on_a_broker(
    engine: Engine, sessions: SessionFactory
) -> None:
    broker = make_broker(PlatformSettings(broker=BrokerKind.memory))
    handler = Effects()
    handler.gate.set()
    group = GroupConsumer(SERVICE, sessions, handler, most=16)
    declare_consumer(
        broker,
        SERVICE,
        sessions,
        lambda s, e: handler(s, [e]),
        accept_unknown_types=True,
        together=group,
    )
    envelopes = events(40)
    send = queue_sender(broker)
    for envelope in [*envelopes, envelopes[0]]:  # one delivered twice
        send(SERVICE, encode_envelope(envelope))
    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=20)
    worker.start()
    try:
        broker.join(f"{SERVICE}.events", timeout=20_000)
        worker.join()
    finally:
        worker.stop(timeout=5_000)
        broker.close()

    assert effect_ids(engine) == sorted(str(envelope.event_id) for envelope in envelopes)
    assert inbox_count(engine) == 40
    assert sum(len(batch) for batch in handler.batches) == 40
