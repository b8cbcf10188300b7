"""A service's running parts in one process: settings, database, broker, relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker

from shared import db, migrations
from shared.messaging import EventHandler, declare_consumer, queue_sender
from shared.outbox import Relay
from shared.settings import ServiceSettings


@dataclass(frozen=True)
class ServiceSpec:
    """What makes a service itself; everything else is the shared platform."""

    name: str
    route_handlers: Sequence[Any]
    migrations_dir: Path
    handle_event: EventHandler | None = None
    # The coordinator keeps events it does not know yet instead of dead-lettering them.
    accept_unknown_events: bool = False


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

    def check_database(self) -> None:
        db.ping(self.engine)

    def close(self) -> None:
        self.relay.stop()
        self.engine.dispose()


def check_broker(broker: Broker) -> None:
    if isinstance(broker, RedisBroker):
        broker.client.ping()
