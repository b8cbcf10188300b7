"""Test tiers: unit (pure, always runs), integration and e2e (real PostgreSQL and Redis).

Where PostgreSQL or Redis does not answer, the tests that need them are skipped with the
reason, unless CAREPATH_REQUIRE_SERVICES=1 (CI), where a missing server fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import psycopg
import pytest
import redis

from tests.embedded import Embedded, embedded_app
from tests.support import POSTGRES_ADMIN_URL, REDIS_TEST_URL, Processes


@cache
def postgres_problem() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL does not answer at {POSTGRES_ADMIN_URL}: {type(error).__name__}"
    return None


@cache
def redis_problem() -> str | None:
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        return f"Redis does not answer at {REDIS_TEST_URL}: {type(error).__name__}"
    return None


@pytest.fixture(autouse=True)
def _real_servers(request: pytest.FixtureRequest) -> None:
    needs = request.node.get_closest_marker("integration") or request.node.get_closest_marker("e2e")
    if needs is None or request.node.get_closest_marker("embedded_only"):
        return
    problems = [p for p in (postgres_problem(), redis_problem()) if p]
    if not problems:
        return
    reason = "; ".join(problems)
    if os.environ.get("CAREPATH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"CAREPATH_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(f"needs real servers: {reason}")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """The whole embedded app (SQLite and the in-process broker), one per test module."""
    with embedded_app(tmp_path_factory.mktemp("embedded")) as app:
        yield app
