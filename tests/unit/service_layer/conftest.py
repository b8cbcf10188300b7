"""The service-layer tier: commands called directly with a unit of work over an
in-memory-fast SQLite store (a copy of one migrated file per test), no HTTP, no broker;
as cosmicpython's test_handlers, but on the real schema."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlmodel import Session, col, select

from shared import migrations
from shared.audit import AccessTrail
from shared.auth import Role, User
from shared.db import make_engine, make_session_factory
from shared.events import Actor, Envelope
from shared.events.catalogue import Event
from shared.tables import AuditRecord, OutboxEvent
from shared.uow import UnitOfWork

SERVICES_DIR = Path(__file__).resolve().parents[3] / "services"


class Store:
    """One service's database for one test, and a unit of work per command."""

    def __init__(self, service: str, path: Path) -> None:
        self.service = service
        self.engine = make_engine(f"sqlite:///{path}")
        self.sessions = make_session_factory(self.engine)
        self._open: list[Session] = []

    def uow(self, user: User) -> UnitOfWork:
        session = self.sessions()
        self._open.append(session)
        actor = Actor(user_id=user.id, role=user.role.value)
        trail = AccessTrail(user_id=user.id, role=user.role.value, path="/test")
        return UnitOfWork(session, service=self.service, actor=actor, trail=trail)

    def events(self) -> list[Event]:
        """Every event the service has committed to its outbox, in order, typed."""
        self.end_requests()
        with self.sessions() as session:
            rows = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.position))).all()
            return [msgspec.convert(row.envelope, Envelope).event() for row in rows]

    def audit(self) -> list[tuple[str, str, str | None]]:
        self.end_requests()
        with self.sessions() as session:
            rows = session.exec(select(AuditRecord).order_by(col(AuditRecord.id))).all()
            return [(row.action, row.entity_type, row.detail) for row in rows]

    def rows(self, table: type[Any]) -> list[Any]:
        self.end_requests()
        with self.sessions() as session:
            return list(session.exec(select(table)).all())

    def end_requests(self) -> None:
        """Close the commands' sessions, as the end of each request does: a session that
        read after its commit would otherwise hold SQLite's write lock."""
        for session in self._open:
            session.close()
        self._open.clear()

    def close(self) -> None:
        self.end_requests()
        self.engine.dispose()


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """One migrated SQLite file per service, made once for the whole tier."""
    made: dict[str, Path] = {}

    def template(service: str) -> Path:
        if service not in made:
            path = tmp_path_factory.mktemp("templates") / f"{service}.db"
            migrations.upgrade(SERVICES_DIR / service / "migrations", f"sqlite:///{path}")
            made[service] = path
        return made[service]

    return template


@pytest.fixture
def store(migrated: Callable[[str], Path], tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    opened: list[Store] = []

    def open_store(service: str) -> Store:
        path = tmp_path / f"{service}.db"
        shutil.copyfile(migrated(service), path)
        opened.append(Store(service, path))
        return opened[-1]

    yield open_store
    for each in opened:
        each.close()


def user(role: Role, user_id: str | None = None) -> User:
    return User(id=user_id or f"{role.value}-1", role=role)
