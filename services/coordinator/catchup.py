"""Catching up from the producers' feeds (DESIGN.md, "How an event travels", step 5).

A message can be lost between a producer and the coordinator (a Redis that forgot, an
in-memory broker that stopped). Each producer serves its outbox in order at
`GET /api/events?after=`; the coordinator reads every feed from where it last stopped
and folds in any event it never received. Events it already has are skipped by the
inbox, so this costs one page read per producer when nothing was lost.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from services.coordinator.handlers import handle_event
from services.coordinator.models import FeedCursor
from shared.auth import Role, issue_token
from shared.client import CarepathClient
from shared.events import decode_envelope
from shared.observability import get_logger
from shared.runtime import PeriodicTask, ServiceRuntime
from shared.tables import InboxEvent

log = get_logger(__name__)

PRODUCERS = ("referrals", "infusions", "therapy")
PAGE = 500


def catch_up(runtime: ServiceRuntime, producer: str, client: CarepathClient) -> int:
    """Read one producer's feed from the stored cursor; returns the events recovered."""
    recovered = 0
    while True:
        with runtime.sessions() as session:
            cursor = session.get(FeedCursor, producer) or FeedCursor(producer=producer)
            after = cursor.position
        page = client.events(after=after, limit=PAGE)
        if not page.items:
            return recovered
        for item in page.items:
            recovered += _fold_in(runtime, item)
        with runtime.sessions() as session:
            cursor = session.get(FeedCursor, producer) or FeedCursor(producer=producer)
            cursor.position = max(cursor.position, page.next_after)
            cursor.read_at = datetime.now(UTC)
            session.add(cursor)
            session.commit()
        if len(page.items) < PAGE:
            return recovered


def _fold_in(runtime: ServiceRuntime, item: dict[str, object]) -> int:
    envelope = decode_envelope(item, allow_unknown=True)
    with runtime.sessions() as session:
        if session.get(InboxEvent, envelope.event_id) is not None:
            return 0
        session.add(InboxEvent(event_id=envelope.event_id, type=envelope.type))
        try:
            session.flush()
        except IntegrityError:  # the live consumer took it a moment ago
            session.rollback()
            return 0
        handle_event(session, envelope)
        session.commit()
    log.warning(
        "feed.event_recovered",
        producer=envelope.producer,
        event_id=str(envelope.event_id),
        type=envelope.type,
    )
    return 1


def catch_up_all(runtime: ServiceRuntime) -> None:
    platform = runtime.settings.platform
    token = issue_token(platform, "coordinator", Role.service)
    for producer in PRODUCERS:
        try:
            with CarepathClient(runtime.settings.url_of(producer), token, timeout=10) as client:
                catch_up(runtime, producer, client)
        except Exception as error:  # a producer that is down is read next time
            log.warning("feed.catch_up_failed", producer=producer, error=type(error).__name__)


def feed_catch_up(runtime: ServiceRuntime) -> PeriodicTask:
    return PeriodicTask(
        "coordinator-catch-up",
        runtime.settings.platform.catchup_interval_s,
        lambda: catch_up_all(runtime),
    )
