"""Engines and sessions: SQLite for the embedded mode, PostgreSQL when distributed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from litestar.exceptions import NotFoundException
from sqlalchemy import Table, event, exc, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, SQLModel, create_engine, select
from sqlmodel.sql.expression import SelectOfScalar


class CarepathSession(Session):
    """A session whose commit a request can hold (shared.idempotency).

    While held, ``commit()`` only flushes: the command's rows, its outbox events and its
    audit stay in the open transaction until the request's stored answer is written
    beside them, and ``release_commit`` commits all of it at once. The hold is here, not
    in the unit of work, so a route that commits its session directly is held too.
    """

    def hold_commit(self) -> None:
        self.info[_HELD] = True

    def release_commit(self) -> None:
        self.info.pop(_HELD, None)

    @property
    def commit_held(self) -> bool:
        return bool(self.info.get(_HELD))

    def commit(self) -> None:
        if self.commit_held:
            self.flush()
            return
        super().commit()


_HELD = "commit_held"
SessionFactory = sessionmaker[Session]

Row = TypeVar("Row", bound=SQLModel)


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# JSON columns (pathway documents of ~33 KB, stored events, idempotent answers) written
# and read with msgspec rather than the standard library: several times faster, the same
# JSON values, and the worker writes a whole pathway document on every event.
JSON_CODEC: dict[str, Any] = {
    "json_serializer": _json_text,
    "json_deserializer": msgspec.json.decode,
}


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    # Sessions in UTC, whatever the server's or database's default: dates taken from
    # timestamps (days waiting) must not shift with the server's zone.
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        connect_args={"options": "-c TimeZone=UTC"},
        **JSON_CODEC,
    )
    _ping_when_idle(engine)
    return engine


# A connection given back this recently is taken to be alive, so a busy worker or API
# pays no ping (a round trip before every transaction: about one in nine of an event's).
# One that sat idle longer, which a restart or a failover may have cut, is pinged before
# it is handed out, as pool_pre_ping does. The risk: a connection cut within this second
# of its last use fails its next transaction (a retried message, or one 500) instead of
# being replaced.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _note_return(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool discards the connection and checks out another (up to 3 times).
            raise exc.DisconnectionError("the connection did not answer a ping") from error


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, **JSON_CODEC
    )

    # The API and the worker threads write the same file at once: WAL lets readers run
    # beside the writer, and the busy timeout makes a writer wait instead of failing.
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # pysqlite's own transaction handling defers BEGIN until the first write, so two
    # writers can both read and then deadlock on upgrade; BEGIN IMMEDIATE takes the
    # write lock up front and the busy timeout queues the second writer.
    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine) -> SessionFactory:
    # expire_on_commit=False: objects stay readable after commit, for the response.
    return sessionmaker(bind=engine, class_=CarepathSession, expire_on_commit=False)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def lock_for_transaction(session: Session, *keys: UUID) -> None:
    """Serialise transactions about one thing (e.g. one patient) until commit.

    PostgreSQL takes a transaction-scoped advisory lock per key; SQLite needs nothing,
    since every write transaction there already begins with the database's write lock.
    Several keys are taken in one statement and always in the same order, so two
    transactions that each lock several never wait for each other in a circle.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or not keys:
        return
    signed = sorted({int.from_bytes(key.bytes[:8], "big", signed=True) for key in keys})
    # unnest hands the keys over in the array's order, one lock call each.
    session.execute(
        text("SELECT pg_advisory_xact_lock(key) FROM unnest(CAST(:keys AS bigint[])) AS key"),
        {"keys": signed},
    )


def table_of(model: type[SQLModel]) -> Table:
    """A model's table, for Core statements on a hot path (SQLModel does not type it)."""
    table: Table = getattr(model, "__table__")  # noqa: B009 - untyped on SQLModel
    return table


def insert_new(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> set[Any]:
    """Insert the rows whose primary key is not there yet, in one statement, and return
    the keys inserted. A key another transaction is inserting waits for that one to end:
    its commit makes the row here a no-op, its rollback lets this one in."""
    if not rows:
        return set()
    (key,) = table.primary_key.columns
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values(list(rows)).on_conflict_do_nothing().returning(key)
    return set(session.scalars(statement))


# --- what every repository does -------------------------------------------------------


def load(session: Session, table: type[Row], key: Any, *, lock: bool = False) -> Row | None:
    """A row by its key. Locked, two writers of one row take turns until commit, and the
    second sees the first one's change (a 409, not a second transition)."""
    return session.get(table, key, with_for_update=lock)


def load_or_404(
    session: Session, table: type[Row], key: Any, what: str, *, lock: bool = False
) -> Row:
    """As ``load``; a missing row is the request's 404 ("no infusion course <id>")."""
    found = load(session, table, key, lock=lock)
    if found is None:
        raise NotFoundException(f"no {what} {key}")
    return found


def rows(session: Session, table: type[Row], *where: Any, order_by: Any) -> Sequence[Row]:
    """The rows that match, in order (a course's sessions, a session's vitals)."""
    return session.exec(select(table).where(*where).order_by(order_by)).all()


def first_row(session: Session, table: type[Row], *where: Any, order_by: Any) -> Row | None:
    """The first row that matches in that order (the latest assessment, say)."""
    return session.exec(select(table).where(*where).order_by(order_by)).first()


def where_given(
    statement: SelectOfScalar[Row], *criteria: tuple[Any, object | None]
) -> SelectOfScalar[Row]:
    """A list's filters: each (column, value) narrows the query only if a value is given."""
    for column, value in criteria:
        if value is not None:
            statement = statement.where(column == value)
    return statement
