"""A service's running parts in one process: settings, database, broker, relay."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker

from shared import db, idempotency, migrations
from shared.catchup import FEED_LAG, FeedFollower, ReadPage, feed_reader
from shared.events import Envelope, decode_envelope
from shared.events.subscriptions import feeds_of
from shared.messaging import (
    BatchHandler,
    EventHandler,
    GroupConsumer,
    consume,
    declare_consumer,
    queue_sender,
)
from shared.observability import get_logger
from shared.outbox import Relay
from shared.peers import Peers, peer_over_http
from shared.settings import PlatformSettings, ServiceSettings

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

    def __init__(
        self,
        name: str,
        interval_s: float,
        work: Callable[[], object],
        *,
        first_after_s: float | None = None,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.work = work
        self.first_after_s = interval_s if first_after_s is None else first_after_s
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
        wait = self.first_after_s
        while not self._stop.wait(wait):
            wait = self.interval_s
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
    # The same, for several events in one transaction: the live consumer gathers what
    # its threads hold when the queue is deep (shared.messaging.GroupConsumer).
    handle_events: BatchHandler | None = None
    # The coordinator keeps events it does not know yet instead of dead-lettering them.
    accept_unknown_events: bool = False
    # Work a service's worker does besides consuming (the coordinator's clock).
    background: Callable[[ServiceRuntime], BackgroundTask] | None = None
    # Wiring a service adds to every runtime of it, API or worker (the coordinator's
    # live-stream notices), and Litestar plugins it adds to its app (their channel).
    on_runtime: Callable[[ServiceRuntime], None] | None = None
    plugins: Callable[[ServiceRuntime], Sequence[Any]] | None = None


@dataclass(frozen=True)
class WebSpec:
    """A service of pages for people (services/web): it holds no data and has no database;
    every page reads and writes through the other services' APIs as the signed-in person.
    `web_dir` holds its `templates/` and `static/`."""

    pages: Sequence[Any]
    web_dir: Path
    # Middleware the pages need, made from the platform settings (the sign-in limit).
    middleware: Callable[[PlatformSettings], Sequence[Any]] | None = None


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
            max_backoff_s=settings.platform.relay_max_backoff_s,
        )
        # Distributed: the other services' APIs; the embedded app points this at itself.
        self.peers = Peers(peer_over_http(settings, spec.name))
        # Every session of this service wakes this relay after committing an event, and
        # reads the other services through these peers (shared.peers).
        self.sessions.configure(info={"relay": self.relay, "peers": self.peers})
        self._background: BackgroundTask | None = None
        self.read_feed_page: ReadPage = feed_reader(self.peers)
        if spec.handle_event is not None:
            FEED_LAG.watch(id(self), spec.name, self.sessions)
        if spec.on_runtime is not None:
            spec.on_runtime(self)

    @property
    def name(self) -> str:
        return self.spec.name

    def migrate(self) -> None:
        migrations.upgrade(self.spec.migrations_dir, self.settings.database_url)

    @property
    def consumes(self) -> bool:
        return self.spec.handle_event is not None

    def decode(self, raw: dict[str, Any]) -> Envelope:
        return decode_envelope(raw, allow_unknown=self.spec.accept_unknown_events)

    def consume(self, envelope: Envelope) -> bool:
        """The one consume path: the live actor's, the catch-up's and the repair's."""
        assert self.spec.handle_event is not None
        return consume(self.spec.name, self.sessions, self.spec.handle_event, envelope)

    def follower(self) -> FeedFollower:
        platform = self.settings.platform
        return FeedFollower(
            self.spec.name,
            self.sessions,
            feeds_of(self.spec.name),
            self.read_feed_page,
            self.decode,
            self.consume,
            attempts_before_dead_letter=platform.max_retries + 1,
            grace_s=platform.catchup_grace_s,
        )

    def declare_consumer(self) -> None:
        if self.spec.handle_event is None:
            return
        together = None
        if self.spec.handle_events is not None:
            most = self.settings.platform.event_batch
            together = GroupConsumer(self.spec.name, self.sessions, self.spec.handle_events, most)
        declare_consumer(
            self.broker,
            self.spec.name,
            self.sessions,
            self.spec.handle_event,
            accept_unknown_types=self.spec.accept_unknown_events,
            together=together,
        )

    def start_background(self) -> None:
        if self._background is not None:
            return
        tasks: list[BackgroundTask] = []
        interval = self.settings.platform.catchup_interval_s
        if self.consumes and interval > 0:
            follower = self.follower()
            # At start (a restarted worker first reads what it missed), then on the timer.
            tasks.append(
                PeriodicTask(
                    f"{self.name}-catch-up",
                    interval,
                    follower.catch_up_all,
                    first_after_s=min(interval, 1.0),
                )
            )
        sweep_s = self.settings.platform.idempotency_sweep_interval_s
        if sweep_s > 0:
            tasks.append(
                PeriodicTask(
                    f"{self.name}-idempotency-sweep",
                    sweep_s,
                    partial(idempotency.sweep, self.sessions),
                )
            )
        if self.spec.background is not None:
            tasks.append(self.spec.background(self))
        self._background = TaskGroup(*tasks)
        self._background.start()

    def check_database(self) -> None:
        db.ping(self.engine)

    def close(self) -> None:
        FEED_LAG.forget(id(self))
        if self._background is not None:
            self._background.stop()
            self._background = None
        self.relay.stop()
        self.engine.dispose()


def check_broker(broker: Broker) -> None:
    if isinstance(broker, RedisBroker):
        broker.client.ping()
