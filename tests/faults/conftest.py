"""Fixtures of the fault suite (issue 10): the test's own Redis, databases and processes.

These tests need PostgreSQL and the redis-server binary, never the machine's shared
Redis: each starts a redis-server of its own on a free loopback port. Where either is
missing they are skipped with the reason, unless CAREPATH_REQUIRE_SERVICES=1 (CI), where
that fails them, as in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres_problem
from tests.faults.harness import (
    FIGURES,
    PrivateRedis,
    System,
    copied_databases,
    migrated_templates,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: injects a fault into the whole system run as processes (issue 10)",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault suite: lost, duplicated, time to recover")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _problem() -> str | None:
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return "the redis-server binary is not installed"
    return postgres_problem()


def _require_servers() -> None:
    problem = _problem()
    if problem is None:
        return
    if os.environ.get("CAREPATH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"CAREPATH_REQUIRE_SERVICES=1 but {problem}")
    pytest.skip(f"the fault suite needs PostgreSQL and redis-server: {problem}")


@pytest.fixture(autouse=True)
def _fault_servers() -> None:
    _require_servers()


@pytest.fixture(scope="session")
def database_templates() -> Iterator[dict[str, str]]:
    _require_servers()  # session-scoped: set up before the autouse check runs
    with migrated_templates() as templates:
        yield templates


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def system(
    database_templates: dict[str, str], private_redis: PrivateRedis, tmp_path: Path
) -> Iterator[System]:
    """The test's own databases (migrated), and a System ready to start its processes;
    every process is stopped at the end."""
    with copied_databases(database_templates) as databases:
        running = System(databases, private_redis, tmp_path)
        try:
            yield running
        finally:
            running.stop_all()


@pytest.fixture
def emit(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print past pytest's capture, so the figures show in CI's output."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}", flush=True)

    return write
