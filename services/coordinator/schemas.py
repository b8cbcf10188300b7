"""Response bodies of the coordinator API: the pathway is served as the projection made it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from services.coordinator.domain import Pathway

PathwayRead = Pathway

__all__ = ["AlertHandling", "AlertPage", "AlertRow", "PathwayPage", "PathwayRead", "PathwaySummary"]


class PathwaySummary(msgspec.Struct, kw_only=True):
    """One row of the pathway status list: no names, no free text."""

    patient_id: UUID
    stage: str
    stage_since: datetime
    days_in_stage: int
    teams: list[str]
    open_alerts: int
    alerts_by_severity: dict[str, int]


class PathwayPage(msgspec.Struct, kw_only=True):
    items: list[PathwaySummary]
    next_cursor: str | None


class AlertRow(msgspec.Struct, kw_only=True):
    id: str
    patient_id: UUID
    kind: str
    severity: str
    status: str
    owner_role: str
    raised_at: datetime
    due: datetime


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[AlertRow]
    next_cursor: str | None


class AlertHandling(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
