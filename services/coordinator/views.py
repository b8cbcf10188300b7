"""The coordinator's rows as its API answers them, and the live stream of summaries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from uuid import UUID

import msgspec
from litestar.channels import ChannelsPlugin
from litestar.concurrency import sync_to_thread
from litestar.response import ServerSentEventMessage
from sqlmodel import col

from services.coordinator import domain, repository
from services.coordinator.domain import ReviewDue
from services.coordinator.live import WakeUps, channel_of, wake_ups
from services.coordinator.models import MdtReview, PathwayAlert, PathwayRow
from services.coordinator.schemas import (
    AlertRow,
    NameStatus,
    PathwaySummary,
    ReviewRead,
    WorklistItem,
)
from shared.pagination import Keyset
from shared.runtime import ServiceRuntime
from shared.tables import as_utc, utcnow

MAX_PAGE = 200


def summary(
    row: PathwayRow, open_alerts: dict[UUID, repository.OpenAlerts], now: datetime
) -> PathwaySummary:
    alerts = open_alerts.get(row.patient_id) or repository.OpenAlerts()
    return PathwaySummary(
        patient_id=row.patient_id,
        stage=row.stage,
        stage_since=row.stage_since,
        days_in_stage=(now - row.stage_since).days,
        teams=[t for t in row.teams.split(",") if t],
        open_alerts=row.open_alerts,
        alerts_by_severity=alerts.by_severity,
        waiting=domain.waiting_state(alerts.kinds),
    )


def pathway_with_name(document: bytes, name: str | None, status: NameStatus) -> bytes:
    """The stored pathway's JSON object with the name this reader was given (or why not)
    added as two more members: `PathwayRead`, without decoding 33 KB to encode it again."""
    body = document.strip()
    if not body.endswith(b"}"):
        raise ValueError("a stored pathway is a JSON object")
    added = msgspec.json.encode({"patient_name": name, "name_status": status})
    members = body[:-1].rstrip()
    return members + (b"" if members == b"{" else b",") + added[1:]


def review_read(row: MdtReview) -> ReviewRead:
    return ReviewRead(
        id=str(row.id),
        patient_id=row.patient_id,
        reviewed_at=row.reviewed_at,
        decision=row.decision,
        attendees=list(row.attendees),
        reviewed_by=row.reviewed_by,
        referral_id=str(row.referral_id) if row.referral_id else None,
        notes=row.notes,
    )


def worklist_item(row: PathwayRow, now: datetime) -> WorklistItem:
    review = msgspec.convert(row.document["review_due"], ReviewDue, strict=False)
    return WorklistItem(
        patient_id=row.patient_id,
        stage=row.stage,
        review_due=review.due,
        overdue=review.due < now,
        severity=review.severity,
        reason=review.reason,
        open_alerts=row.open_alerts,
    )


def alert_row(alert: PathwayAlert) -> AlertRow:
    return msgspec.convert(alert, AlertRow, from_attributes=True)


# --- the live stream -------------------------------------------------------------------

# How often a stream with no wake-ups looks for changes, how far back it looks again (a
# transaction that stamped its row earlier may commit later), and how long one lasts.
STREAM_POLL = timedelta(seconds=1)
STREAM_OVERLAP = timedelta(seconds=10)
STREAM_LIFETIME = timedelta(minutes=5)
HEARTBEAT = timedelta(seconds=15)
# A stream event's id: the time of the change it carries, to resume after.
STREAM_POSITION = Keyset((col(PathwayRow.updated_at), datetime))


def stream_start(last_event_id: str | None) -> datetime:
    """Where a stream starts: after the last event the client saw, or a look-back."""
    if last_event_id:
        (since,) = STREAM_POSITION.decode(last_event_id)
        # The client sends the id back: one written by hand may carry no time zone.
        return as_utc(since)
    return utcnow() - STREAM_OVERLAP


async def live_pathway_changes(
    runtime: ServiceRuntime, channels: ChannelsPlugin, since: datetime, team: str | None
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """The stream an API serves: it looks when a pathway is written (services.coordinator.live)."""
    async with wake_ups(channels, channel_of(runtime)) as wake:
        async for message in pathway_changes(runtime, since, team, wake):
            yield message


async def pathway_changes(
    runtime: ServiceRuntime,
    since: datetime,
    team: str | None = None,
    wake: WakeUps | None = None,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    sent: dict[tuple[UUID, datetime], datetime] = {}  # (patient, stamp) → its stamp
    started = last_beat = utcnow()
    while utcnow() - started < STREAM_LIFETIME:
        after = since
        while True:  # page through a burst of changes
            page = await sync_to_thread(changed_since, runtime, after, team)
            for changed, stamp in page:
                key = (changed.patient_id, stamp)
                if key in sent:
                    continue
                sent[key] = stamp
                yield ServerSentEventMessage(
                    event="pathway",
                    data=msgspec.json.encode(changed).decode(),
                    id=STREAM_POSITION.encode_values(stamp),
                )
            if len(page) < MAX_PAGE or page[-1][1] == after:
                break
            after = page[-1][1]
        if sent:
            newest = max(sent.values())
            since = newest - STREAM_OVERLAP
            sent = {key: stamp for key, stamp in sent.items() if stamp >= since}
        if utcnow() - last_beat >= HEARTBEAT:
            last_beat = utcnow()
            yield ServerSentEventMessage(comment="still here")
        if wake is None:
            await asyncio.sleep(STREAM_POLL.total_seconds())
        else:
            # Notice or not, it looks again by the next heartbeat: a notice can be lost.
            await wake.wait(max(HEARTBEAT - (utcnow() - last_beat), STREAM_POLL))


def changed_since(
    runtime: ServiceRuntime, since: datetime, team: str | None
) -> list[tuple[PathwaySummary, datetime]]:
    with runtime.sessions() as session:
        rows = repository.changed_since(session, since, team, MAX_PAGE)
        open_alerts = repository.open_alerts_of(session, [row.patient_id for row in rows])
        now = utcnow()
        return [(summary(row, open_alerts, now), row.updated_at) for row in rows]
