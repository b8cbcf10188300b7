"""A service's event feed on SQLite: commit order, cursors, type filters (shared.feed).

The PostgreSQL case, where rows commit out of position order, is in
tests/integration/test_feed_order.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import msgspec
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from shared.db import SessionFactory, make_session_factory
from shared.events import Envelope
from shared.feed import FeedCursor, read_feed
from shared.outbox import Relay, add_event
from shared.tables import OutboxEvent

from .factories import patient_registered, referral_received, sqlite_engine


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionFactory]:
    engine: Engine = sqlite_engine(tmp_path, "feed.db")
    yield make_session_factory(engine)
    engine.dispose()


def _commit(sessions: SessionFactory, *envelopes: Envelope) -> list[Envelope]:
    with sessions() as session:
        written = [
            add_event(session, msgspec.structs.replace(envelope, sequence=0))
            for envelope in envelopes
        ]
        session.commit()
    return written


def _positions(sessions: SessionFactory) -> list[int]:
    with sessions() as session:
        rows = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.position))).all()
        return [row.position or 0 for row in rows]


def test_the_feed_serves_rows_after_the_cursor_in_order_and_says_what_remains(
    sessions: SessionFactory,
) -> None:
    patient = uuid4()
    written = _commit(sessions, *(patient_registered(patient) for _ in range(6)))
    positions = _positions(sessions)
    with sessions() as session:
        page = read_feed(session, FeedCursor(0, positions[1]), 3)
    assert [row.event_id for row in page.rows] == [e.event_id for e in written[2:5]]
    assert page.next_after == FeedCursor(0, positions[4])
    assert page.remaining == 1


def test_a_short_page_moves_the_cursor_past_rows_of_other_types(
    sessions: SessionFactory,
) -> None:
    patient = uuid4()
    _commit(sessions, referral_received(patient, referral_id=uuid4()))
    _commit(sessions, patient_registered(patient), patient_registered(patient))
    positions = _positions(sessions)
    with sessions() as session:
        page = read_feed(session, FeedCursor(), 10, frozenset({"referral.received"}))
        assert [row.type for row in page.rows] == ["referral.received"]
        # Nothing of that type after it: the next read starts after the last row.
        assert page.next_after == FeedCursor(0, positions[-1])
        assert page.remaining == 0
        again = read_feed(session, page.next_after, 10, frozenset({"referral.received"}))
    assert again.rows == []
    assert again.next_after == page.next_after


def test_the_feed_from_the_start_past_the_end_and_after_sending(
    sessions: SessionFactory,
) -> None:
    _commit(sessions, patient_registered(uuid4()), patient_registered(uuid4()))
    Relay("referrals", sessions, lambda consumer, envelope: None).relay_once()
    with sessions() as session:
        everything = read_feed(session, FeedCursor(), 100)
        assert len(everything.rows) == 2  # sent rows stay in the feed
        past = read_feed(session, everything.next_after, 100)
    assert past.rows == []
    assert past.next_after == everything.next_after


@pytest.mark.parametrize(
    ("text", "cursor"),
    [("0", FeedCursor(0, 0)), ("17", FeedCursor(0, 17)), ("912.4", FeedCursor(912, 4))],
)
def test_cursors_read_back_and_a_bare_position_means_txid_zero(
    text: str, cursor: FeedCursor
) -> None:
    assert FeedCursor.parse(text) == cursor
    assert FeedCursor.parse(str(cursor)) == cursor


@pytest.mark.parametrize("text", ["", "-1", "1.2.3", "abc", "1e5", "9" * 20])
def test_a_malformed_cursor_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a feed cursor"):
        FeedCursor.parse(text)
