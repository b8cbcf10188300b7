"""The feed never passes over a row that commits late (issue 10), on the real PostgreSQL.

PostgreSQL takes an outbox position when the row is inserted; a transaction that
inserted first can commit last. "Serve rows after the highest position read" would then
skip its row for good. shared.feed serves rows in (txid, position) order, and only rows
whose transaction is older than every transaction still in flight.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import msgspec
import pytest
from sqlalchemy import text
from sqlmodel import Session

from shared.db import SessionFactory
from shared.feed import FeedCursor, read_feed
from shared.outbox import add_event
from tests.unit.factories import patient_registered

pytestmark = pytest.mark.integration


def _write(session: Session) -> int:
    """Add one event to the session's open transaction; returns its position."""
    envelope = msgspec.structs.replace(patient_registered(uuid4()), sequence=0)
    add_event(session, envelope)
    return int(session.exec(text("SELECT max(position) FROM outbox")).one()[0])  # type: ignore[call-overload]


def _read_all(sessions: SessionFactory, after: FeedCursor) -> tuple[list[int], FeedCursor]:
    with sessions() as reader:
        page = read_feed(reader, after, 100)
        return [row.position or 0 for row in page.rows], page.next_after


def test_a_row_that_commits_after_a_later_one_is_still_served(stack: Any) -> None:
    sessions = stack.runtime("referrals").sessions
    slow, quick = sessions(), sessions()
    try:
        first = _write(slow)  # inserted first, still in flight
        second = _write(quick)
        assert second > first
        quick.commit()

        # The naive feed would hand out `second` now and its reader would move past
        # `first` before it ever became visible.
        served, cursor = _read_all(sessions, FeedCursor())
        assert served == []
        assert cursor == FeedCursor()

        slow.commit()
        served, cursor = _read_all(sessions, cursor)
        assert served == [first, second]
        assert _read_all(sessions, cursor) == ([], cursor)
    finally:
        slow.close()
        quick.close()


def test_a_transaction_with_an_older_id_that_inserts_later_is_ordered_by_its_id(
    stack: Any,
) -> None:
    """The case a "below the horizon, by position" feed gets wrong: the older
    transaction commits a higher position while a younger one is still in flight."""
    sessions = stack.runtime("referrals").sessions
    older, younger = sessions(), sessions()
    try:
        older.exec(text("SELECT pg_current_xact_id()"))  # type: ignore[call-overload]
        younger_position = _write(younger)  # lower position, younger transaction
        older_position = _write(older)
        assert older_position > younger_position
        older.commit()

        served, cursor = _read_all(sessions, FeedCursor())
        assert served == [older_position]

        younger.commit()
        served, cursor = _read_all(sessions, cursor)
        assert served == [younger_position]  # after the cursor: not passed over
    finally:
        older.close()
        younger.close()
