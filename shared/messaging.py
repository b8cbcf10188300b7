"""dramatiq wiring: the broker, one idempotent consumer per service, dead letters.

Each consuming service has one actor, ``<service>.handle_event``, on its own queue,
``<service>.events``. The relay enqueues by actor name, so a producer never imports a
consumer's code (and the API process needs no actors declared).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq import Broker, Message, Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from shared.db import SessionFactory
from shared.events import Envelope, InvalidEvent, decode_envelope
from shared.events.subscriptions import actor_name, queue_name
from shared.observability import (
    EVENTS_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_RETRIED,
    bind_correlation_id,
    get_logger,
)
from shared.settings import BrokerKind, PlatformSettings
from shared.tables import DeadLetter, InboxEvent

log = get_logger(__name__)

EventHandler = Callable[[Session, Envelope], None]


class DeadLetterRecorder(Middleware):
    """Keeps every dead-lettered message in the consuming service's own database.

    dramatiq's dead-letter queue lives in Redis with a time to live; the table is the
    durable record that the admin dashboard lists and the replay command reads.
    """

    def __init__(self) -> None:
        self._sinks: dict[str, SessionFactory] = {}

    def register(self, queue: str, sessions: SessionFactory) -> None:
        self._sinks[queue] = sessions

    def before_nack(self, broker: Broker, message: Any) -> None:
        MESSAGES_DEAD_LETTERED.labels(message.queue_name).inc()
        sessions = self._sinks.get(message.queue_name)
        if sessions is None:
            return
        raw = message.args[0] if message.args else None
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_type = raw.get("type") if isinstance(raw, dict) else None
        with sessions() as session:
            recorded = select(DeadLetter).where(DeadLetter.message_id == message.message_id)
            if session.exec(recorded).first() is not None:
                return
            if event_id and _waiting_dead_letter(session, str(event_id), message.queue_name):
                return  # the feed catch-up dead-lettered this event already
            session.add(
                DeadLetter(
                    message_id=message.message_id,
                    queue_name=message.queue_name,
                    actor_name=message.actor_name,
                    event_id=str(event_id)[:64] if event_id else None,
                    event_type=str(event_type)[:100] if event_type else None,
                    error=message.options.get("carepath_error", "unknown error"),
                    message=message.asdict(),
                )
            )
            session.commit()
        log.error(
            "message.dead_lettered",
            queue=message.queue_name,
            message_id=message.message_id,
            event_id=event_id,
        )


class FailureNotes(Middleware):
    """Notes why a message failed, and counts retries.

    Sits after Retries, so ``message.failed`` is already decided. The note is the
    error's type and the first line of its message: a database error's later lines
    quote the row's values, which may be patient data.
    """

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None:
            return
        message.options["carepath_error"] = describe_error(exception)
        if not message.failed:
            MESSAGES_RETRIED.labels(message.queue_name).inc()


def _waiting_dead_letter(session: Session, event_id: str, queue: str) -> bool:
    statement = select(DeadLetter.id).where(
        DeadLetter.event_id == event_id,
        DeadLetter.queue_name == queue,
        col(DeadLetter.replayed_at).is_(None),
    )
    return session.exec(statement).first() is not None


def describe_error(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    first = lines[0] if lines else ""
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    return f"{kind}: {first}"[:500]


def make_broker(settings: PlatformSettings) -> Broker:
    """The broker for this process, with an explicit, ordered middleware list."""
    middleware: list[Middleware] = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        FailureNotes(),
        DeadLetterRecorder(),
    ]
    broker: Broker
    if settings.broker is BrokerKind.redis:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url,
            namespace=settings.redis_namespace,
            middleware=middleware,
            heartbeat_timeout=settings.heartbeat_timeout_ms,
            maintenance_chance=settings.maintenance_chance,
            dead_message_ttl=settings.dead_message_ttl_ms,
            # An unreachable Redis must fail fast so the relay can try again later.
            socket_connect_timeout=2,
            socket_timeout=10,
        )
    else:
        broker = StubBroker(middleware=middleware)
    return broker


def dead_letter_recorder(broker: Broker) -> DeadLetterRecorder:
    for middleware in broker.middleware:
        if isinstance(middleware, DeadLetterRecorder):
            return middleware
    raise LookupError("broker was not built by make_broker")


def queue_sender(broker: Broker) -> Callable[[str, dict[str, Any]], None]:
    """The relay's way to hand an envelope to a consuming service's actor."""

    def send(consumer: str, envelope: dict[str, Any]) -> None:
        broker.enqueue(event_message(consumer, envelope))

    return send


def consume(
    service: str, sessions: SessionFactory, handle: EventHandler, envelope: Envelope
) -> bool:
    """Act on an event once: the one consume path of the live actor and the feed catch-up.

    The inbox row and the effect commit together; returns False when the event had
    already been consumed (a redelivery, or the other path got there first).
    """
    bind_correlation_id(envelope.correlation_id)
    with sessions() as session:
        # Insert the inbox row first: a concurrent redelivery then waits on its key
        # and fails at commit instead of acting twice.
        session.add(InboxEvent(event_id=envelope.event_id, type=envelope.type))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            _ignored_duplicate(service, envelope)
            return False
        handle(session, envelope)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if _already_consumed(sessions, envelope):
                _ignored_duplicate(service, envelope)
                return False
            raise
    EVENTS_CONSUMED.labels(service, "processed").inc()
    log.info("event.consumed", service=service, event_id=str(envelope.event_id), type=envelope.type)
    return True


def declare_consumer(
    broker: Broker,
    service: str,
    sessions: SessionFactory,
    handle: EventHandler,
    *,
    accept_unknown_types: bool = False,
) -> dramatiq.Actor[Any, Any]:
    """Declare ``<service>.handle_event``: validate, deduplicate, act, all in one transaction."""

    def handle_event(raw: dict[str, Any]) -> None:
        consume(service, sessions, handle, decode_envelope(raw, allow_unknown=accept_unknown_types))

    queue = queue_name(service)
    dead_letter_recorder(broker).register(queue, sessions)
    declare = dramatiq.actor(
        actor_name=actor_name(service),
        queue_name=queue,
        broker=broker,
        # A message that cannot be valid will not become valid: dead-letter it at once.
        throws=(InvalidEvent,),
    )
    consumer: dramatiq.Actor[Any, Any] = declare(handle_event)
    return consumer


def _ignored_duplicate(service: str, envelope: Envelope) -> None:
    EVENTS_CONSUMED.labels(service, "duplicate").inc()
    log.info("event.duplicate_ignored", service=service, event_id=str(envelope.event_id))


def _already_consumed(sessions: SessionFactory, envelope: Envelope) -> bool:
    with sessions() as session:
        return session.get(InboxEvent, envelope.event_id) is not None


def event_message(consumer: str, envelope: dict[str, Any]) -> Message[Any]:
    """The message that carries an envelope to a consuming service's actor."""
    return Message(
        queue_name=queue_name(consumer),
        actor_name=actor_name(consumer),
        args=(envelope,),
        kwargs={},
        options={},
    )


class InProcessWorkers:
    """dramatiq worker threads inside this process (the embedded mode, and `carepath worker`)."""

    def __init__(self, broker: Broker, threads: int, poll_ms: int = 100) -> None:
        self.broker = broker
        self.threads = threads
        self.poll_ms = poll_ms
        self._worker: dramatiq.Worker | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = dramatiq.Worker(
                    self.broker, worker_threads=self.threads, worker_timeout=self.poll_ms
                )
                self._worker.start()

    def stop(self, timeout_ms: int = 10_000) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.stop(timeout=timeout_ms)
                self._worker = None


def queue_depth(broker: Broker, service: str) -> int:
    """Messages waiting in a consuming service's queue (not yet taken by a worker)."""
    queue = queue_name(service)
    if isinstance(broker, RedisBroker):
        return int(broker.client.llen(f"{broker.namespace}:{queue}"))
    if isinstance(broker, StubBroker):
        return broker.queues[queue].qsize() if queue in broker.queues else 0
    return 0
