"""A pooled PostgreSQL connection is pinged only after it sat idle (shared.db): a busy
process pays no round trip per transaction, and a connection cut while idle is still
replaced before anyone uses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from shared import db
from tests.support import POSTGRES_ADMIN_URL, postgres_databases

pytestmark = pytest.mark.integration


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgres_databases("cp_pool", ("pool",)) as urls:
        engine = db.make_engine(urls["pool"])
        yield engine
        engine.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    seen: list[object] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        seen.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_back_in_the_pool_a_moment_ago_is_not_pinged(
    engine: Engine, pings: list[object]
) -> None:
    first = backend_pid(engine)
    assert len(pings) == 1  # a new connection: pinged once
    for _ in range(5):
        assert backend_pid(engine) == first
    assert len(pings) == 1


def test_an_idle_connection_that_was_cut_is_replaced_before_use(
    engine: Engine, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = backend_pid(engine)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (cut,))
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # as if it had sat idle a while
    replaced = backend_pid(engine)  # no error: the ping found it cut
    assert replaced != cut
    assert len(pings) >= 2
