"""The therapy service: CBT/psychology episodes, appointments, session measures."""

from __future__ import annotations

from pathlib import Path

from services.therapy import models  # noqa: F401 - registers the tables
from services.therapy.api import CONTROLLERS
from services.therapy.handlers import handle_event
from shared.runtime import ServiceSpec

SPEC = ServiceSpec(
    name="therapy",
    route_handlers=CONTROLLERS,
    migrations_dir=Path(__file__).parent / "migrations",
    handle_event=handle_event,
)
