"""Catch-up: every consumer reads the feeds it subscribes to (DESIGN.md step 5).

The broker is fast delivery; the feed is the guarantee. A Redis that restarts empty,
or a relay that marked a row sent just before the broker lost it, leaves an event that
no queue will ever deliver. Each consuming service therefore reads every producer feed
it subscribes to (``shared.events.subscriptions.feeds_of``) from its own stored position
(``feed_position``), at worker start and on a timer, and hands each event it has not
consumed to the same idempotent consume path as the live actor. When nothing was lost
this costs one page read per feed.

An event that keeps failing is retried on later reads and, after the broker's number of
retries, dead-lettered like a message would be, so one poison event never holds a
consumer's feed still.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlmodel import Session, col, select

from shared.client import FeedPage, feed_params
from shared.db import SessionFactory
from shared.events import Envelope, InvalidEvent
from shared.feed import FeedCursor
from shared.messaging import describe_error, event_message
from shared.observability import get_logger
from shared.peers import Peers
from shared.tables import DeadLetter, FeedPosition, InboxEvent, as_utc, utcnow

log = get_logger(__name__)

# One page of a producer's feed: (producer, after, event types or None for all, limit).
ReadPage = Callable[[str, str, frozenset[str] | None, int], FeedPage]
Decode = Callable[[dict[str, Any]], Envelope]
Consume = Callable[[Envelope], bool]

# What a feed item carries besides the envelope itself.
_FEED_KEYS = ("position", "txid")


def _envelope_of(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in _FEED_KEYS}


def _cursor_of(item: dict[str, Any]) -> FeedCursor:
    return FeedCursor(int(item.get("txid") or 0), int(item["position"]))


class FeedReport(msgspec.Struct, kw_only=True):
    """One consumer's comparison of one producer feed with its inbox."""

    producer: str
    checked: int = 0
    missing: dict[str, int] = msgspec.field(default_factory=dict)
    dead_lettered: dict[str, int] = msgspec.field(default_factory=dict)
    repaired: int = 0
    failed: int = 0
    # Not consumed yet but younger than the grace period: most likely still queued.
    in_flight: int = 0

    @property
    def unresolved(self) -> int:
        return sum(self.missing.values()) - self.repaired


@dataclass
class _Read:
    """What one read of a feed did, for the position row."""

    cursor: FeedCursor
    recovered: int = 0
    saved_recovered: int = 0
    behind: int = 0
    stopped: bool = False
    # Stopped at an event still within the grace period, not at a failure.
    waiting_for_queue: bool = False
    failing: tuple[str, int] | None = None
    recovered_types: Counter[str] = field(default_factory=Counter)


class FeedFollower:
    """One consuming service's reader of the producer feeds it subscribes to."""

    def __init__(
        self,
        consumer: str,
        sessions: SessionFactory,
        feeds: dict[str, frozenset[str] | None],
        read_page: ReadPage,
        decode: Decode,
        consume: Consume,
        *,
        page_size: int = 500,
        attempts_before_dead_letter: int = 3,
        grace_s: float = 10.0,
    ) -> None:
        self.consumer = consumer
        self.sessions = sessions
        self.feeds = feeds
        self.read_page = read_page
        self.decode = decode
        self.consume = consume
        self.page_size = page_size
        self.attempts_before_dead_letter = max(attempts_before_dead_letter, 1)
        # A fresh event not consumed yet is most likely still in its queue (a busy clinic
        # keeps a backlog): leave it to the live actor for this long before taking it.
        self.grace = timedelta(seconds=max(grace_s, 0.0))

    # --- catch-up --------------------------------------------------------------------

    def catch_up_all(self) -> dict[str, int]:
        """Read every subscribed feed; a producer that does not answer is read next time."""
        recovered: dict[str, int] = {}
        for producer in self.feeds:
            try:
                recovered[producer] = self.catch_up(producer)
            except Exception as error:
                log.warning(
                    "feed.catch_up_failed",
                    consumer=self.consumer,
                    producer=producer,
                    error=type(error).__name__,
                )
        return recovered

    def catch_up(self, producer: str) -> int:
        """Consume every event of one feed after the stored position; returns how many
        the broker had not delivered."""
        started = datetime.now(UTC)
        read = _Read(cursor=self._position(producer))
        while not read.stopped:
            page = self.read_page(producer, str(read.cursor), self.feeds[producer], self.page_size)
            self._take_page(producer, page, read)
            if not read.stopped:
                read.cursor = max(read.cursor, FeedCursor.parse(page.next_after))
                read.behind = page.remaining
            self._save(producer, read, caught_up_at=None)
            if not read.stopped and page.remaining == 0 and len(page.items) < self.page_size:
                break
        if not read.stopped:
            self._save(producer, read, caught_up_at=started)
        elif read.waiting_for_queue:
            # Everything older than the grace period is consumed.
            self._save(producer, read, caught_up_at=started - self.grace)
        if read.recovered:
            log.warning(
                "feed.events_recovered",
                consumer=self.consumer,
                producer=producer,
                count=read.recovered,
                types=dict(read.recovered_types),
            )
        return read.recovered

    def _take_page(self, producer: str, page: FeedPage, read: _Read) -> None:
        new = self._unconsumed(page.items)
        waiting = self._dead_lettered(new)
        for index, item in enumerate(page.items):
            event_id = str(item.get("event_id"))
            if event_id in new and event_id not in waiting and self._in_flight(item):
                read.waiting_for_queue = True
            taken = (
                event_id not in new
                or event_id in waiting
                or (not read.waiting_for_queue and self._take(producer, item, read))
            )
            if not taken:
                read.behind = len(page.items) - index + page.remaining
                read.stopped = True
                return
            read.cursor = max(read.cursor, _cursor_of(item))

    def _in_flight(self, item: dict[str, Any]) -> bool:
        try:
            occurred_at = datetime.fromisoformat(str(item.get("occurred_at")))
        except ValueError:
            return False
        # Read from the producer's feed, not from a column of ours: it may come naive.
        return utcnow() - as_utc(occurred_at) < self.grace

    def _take(self, producer: str, item: dict[str, Any], read: _Read) -> bool:
        """Consume one event the broker has not delivered; False stops this read."""
        event_id = str(item.get("event_id"))
        try:
            envelope = self.decode(_envelope_of(item))
        except InvalidEvent as error:
            # It cannot become valid: dead-letter it now, as the live actor would.
            self._dead_letter(item, f"{type(error).__module__}.InvalidEvent: {error}"[:500])
            return True
        try:
            consumed = self.consume(envelope)
        except Exception as error:
            attempts = self._failed(producer, event_id, read)
            log.warning(
                "feed.event_failed",
                consumer=self.consumer,
                producer=producer,
                event_id=event_id,
                attempts=attempts,
                error=type(error).__name__,
            )
            if attempts < self.attempts_before_dead_letter:
                return False
            self._dead_letter(item, describe_error(error))
            read.failing = None
            return True
        if consumed:
            read.recovered += 1
            read.recovered_types[envelope.type] += 1
            log.warning(
                "feed.event_recovered",
                consumer=self.consumer,
                producer=producer,
                event_id=event_id,
                type=envelope.type,
            )
        return True

    # --- reconciliation ----------------------------------------------------------------

    def reconcile(self, producer: str, *, repair: bool) -> FeedReport:
        """Compare a producer's whole feed with this consumer's inbox; with ``repair``,
        consume what is missing (dead-lettered events included: a repair is a replay)."""
        report = FeedReport(producer=producer)
        missing: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        cursor = FeedCursor()
        while True:
            page = self.read_page(producer, str(cursor), self.feeds[producer], self.page_size)
            report.checked += len(page.items)
            new = self._unconsumed(page.items)
            waiting = self._dead_lettered(new)
            for item in page.items:
                event_id = str(item.get("event_id"))
                if event_id not in new:
                    continue
                if self._in_flight(item):
                    report.in_flight += 1
                    continue
                event_type = str(item.get("type"))
                missing[event_type] += 1
                if event_id in waiting:
                    dead[event_type] += 1
                if repair:
                    self._repair(producer, item, report)
            cursor = max(cursor, FeedCursor.parse(page.next_after))
            if page.remaining == 0 and len(page.items) < self.page_size:
                break
        report.missing = dict(sorted(missing.items()))
        report.dead_lettered = dict(sorted(dead.items()))
        return report

    def reconcile_all(self, *, repair: bool) -> list[FeedReport]:
        return [self.reconcile(producer, repair=repair) for producer in self.feeds]

    def _repair(self, producer: str, item: dict[str, Any], report: FeedReport) -> None:
        try:
            self.consume(self.decode(_envelope_of(item)))
        except Exception as error:
            report.failed += 1
            log.warning(
                "feed.repair_failed",
                consumer=self.consumer,
                producer=producer,
                event_id=str(item.get("event_id")),
                error=type(error).__name__,
            )
            return
        # Consumed now, or by the live actor a moment ago: either way no longer missing.
        report.repaired += 1

    # --- this consumer's rows ----------------------------------------------------------

    def _unconsumed(self, items: list[dict[str, Any]]) -> set[str]:
        ids = {str(item.get("event_id")) for item in items}
        wanted = [UUID(event_id) for event_id in ids if _is_uuid(event_id)]
        if not wanted:
            return ids
        with self.sessions() as session:
            seen = session.exec(
                select(InboxEvent.event_id).where(col(InboxEvent.event_id).in_(wanted))
            ).all()
        return ids - {str(event_id) for event_id in seen}

    def _dead_lettered(self, event_ids: set[str]) -> set[str]:
        """Events waiting in the dead-letter table for a person to replay them."""
        if not event_ids:
            return set()
        with self.sessions() as session:
            rows = session.exec(
                select(DeadLetter.event_id).where(
                    col(DeadLetter.event_id).in_(sorted(event_ids)),
                    col(DeadLetter.replayed_at).is_(None),
                )
            ).all()
        return {str(event_id) for event_id in rows}

    def _dead_letter(self, item: dict[str, Any], error: str) -> None:
        message = event_message(self.consumer, _envelope_of(item))
        with self.sessions() as session:
            session.add(
                DeadLetter(
                    message_id=message.message_id,
                    queue_name=message.queue_name,
                    actor_name=message.actor_name,
                    event_id=str(item.get("event_id"))[:64],
                    event_type=str(item.get("type"))[:100],
                    error=error,
                    message=message.asdict(),
                )
            )
            session.commit()
        log.error(
            "feed.event_dead_lettered",
            consumer=self.consumer,
            event_id=str(item.get("event_id")),
            type=str(item.get("type")),
        )

    def _position(self, producer: str) -> FeedCursor:
        with self.sessions() as session:
            row = session.get(FeedPosition, producer)
            if row is None:
                session.add(FeedPosition(producer=producer))
                session.commit()
                return FeedCursor()
            return FeedCursor.parse(row.cursor)

    def _failed(self, producer: str, event_id: str, read: _Read) -> int:
        with self.sessions() as session:
            row = session.get(FeedPosition, producer) or FeedPosition(producer=producer)
            same = row.failing_event_id == event_id
            attempts = row.failures + 1 if same else 1
        read.failing = (event_id, attempts)
        return attempts

    def _save(self, producer: str, read: _Read, *, caught_up_at: datetime | None) -> None:
        with self.sessions() as session:
            row = session.get(FeedPosition, producer) or FeedPosition(producer=producer)
            # Two readers of one feed (two worker replicas) never move it backwards.
            row.cursor = str(max(FeedCursor.parse(row.cursor), read.cursor))
            row.behind = read.behind
            row.recovered += read.recovered - read.saved_recovered
            read.saved_recovered = read.recovered
            row.failing_event_id, row.failures = read.failing or (None, 0)
            if caught_up_at is not None:
                row.caught_up_at = caught_up_at
            session.add(row)
            session.commit()


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


# --- reading feeds ---------------------------------------------------------------------


def feed_reader(peers: Peers) -> ReadPage:
    """Pages from the producers' own feeds (`GET /api/events`), read as this service:
    over HTTP when distributed, through the producers' routes in process when embedded."""

    def read(producer: str, after: str, types: frozenset[str] | None, limit: int) -> FeedPage:
        return peers.get(producer, "/api/events", FeedPage, **feed_params(after, limit, types))

    return read


# --- how far behind each consumer is ----------------------------------------------------


class FeedLag(msgspec.Struct, kw_only=True):
    producer: str
    cursor: str
    caught_up_at: datetime | None
    # Seconds since the last read that reached the head of the feed (or since the
    # position was created, if none has yet): any event older than that is consumed.
    lag_seconds: float
    lag_events: int
    recovered: int
    failing_event_id: str | None
    failures: int


def feed_lags(session: Session, now: datetime | None = None) -> list[FeedLag]:
    now = now or utcnow()
    rows = session.exec(select(FeedPosition).order_by(col(FeedPosition.producer))).all()
    return [_lag(row, now) for row in rows]


def _lag(row: FeedPosition, now: datetime) -> FeedLag:
    since = row.caught_up_at or row.created_at
    return FeedLag(
        producer=row.producer,
        cursor=row.cursor,
        caught_up_at=row.caught_up_at,
        lag_seconds=round(max((now - since).total_seconds(), 0.0), 1),
        lag_events=row.behind,
        recovered=row.recovered,
        failing_event_id=row.failing_event_id,
        failures=row.failures,
    )


class FeedLagCollector(Collector):
    """Feed lag per consumer and producer, read from the consumers' databases at scrape
    time: a worker that stopped reading shows a growing lag, not its last value."""

    def __init__(self) -> None:
        self._consumers: dict[int, tuple[str, SessionFactory]] = {}

    def watch(self, key: int, consumer: str, sessions: SessionFactory) -> None:
        self._consumers[key] = (consumer, sessions)

    def forget(self, key: int) -> None:
        self._consumers.pop(key, None)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        lag_events = GaugeMetricFamily(
            "carepath_feed_lag_events",
            "Events after a consumer's feed position not yet consumed when it last read",
            labels=["consumer", "producer"],
        )
        lag_seconds = GaugeMetricFamily(
            "carepath_feed_lag_seconds",
            "Seconds since a consumer last read a producer's feed to its head",
            labels=["consumer", "producer"],
        )
        recovered = CounterMetricFamily(
            "carepath_feed_recovered_events",
            "Events a consumer took from a feed because the broker never delivered them",
            labels=["consumer", "producer"],
        )
        for consumer, lag in self._lags():
            labels = [consumer, lag.producer]
            lag_events.add_metric(labels, lag.lag_events)
            lag_seconds.add_metric(labels, lag.lag_seconds)
            recovered.add_metric(labels, lag.recovered)
        yield from (lag_events, lag_seconds, recovered)

    def _lags(self) -> Iterable[tuple[str, FeedLag]]:
        for consumer, sessions in list(self._consumers.values()):
            try:
                with sessions() as session:
                    lags = feed_lags(session)
            except Exception:  # noqa: S112 - a database that is down is reported by /ready
                continue
            for lag in lags:
                yield consumer, lag


FEED_LAG = FeedLagCollector()
REGISTRY.register(FEED_LAG)
