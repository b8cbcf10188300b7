"""Idempotency keys, the store (shared/idempotency.py): claim, keep, abandon, expiry,
and a held commit that still wakes the relay when the real commit happens."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shared import idempotency
from shared.db import SessionFactory, make_session_factory
from shared.errors import Conflict, FieldProblem
from shared.idempotency import HEADER, IdempotentRequest, StoredAnswer
from shared.outbox import add_event
from shared.tables import AuditRecord, IdempotencyKey

from .factories import T0, patient_registered, sqlite_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path, "idempotency.db", extra=[IdempotencyKey.__table__])  # type: ignore[list-item]
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return make_session_factory(engine)


def keyed(key: str = "key-1", body: bytes = b'{"a":1}', **overrides: Any) -> IdempotentRequest:
    fields: dict[str, Any] = {
        "user_id": "gp-1",
        "role": "referrer",
        "method": "POST",
        "path": "/api/referrals",
        "body": body,
    }
    fields.update(overrides)
    return idempotency.idempotent_request(key, **fields)


ANSWER = StoredAnswer(status=201, media_type="application/json", body=b'{"id":"r-1"}')


def stored_keys(sessions: SessionFactory) -> list[IdempotencyKey]:
    with sessions() as session:
        return list(session.exec(select(IdempotencyKey)).all())


def complete(sessions: SessionFactory, request: IdempotentRequest, **claim: Any) -> None:
    with sessions() as session:
        claimed = idempotency.claim(session, request, **claim)
        assert isinstance(claimed, IdempotencyKey)
        idempotency.keep(session, claimed, ANSWER)


# --- the key itself ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "x" * 255, "9f1c-uuid-like key/with:punctuation~"])
def test_a_key_of_1_to_255_printable_ascii_characters_is_accepted(key: str) -> None:
    assert idempotency.checked_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "café", "tab\there", "nul\x00"])
def test_any_other_key_is_refused_naming_the_header(key: str) -> None:
    with pytest.raises(FieldProblem) as refused:
        idempotency.checked_key(key)
    assert refused.value.errors == [
        {"field": HEADER, "message": "must be 1 to 255 printable ASCII characters"}
    ]


def test_the_request_is_known_by_its_caller_and_a_hash_of_its_body() -> None:
    request = keyed(body=b"{}")
    assert request.caller == "referrer:gp-1"
    assert request.body_sha256 == (
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


# --- claim, keep, replay -------------------------------------------------------------


def test_a_kept_answer_is_what_a_repeat_gets(sessions: SessionFactory) -> None:
    complete(sessions, keyed())
    with sessions() as session:
        assert idempotency.claim(session, keyed()) == ANSWER
    [row] = stored_keys(sessions)
    assert (row.status, row.response, row.method, row.path) == (
        201,
        ANSWER.body,
        "POST",
        "/api/referrals",
    )


def test_the_claim_and_the_change_commit_together(sessions: SessionFactory, tmp_path: Path) -> None:
    def committed() -> tuple[int, int]:
        # A plain reader: WAL lets it read beside the held write transaction.
        with closing(sqlite3.connect(tmp_path / "idempotency.db")) as reader:
            keys = reader.execute("SELECT count(*) FROM idempotency_key").fetchone()[0]
            events = reader.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return keys, events

    with sessions() as session:
        claimed = idempotency.claim(session, keyed())
        assert isinstance(claimed, IdempotencyKey)
        add_event(session, patient_registered(uuid4()))
        session.commit()  # what a command's unit of work does: held, only flushed
        assert committed() == (0, 0)
        idempotency.keep(session, claimed, ANSWER)
    assert committed() == (1, 1)


@pytest.mark.parametrize(
    "other",
    [
        {"body": b'{"a":2}'},
        {"path": "/api/patients"},
        {"method": "PATCH"},
    ],
)
def test_the_same_key_for_another_request_is_refused(
    sessions: SessionFactory, other: dict[str, Any]
) -> None:
    complete(sessions, keyed())
    with sessions() as session, pytest.raises(FieldProblem) as refused:
        idempotency.claim(session, keyed(**other))
    assert refused.value.errors is not None
    assert refused.value.errors[0]["field"] == HEADER


def test_another_callers_same_key_is_another_key(sessions: SessionFactory) -> None:
    complete(sessions, keyed())
    with sessions() as session:
        claimed = idempotency.claim(session, keyed(user_id="gp-2"))
        assert isinstance(claimed, IdempotencyKey)
        idempotency.abandon(session)
    with sessions() as session:
        assert isinstance(idempotency.claim(session, keyed(role="mdt")), IdempotencyKey)


def test_an_abandoned_request_leaves_neither_its_change_nor_its_key(
    sessions: SessionFactory,
) -> None:
    with sessions() as session:
        idempotency.claim(session, keyed())
        add_event(session, patient_registered(uuid4()))
        session.commit()
        idempotency.abandon(session)
        session.commit()  # no longer held: commits nothing left
    assert stored_keys(sessions) == []
    with sessions() as session:
        assert isinstance(idempotency.claim(session, keyed(body=b"corrected")), IdempotencyKey)


def test_a_command_that_rolled_back_and_then_succeeded_still_keeps_its_key(
    sessions: SessionFactory,
) -> None:
    with sessions() as session:
        claimed = idempotency.claim(session, keyed())
        assert isinstance(claimed, IdempotencyKey)
        session.rollback()
        idempotency.keep(session, claimed, ANSWER)
    with sessions() as session:
        assert idempotency.claim(session, keyed()) == ANSWER


def test_a_pending_row_seen_committed_is_a_conflict_not_an_answer(
    sessions: SessionFactory,
) -> None:
    with sessions() as session:
        claimed = idempotency.claim(session, keyed())
        session.release_commit()  # type: ignore[attr-defined]
        session.commit()  # as if a commit escaped its hold
    with sessions() as session, pytest.raises(Conflict):
        idempotency.claim(session, keyed())
    assert claimed.status == 0


def test_a_session_without_a_hold_is_refused(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(TypeError):
        idempotency.claim(session, keyed())


# --- expiry ---------------------------------------------------------------------------


def test_a_key_older_than_the_policy_period_acts_as_new(sessions: SessionFactory) -> None:
    complete(sessions, keyed(), now=T0)
    [row] = stored_keys(sessions)
    assert row.expires_at == T0 + timedelta(hours=24)
    later = T0 + timedelta(hours=24)
    with sessions() as session:
        claimed = idempotency.claim(session, keyed(body=b"another request"), now=later)
        assert isinstance(claimed, IdempotencyKey)
        idempotency.keep(session, claimed, ANSWER)
    [row] = stored_keys(sessions)
    assert row.created_at == later


def test_a_key_within_the_period_is_still_answered(sessions: SessionFactory) -> None:
    complete(sessions, keyed(), now=T0)
    with sessions() as session:
        assert idempotency.claim(session, keyed(), now=T0 + timedelta(hours=23)) == ANSWER


def test_the_sweep_deletes_expired_keys_and_their_answers_only(
    sessions: SessionFactory,
) -> None:
    complete(sessions, keyed("old"), now=T0)
    complete(sessions, keyed("new"), now=T0 + timedelta(hours=12))
    assert idempotency.sweep(sessions, T0 + timedelta(hours=25)) == 1
    assert [row.key for row in stored_keys(sessions)] == ["new"]


# --- the relay ------------------------------------------------------------------------


class FakeRelay:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def test_the_relay_is_woken_by_the_real_commit_not_the_held_one(engine: Engine) -> None:
    relay = FakeRelay()
    sessions = make_session_factory(engine)
    sessions.configure(info={"relay": relay})
    with sessions() as session:
        claimed = idempotency.claim(session, keyed())
        assert isinstance(claimed, IdempotencyKey)
        add_event(session, patient_registered(uuid4()))
        session.commit()
        assert relay.woken == 0
        idempotency.keep(session, claimed, ANSWER)
    assert relay.woken == 1


def test_a_replay_writes_no_audit_by_itself(sessions: SessionFactory) -> None:
    # The route audits the replay (shared.web.idempotency); the store does not.
    complete(sessions, keyed())
    with sessions() as session:
        idempotency.claim(session, keyed())
        assert list(session.exec(select(AuditRecord)).all()) == []
