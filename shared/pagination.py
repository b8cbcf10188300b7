"""Keyset pagination: a list ordered by some columns resumes after the last row's values.

An offset re-reads and can skip or repeat rows when the list changes between pages; a
keyset does neither and stays as fast on page 100 as on page 1 with an index in the
same order. The cursor a page hands out is those values, opaque to the client
(base64 of a JSON list); one that was not handed out is a 422 naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

from litestar.params import QueryParameter
from sqlalchemy import ColumnElement, literal, tuple_
from sqlmodel import Session

from shared.errors import FieldProblem

Row = TypeVar("Row")

MAX_PAGE = 200
# The ``limit`` a list route takes: how many rows one page may hold.
PageSize = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)]

# How each kind of key column travels in a cursor, and back. Key values come from rows
# read from UTCDateTime columns, so a time is already aware UTC.
_WRITE: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.isoformat,
    UUID: str,
    int: int,
    str: str,
}
_READ: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.fromisoformat,
    UUID: UUID,
    int: int,
    str: str,
}


class Keyset:
    """The order of one list: its key columns (the last one unique) and their types."""

    def __init__(self, *keys: tuple[Any, type]) -> None:
        self.columns = [column for column, _ in keys]
        self.kinds = [kind for _, kind in keys]

    def order(self) -> list[Any]:
        return list(self.columns)

    def after(self, cursor: str) -> ColumnElement[bool]:
        """Rows after the one the cursor was made from, in this order."""
        values = self.decode(cursor)
        # Typed, so each value is bound as its column stores it (SQLite compares text).
        typed = [
            literal(value, column.type) for value, column in zip(values, self.columns, strict=True)
        ]
        return tuple_(*self.columns) > tuple_(*typed)

    def page(
        self, session: Session, statement: Any, cursor: str | None, limit: int
    ) -> tuple[list[Any], str | None]:
        """One page of the statement's rows and the cursor of the next (None at the end)."""
        if cursor is not None:
            statement = statement.where(self.after(cursor))
        rows = list(session.exec(statement.order_by(*self.columns).limit(limit + 1)).all())
        page, more = rows[:limit], len(rows) > limit
        return page, (self.encode(page[-1]) if more and page else None)

    def encode(self, row: Any) -> str:
        """The cursor of the page after this row."""
        return self.encode_values(*(getattr(row, column.key) for column in self.columns))

    def encode_values(self, *values: Any) -> str:
        written = [_WRITE[kind](value) for value, kind in zip(values, self.kinds, strict=True)]
        return base64.urlsafe_b64encode(json.dumps(written).encode()).decode()

    def decode(self, cursor: str) -> Sequence[Any]:
        try:
            values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            if not isinstance(values, list) or len(values) != len(self.kinds):
                raise ValueError("not this list's cursor")
            return [_READ[kind](value) for value, kind in zip(values, self.kinds, strict=True)]
        except (ValueError, TypeError, OverflowError, binascii.Error):
            raise FieldProblem("cursor", "is not a cursor this list gave out") from None
