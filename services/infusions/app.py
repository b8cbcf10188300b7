"""The infusions service: ketamine infusion courses, sessions, vitals, doses, adverse events."""

from __future__ import annotations

from pathlib import Path

from services.infusions import models  # noqa: F401 - registers the tables
from services.infusions.api import CONTROLLERS
from services.infusions.handlers import handle_event
from shared.runtime import ServiceSpec

SPEC = ServiceSpec(
    name="infusions",
    route_handlers=CONTROLLERS,
    migrations_dir=Path(__file__).parent / "migrations",
    handle_event=handle_event,
)
