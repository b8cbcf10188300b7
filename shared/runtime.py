"""A service's running parts in one process: settings, database, broker, relay."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker

from shared import db, migrations
from shared.messaging import EventHandler, declare_consumer, queue_sender
from shared.observability import get_logger
from shared.outbox import Relay
from shared.settings import ServiceSettings

log = get_logger(__name__)


class BackgroundTask(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class TaskGroup:
    """Several background tasks started and stopped as one."""

    def __init__(self, *tasks: BackgroundTask) -> None:
        self.tasks = tasks

    def start(self) -> None:
        for task in self.tasks:
            task.start()

    def stop(self) -> None:
        for task in self.tasks:
            task.stop()


class PeriodicTask:
    """Runs a function every ``interval_s`` seconds on its own thread until stopped."""

    def __init__(self, name: str, interval_s: float, work: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.work = work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.work()
            except Exception as error:  # the next round tries again
                log.warning("background.failed", task=self.name, error=type(error).__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """What makes a service itself; everything else is the shared platform."""

    name: str
    route_handlers: Sequence[Any]
    migrations_dir: Path
    handle_event: EventHandler | None = None
    # The coordinator keeps events it does not know yet instead of dead-lettering them.
    accept_unknown_events: bool = False
    # Work a service's worker does besides consuming (the coordinator's feed catch-up).
    background: Callable[[ServiceRuntime], BackgroundTask] | None = None
    # Server-rendered pages (the coordinator's dashboard), mounted once at the root, with
    # the folder holding their `templates/` and `static/`.
    pages: Sequence[Any] = ()
    web_dir: Path | None = None


class ServiceRuntime:
    def __init__(self, spec: ServiceSpec, settings: ServiceSettings, broker: Broker) -> None:
        self.spec = spec
        self.settings = settings
        self.broker = broker
        self.engine = db.make_engine(settings.database_url)
        self.sessions = db.make_session_factory(self.engine)
        self.relay = Relay(
            spec.name,
            self.sessions,
            queue_sender(broker),
            interval_s=settings.platform.relay_interval_s,
        )
        # Every session of this service wakes this relay after committing an event.
        self.sessions.configure(info={"relay": self.relay})
        self._background: BackgroundTask | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def migrate(self) -> None:
        migrations.upgrade(self.spec.migrations_dir, self.settings.database_url)

    def declare_consumer(self) -> None:
        if self.spec.handle_event is not None:
            declare_consumer(
                self.broker,
                self.spec.name,
                self.sessions,
                self.spec.handle_event,
                accept_unknown_types=self.spec.accept_unknown_events,
            )

    def start_background(self) -> None:
        if self.spec.background is not None and self._background is None:
            self._background = self.spec.background(self)
            self._background.start()

    def check_database(self) -> None:
        db.ping(self.engine)

    def close(self) -> None:
        if self._background is not None:
            self._background.stop()
            self._background = None
        self.relay.stop()
        self.engine.dispose()


def check_broker(broker: Broker) -> None:
    if isinstance(broker, RedisBroker):
        broker.client.ping()
