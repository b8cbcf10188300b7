"""The transactional outbox and its relay (DESIGN.md, "How an event travels")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from structlog.testing import capture_logs

from shared.db import SessionFactory, make_session_factory
from shared.events import Envelope, decode_envelope
from shared.outbox import Relay, add_event, unsent_summary
from shared.tables import OutboxEvent

from .factories import patient_registered, referral_received, sqlite_engine, unknown_event


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path, "outbox.db")
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return make_session_factory(engine)


def _unsequenced(envelope: Envelope) -> Envelope:
    return msgspec.structs.replace(envelope, sequence=0)


def _commit(sessions: SessionFactory, *envelopes: Envelope) -> list[Envelope]:
    with sessions() as session:
        written = [add_event(session, _unsequenced(envelope)) for envelope in envelopes]
        session.commit()
    return written


def _rows(sessions: SessionFactory) -> list[OutboxEvent]:
    with sessions() as session:
        return list(session.exec(select(OutboxEvent).order_by(col(OutboxEvent.position))).all())


def _referral_event(patient: UUID, referral: UUID) -> Envelope:
    return referral_received(patient, referral_id=referral)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail_with: Exception | None = None

    def __call__(self, consumer: str, envelope: dict[str, Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((consumer, envelope))


# --- sequences ----------------------------------------------------------------------


def test_sequences_count_1_2_3_per_subject(sessions: SessionFactory) -> None:
    patient, referral = uuid4(), uuid4()
    written = _commit(sessions, *(_referral_event(patient, referral) for _ in range(3)))
    assert [envelope.sequence for envelope in written] == [1, 2, 3]
    assert [row.sequence for row in _rows(sessions)] == [1, 2, 3]


def test_sequences_continue_across_transactions(sessions: SessionFactory) -> None:
    patient, referral = uuid4(), uuid4()
    _commit(sessions, _referral_event(patient, referral))
    (second,) = _commit(sessions, _referral_event(patient, referral))
    assert second.sequence == 2


def test_sequences_are_independent_across_subjects(sessions: SessionFactory) -> None:
    patient = uuid4()
    first, second = uuid4(), uuid4()
    written = _commit(
        sessions,
        _referral_event(patient, first),
        _referral_event(patient, second),
        _referral_event(patient, first),
        patient_registered(patient),
        _referral_event(patient, second),
    )
    assert [envelope.sequence for envelope in written] == [1, 1, 2, 1, 2]


def test_stored_envelope_carries_the_assigned_sequence_and_decodes(
    sessions: SessionFactory,
) -> None:
    patient = uuid4()
    _commit(sessions, patient_registered(patient), _referral_event(patient, uuid4()))
    for row in _rows(sessions):
        decoded = decode_envelope(row.envelope)
        assert decoded.sequence == row.sequence >= 1
        assert decoded.event_id == row.event_id


def test_a_rolled_back_transaction_leaves_no_outbox_row(sessions: SessionFactory) -> None:
    patient = uuid4()
    with pytest.raises(RuntimeError), sessions() as session:
        add_event(session, _unsequenced(patient_registered(patient)))
        raise RuntimeError("the clinical write failed")
    assert _rows(sessions) == []


def test_an_uncommitted_session_leaves_no_outbox_row(sessions: SessionFactory) -> None:
    with sessions() as session:
        add_event(session, _unsequenced(patient_registered(uuid4())))
        session.rollback()
    assert _rows(sessions) == []
    # The next writer of the same subject still starts at 1.
    (written,) = _commit(sessions, patient_registered(uuid4()))
    assert written.sequence == 1


# --- relay --------------------------------------------------------------------------


def test_relay_sends_each_row_to_every_consumer_and_marks_it_sent(
    sessions: SessionFactory,
) -> None:
    patient = uuid4()
    registered, accepted = _commit(
        sessions, patient_registered(patient), unknown_event(patient, "referral.accepted")
    )
    send = Recorder()
    relay = Relay("referrals", sessions, send)

    assert relay.relay_once() == 2

    sent = [(consumer, envelope["event_id"]) for consumer, envelope in send.sent]
    assert sent == [
        ("coordinator", str(registered.event_id)),
        ("coordinator", str(accepted.event_id)),
        ("infusions", str(accepted.event_id)),
        ("therapy", str(accepted.event_id)),
    ]
    assert all(envelope["sequence"] == 1 for _, envelope in send.sent)
    rows = _rows(sessions)
    assert all(row.sent_at is not None for row in rows)
    assert [row.send_attempts for row in rows] == [1, 1]
    assert unsent_summary(sessions) == (0, None)


def test_relay_second_call_sends_nothing(sessions: SessionFactory) -> None:
    _commit(sessions, patient_registered(uuid4()))
    send = Recorder()
    relay = Relay("referrals", sessions, send)
    relay.relay_once()
    count = len(send.sent)
    assert relay.relay_once() == 0
    assert len(send.sent) == count == 1


def test_relay_sends_in_position_order_in_batches(sessions: SessionFactory) -> None:
    patient = uuid4()
    written = _commit(sessions, *(patient_registered(patient) for _ in range(5)))
    send = Recorder()
    relay = Relay("referrals", sessions, send, batch_size=2)
    assert [relay.relay_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [envelope["event_id"] for _, envelope in send.sent] == [
        str(envelope.event_id) for envelope in written
    ]


def test_relay_keeps_rows_unsent_when_the_broker_is_down_and_sends_them_later(
    sessions: SessionFactory,
) -> None:
    patient = uuid4()
    _commit(sessions, patient_registered(patient), _referral_event(patient, uuid4()))
    send = Recorder()
    send.fail_with = ConnectionError("redis is down")
    relay = Relay("referrals", sessions, send)

    with pytest.raises(ConnectionError):
        relay.relay_once()
    assert all(row.sent_at is None for row in _rows(sessions))
    unsent, oldest = unsent_summary(sessions)
    assert unsent == 2
    assert oldest is not None and oldest.tzinfo is not None

    send.fail_with = None
    assert relay.relay_once() == 2
    assert len(send.sent) == 2
    assert all(row.sent_at is not None for row in _rows(sessions))


def test_relay_does_not_send_rows_of_a_rolled_back_transaction(
    sessions: SessionFactory,
) -> None:
    with sessions() as session:
        add_event(session, _unsequenced(patient_registered(uuid4())))
        session.rollback()
    send = Recorder()
    assert Relay("referrals", sessions, send).relay_once() == 0
    assert send.sent == []


def test_relay_loop_sends_after_a_wake_and_stops(sessions: SessionFactory) -> None:
    send = Recorder()
    relay = Relay("referrals", sessions, send, interval_s=30)
    relay.start()
    try:
        _commit(sessions, patient_registered(uuid4()))
        relay.wake()
        deadline = time.monotonic() + 5
        while not send.sent and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        relay.stop(timeout=5)
    assert len(send.sent) == 1
    assert relay._thread is None


def test_a_commit_through_a_session_that_knows_its_relay_wakes_it(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    send = Recorder()
    relay = Relay("referrals", sessions, send, interval_s=30)
    sessions.configure(info={"relay": relay})
    relay.start()
    try:
        _commit(sessions, patient_registered(uuid4()))
        deadline = time.monotonic() + 5
        while not send.sent and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        relay.stop(timeout=5)
    assert len(send.sent) == 1


# --- outages --------------------------------------------------------------------------


class Attempts(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def __call__(self, consumer: str, envelope: dict[str, Any]) -> None:
        self.attempts += 1
        super().__call__(consumer, envelope)


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
    sessions: SessionFactory,
) -> None:
    send = Recorder()
    relay = Relay("referrals", sessions, send, interval_s=0.1, max_backoff_s=0.8)
    send.fail_with = ConnectionError("redis is down")
    with capture_logs() as logs:
        for _ in range(3):
            _commit(sessions, patient_registered(uuid4()))
            assert relay.relay_pending() == 0
        backoffs = [relay._backoff_s]
        for _ in range(4):
            relay.relay_pending()
            backoffs.append(relay._backoff_s)
        send.fail_with = None
        assert relay.relay_pending() == 3
        relay.relay_pending()
    events = [(entry["event"], entry.get("waited")) for entry in logs]
    assert events == [("relay.broker_down", None), ("relay.broker_back", 3)]
    # Each failed try doubles the wait, up to the cap; success resets it.
    assert backoffs == [0.4, 0.8, 0.8, 0.8, 0.8]
    assert relay._backoff_s == 0.1
    assert relay.down_since is None
    assert unsent_summary(sessions)[0] == 0


def test_commits_during_an_outage_do_not_make_the_relay_retry_each_time(
    sessions: SessionFactory,
) -> None:
    _commit(sessions, patient_registered(uuid4()))
    send = Attempts()
    send.fail_with = ConnectionError("redis is down")
    relay = Relay("referrals", sessions, send, interval_s=0.02, max_backoff_s=0.3)
    relay.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # a busy clinic: a commit every 5 ms
            relay.wake()
            time.sleep(0.005)
    finally:
        relay.stop(timeout=5)
    # Woken ~200 times; with backoff (0.02, 0.04 ... 0.3 s) it tried only a handful.
    assert 1 <= send.attempts <= 12
