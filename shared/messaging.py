"""dramatiq wiring: the broker, one idempotent consumer per service, dead letters.

Each consuming service has one actor, ``<service>.handle_event``, on its own queue,
``<service>.events``. The relay enqueues by actor name, so a producer never imports a
consumer's code (and the API process needs no actors declared).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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

from shared.db import SessionFactory, insert_new, table_of
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
from shared.tables import DeadLetter, InboxEvent, utcnow

log = get_logger(__name__)

EventHandler = Callable[[Session, Envelope], None]
# Acts on several events in one transaction (the coordinator's, when its queue is deep).
BatchHandler = Callable[[Session, Sequence[Envelope]], None]


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
    _processed(service, envelope)
    return True


def consume_together(
    service: str, sessions: SessionFactory, handle: BatchHandler, envelopes: Sequence[Envelope]
) -> list[bool]:
    """Act on several events in one transaction: their inbox rows, then the effect of
    those not consumed before. Returns, for each envelope, whether it was consumed now.
    If it raises, nothing of it was written."""
    with sessions() as session:
        # In one order, so two transactions inserting the same events never wait in a circle.
        unique = sorted({e.event_id: e for e in envelopes}.values(), key=lambda e: e.event_id)
        rows = [{"event_id": e.event_id, "type": e.type, "received_at": utcnow()} for e in unique]
        new = insert_new(session, table_of(InboxEvent), rows)
        fresh = [e for e in unique if e.event_id in new]
        if fresh:
            handle(session, fresh)
        session.commit()
    outcomes: list[bool] = []
    for envelope in envelopes:
        consumed = envelope.event_id in new
        new.discard(envelope.event_id)  # the same event twice in one batch: once
        outcomes.append(consumed)
        if consumed:
            _processed(service, envelope)
        else:
            _ignored_duplicate(service, envelope)
    return outcomes


@dataclass(eq=False)
class _Waiting:
    envelope: Envelope
    woken: threading.Event = field(default_factory=threading.Event)
    # Handed the lead: this thread consumes the next batch, its own event first.
    leads: bool = False
    # Consumed in a batch (False: a duplicate); None: to be consumed alone.
    consumed: bool | None = None


class GroupConsumer:
    """Worker threads' events consumed together, one transaction for the lot (group
    commit): while one thread's transaction runs, the events the other threads take
    from the queue gather, and the next thread to lead consumes them all at once. A
    quiet queue gives batches of one, consumed alone as before; a deep one gives as
    many as the worker has threads (up to ``most``), which is where a transaction's
    fixed costs (its round trips, its commit, its locks) are shared.

    A batch that fails is not retried as a batch: each of its events is consumed alone
    in its own thread, so a bad event fails (and is retried or dead-lettered) by itself.
    """

    def __init__(
        self,
        service: str,
        sessions: SessionFactory,
        handle: BatchHandler,
        most: int,
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.handle = handle
        self.most = most
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._led = False

    def consume(self, envelope: Envelope) -> bool:
        waiting = _Waiting(envelope)
        with self._lock:
            self._waiting.append(waiting)
            waiting.leads = not self._led
            self._led = True
        if not waiting.leads:
            # Woken once: when its batch has ended, or when it is handed the lead.
            waiting.woken.wait()
        if waiting.leads:
            self._lead()
        if waiting.consumed is None:
            return consume(self.service, self.sessions, self._alone, envelope)
        return waiting.consumed

    def waiting(self) -> int:
        """Events held by threads, waiting for a transaction to take them."""
        with self._lock:
            return len(self._waiting)

    def _alone(self, session: Session, envelope: Envelope) -> None:
        self.handle(session, [envelope])

    def _lead(self) -> None:
        """Consume the events waiting, this thread's own first; the next thread to lead
        takes over only once this transaction has ended."""
        with self._lock:
            batch = self._waiting[: self.most]
            del self._waiting[: self.most]
        outcomes: list[bool | None] = [None] * len(batch)
        try:
            if len(batch) == 1:  # alone, as before; its failure is this thread's own
                outcomes = [consume(self.service, self.sessions, self._alone, batch[0].envelope)]
                return
            try:
                envelopes = [waiting.envelope for waiting in batch]
                outcomes = [*consume_together(self.service, self.sessions, self.handle, envelopes)]
            except Exception as error:  # each is consumed alone, and fails alone
                log.warning(
                    "events.batch_failed",
                    service=self.service,
                    events=len(batch),
                    error=describe_error(error),
                )
        finally:
            # Even when the thread is interrupted, the others must not wait for ever.
            self._hand_on(batch, outcomes)

    def _hand_on(self, batch: list[_Waiting], outcomes: list[bool | None]) -> None:
        with self._lock:
            heir = self._waiting[0] if self._waiting else None
            if heir is None:
                self._led = False
            else:
                heir.leads = True
        for waiting, consumed in zip(batch, outcomes, strict=True):
            waiting.consumed = consumed
            waiting.woken.set()
        if heir is not None:
            heir.woken.set()


def declare_consumer(
    broker: Broker,
    service: str,
    sessions: SessionFactory,
    handle: EventHandler,
    *,
    accept_unknown_types: bool = False,
    together: GroupConsumer | None = None,
) -> dramatiq.Actor[Any, Any]:
    """Declare ``<service>.handle_event``: validate, deduplicate, act, all in one
    transaction (shared with the events other threads hold, given ``together``)."""

    def handle_event(raw: dict[str, Any]) -> None:
        envelope = decode_envelope(raw, allow_unknown=accept_unknown_types)
        if together is not None:
            together.consume(envelope)
        else:
            consume(service, sessions, handle, envelope)

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


def _processed(service: str, envelope: Envelope) -> None:
    EVENTS_CONSUMED.labels(service, "processed").inc()
    log.info(
        "event.consumed",
        service=service,
        event_id=str(envelope.event_id),
        type=envelope.type,
        # A batch's events each name their own (the one bound is the last's).
        correlation_id=envelope.correlation_id,
    )


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
