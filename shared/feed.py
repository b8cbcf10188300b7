"""A service's event feed: its outbox in commit order, after a cursor (DESIGN.md step 5).

PostgreSQL hands out outbox positions when a row is inserted, not when it commits, so a
row with a lower position can become visible after a higher one has been read: a feed
that served "position > last read" would pass over it for good. Each row records the
transaction that wrote it (``txid``), the feed orders by (txid, position), and it serves
only rows whose transaction is older than every transaction still in flight
(``pg_snapshot_xmin``). Every transaction that can still commit has a txid at or above
that horizon, so nothing can later appear behind a cursor already handed out.

We chose the horizon over re-reading a window behind the cursor because it is exact: a
window is only as safe as the longest transaction is short. Its cost is latency: one
long transaction anywhere on the server holds the feed back (never loses from it).

SQLite has one writer at a time (``BEGIN IMMEDIATE``), so there positions are commit
order already; every row's txid is 0 and the same query serves it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sqlalchemy import BigInteger, ColumnElement, Text, cast, func, literal, text, tuple_
from sqlmodel import Session, col, select

from shared.tables import OutboxEvent

CURSOR_PATTERN = r"^[0-9]{1,19}(\.[0-9]{1,19})?$"
_CURSOR = re.compile(CURSOR_PATTERN)


class FeedCursor(NamedTuple):
    """Where a reader stands in a feed; written ``txid.position``."""

    txid: int = 0
    position: int = 0

    @classmethod
    def parse(cls, value: str | int) -> FeedCursor:
        """Read a cursor; a bare position (the feed's first form) means txid 0."""
        text_value = str(value)
        if not _CURSOR.match(text_value):
            raise ValueError(f"not a feed cursor: {text_value[:40]!r}")
        txid, _, position = (
            text_value.rpartition(".") if "." in text_value else ("0", "", text_value)
        )
        return cls(int(txid), int(position))

    @classmethod
    def of(cls, row: OutboxEvent) -> FeedCursor:
        return cls(row.txid, row.position or 0)

    def __str__(self) -> str:
        return f"{self.txid}.{self.position}"


START = FeedCursor()


def writing_transaction(session: Session) -> ColumnElement[int] | int:
    """What an outbox row's txid is set to at insert."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(cast(func.pg_current_xact_id(), Text), BigInteger)
    return 0


def _settled(session: Session) -> ColumnElement[bool]:
    """Rows no transaction still in flight can come before: the horizon, taken once."""
    if session.get_bind().dialect.name == "postgresql":
        horizon = session.exec(  # type: ignore[call-overload]
            text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        ).one()[0]
        return col(OutboxEvent.txid) < int(horizon)
    return literal(True)


class FeedSlice(NamedTuple):
    rows: list[OutboxEvent]
    next_after: FeedCursor
    # Settled rows (of the asked types) after next_after: what is left to read.
    remaining: int


def read_feed(
    session: Session, after: FeedCursor, limit: int, types: frozenset[str] | None = None
) -> FeedSlice:
    """The service's settled events after a cursor, in commit order."""
    settled = _settled(session)
    wanted: list[ColumnElement[bool]] = [settled]
    if types is not None:
        wanted.append(col(OutboxEvent.type).in_(sorted(types)))
    rows = list(
        session.exec(
            select(OutboxEvent)
            .where(*wanted, _after(after))
            .order_by(col(OutboxEvent.txid), col(OutboxEvent.position))
            .limit(limit)
        ).all()
    )
    if len(rows) < limit:
        # The whole settled feed was read: move past rows of other types too, so the
        # next read does not scan them again.
        head = session.exec(
            select(OutboxEvent.txid, OutboxEvent.position)
            .where(settled)
            .order_by(col(OutboxEvent.txid).desc(), col(OutboxEvent.position).desc())
            .limit(1)
        ).first()
        next_after = max(after, FeedCursor(head[0], head[1] or 0)) if head else after
        return FeedSlice(rows, next_after, remaining=0)
    next_after = FeedCursor.of(rows[-1])
    remaining = session.exec(
        select(func.count()).select_from(OutboxEvent).where(*wanted, _after(next_after))
    ).one()
    return FeedSlice(rows, next_after, int(remaining))


def _after(cursor: FeedCursor) -> ColumnElement[bool]:
    return tuple_(col(OutboxEvent.txid), col(OutboxEvent.position)) > tuple_(
        literal(cursor.txid), literal(cursor.position)
    )
