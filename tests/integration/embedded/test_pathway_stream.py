"""The coordinator's stream of pathway changes, for live dashboards.

The generator is read here directly (Litestar's test client waits for a whole response,
which a stream never ends); tests/e2e/test_embedded.py reads it over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from litestar.response import ServerSentEventMessage

from services.coordinator.models import PathwayRow
from services.coordinator.views import STREAM_OVERLAP, pathway_changes, stream_start
from shared.auth import Role
from shared.errors import FieldProblem
from tests.embedded import Embedded, assert_problem, referral_body, register


async def next_change(
    changes: AsyncGenerator[ServerSentEventMessage, None], patient_id: str, stage: str
) -> ServerSentEventMessage:
    while True:
        message = await asyncio.wait_for(anext(changes), timeout=20)
        if message.event == "pathway":
            data = json.loads(str(message.data))
            if (data["patient_id"], data["stage"]) == (patient_id, stage):
                return message


def refer(embedded: Embedded, patient_id: str) -> None:
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, target="psychology"),
        headers=embedded.headers(Role.referrer),
    )
    assert response.status_code == 201, response.text


def test_a_pathway_change_is_streamed_as_a_summary_without_names(embedded: Embedded) -> None:
    runtime = embedded.runtime("coordinator")
    since = datetime.now(UTC)
    patient_id = register(embedded)

    async def watch() -> list[ServerSentEventMessage]:
        changes = pathway_changes(runtime, since)
        registered = await next_change(changes, patient_id, "registered")
        await asyncio.to_thread(refer, embedded, patient_id)
        referred = await next_change(changes, patient_id, "referred")
        await changes.aclose()
        return [registered, referred]

    registered, referred = asyncio.run(watch())
    data = json.loads(str(referred.data))
    assert data["teams"] == ["psychology"] and data["open_alerts"] == 0
    assert registered.id and referred.id and registered.id != referred.id
    text = json.dumps([str(registered.data), str(referred.data)])
    assert "Ada" not in text and "Example" not in text  # summaries only, never names


def test_each_change_is_sent_once_though_the_stream_looks_back(embedded: Embedded) -> None:
    runtime = embedded.runtime("coordinator")
    patient_id = register(embedded)
    since = datetime.now(UTC) - STREAM_OVERLAP  # the row is already inside the window

    async def watch() -> int:
        changes = pathway_changes(runtime, since)
        await next_change(changes, patient_id, "registered")
        try:  # a second copy would come within the next few polls
            await asyncio.wait_for(next_change(changes, patient_id, "registered"), timeout=3)
        except TimeoutError:
            return 1
        finally:
            await changes.aclose()
        return 2

    assert asyncio.run(watch()) == 1


def test_changes_older_than_the_cursor_are_not_sent_again(embedded: Embedded) -> None:
    runtime = embedded.runtime("coordinator")
    old = register(embedded)

    async def first_after(since: datetime) -> ServerSentEventMessage | None:
        changes = pathway_changes(runtime, since)
        try:
            return await next_change(changes, old, "registered")
        finally:
            await changes.aclose()

    assert asyncio.run(first_after(datetime.now(UTC) - timedelta(minutes=1))) is not None
    later = datetime.now(UTC) + timedelta(seconds=1)
    try:
        asyncio.run(asyncio.wait_for(first_after(later), timeout=3))
        raise AssertionError("a change before the cursor was sent")
    except TimeoutError:
        pass


def test_the_stream_needs_a_pathway_reader(embedded: Embedded) -> None:
    response = embedded.client.get("/api/pathways/stream", headers=embedded.headers(Role.referrer))
    assert_problem(response, 403)


def test_a_reconnect_with_last_event_id_resumes_at_that_change(embedded: Embedded) -> None:
    """The id of each event is where a reconnecting EventSource resumes (Last-Event-ID)."""
    runtime = embedded.runtime("coordinator")
    since = datetime.now(UTC)
    patient_id = register(embedded)

    async def first_id() -> str:
        changes = pathway_changes(runtime, since)
        try:
            message = await next_change(changes, patient_id, "registered")
        finally:
            await changes.aclose()
        assert message.id is not None
        return str(message.id)

    resumed_at = stream_start(asyncio.run(first_id()))
    with embedded.runtime("coordinator").sessions() as session:
        row = session.get(PathwayRow, UUID(patient_id))
        assert row is not None
        assert resumed_at == row.updated_at
    assert stream_start(None) < datetime.now(UTC) - STREAM_OVERLAP + timedelta(seconds=1)
    with pytest.raises(FieldProblem):
        stream_start("not-an-event-id")
