"""The coordinator: every event in, one pathway per patient out."""

from __future__ import annotations

from pathlib import Path

from services.coordinator import models  # noqa: F401 - registers the tables
from services.coordinator.api import (
    AlertController,
    PathwayController,
    ReportController,
    ReviewReferralController,
    WorklistController,
)
from services.coordinator.clock import pathway_clock
from services.coordinator.clock_api import ClockController
from services.coordinator.handlers import handle_event, handle_events
from services.coordinator.live import send_notices, stream_plugins
from shared.runtime import ServiceRuntime, ServiceSpec, TaskGroup


def background(runtime: ServiceRuntime) -> TaskGroup:
    # The feed catch-up is the platform's, as for every consumer (shared.catchup).
    return TaskGroup(pathway_clock(runtime))


SPEC = ServiceSpec(
    name="coordinator",
    route_handlers=(
        PathwayController,
        AlertController,
        WorklistController,
        ReviewReferralController,
        ClockController,
        ReportController,
    ),
    migrations_dir=Path(__file__).parent / "migrations",
    handle_event=handle_event,
    handle_events=handle_events,
    accept_unknown_events=True,
    background=background,
    on_runtime=send_notices,
    plugins=stream_plugins,
)
