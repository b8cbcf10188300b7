"""The referrals service: patients, referrals, triage."""

from __future__ import annotations

from pathlib import Path

from services.referrals import models  # noqa: F401 - registers the tables
from services.referrals.api import PatientController, ReferralController
from services.referrals.handlers import handle_event
from shared.runtime import ServiceSpec

SPEC = ServiceSpec(
    name="referrals",
    route_handlers=(PatientController, ReferralController),
    migrations_dir=Path(__file__).parent / "migrations",
    handle_event=handle_event,
)
