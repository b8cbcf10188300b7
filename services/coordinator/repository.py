"""Loads, locks and list queries of the coordinator's read model; no rule lives here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Text, bindparam, cast, func, true
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from services.coordinator.models import MdtReview, PathwayAlert, PathwayRow
from shared.db import table_of
from shared.pagination import Keyset

# Longest in their stage first; the soonest-due review of the most urgent reason first;
# the most severe alert first, then the soonest due. The last key breaks ties.
PATHWAY_ORDER = Keyset((col(PathwayRow.stage_since), datetime), (col(PathwayRow.patient_id), UUID))
WORKLIST_ORDER = Keyset(
    (col(PathwayRow.review_rank), int),
    (col(PathwayRow.review_due), datetime),
    (col(PathwayRow.patient_id), UUID),
)
ALERT_ORDER = Keyset(
    (col(PathwayAlert.severity_rank), int),
    (col(PathwayAlert.due), datetime),
    (col(PathwayAlert.id), str),
)


def pathway(session: Session, patient_id: UUID) -> PathwayRow | None:
    return session.get(PathwayRow, patient_id)


_PATHWAY = table_of(PathwayRow)
# One statement object, run on the session's connection: the ORM's loading and its
# execute are no use to a read that wants text (issue 15).
_PATHWAY_JSON = sa_select(_PATHWAY.c.teams, cast(_PATHWAY.c.document, Text)).where(
    _PATHWAY.c.patient_id == bindparam("patient_id")
)


def pathway_json(session: Session, patient_id: UUID) -> tuple[str, str] | None:
    """A pathway's teams and its document as the stored JSON text, for a read that
    sends the text as it is."""
    found = session.connection().execute(_PATHWAY_JSON, {"patient_id": patient_id}).first()
    return (found[0], found[1]) if found is not None else None


def in_team(team: str | None) -> Any:
    """Pathways with a referral to the team (all of them for no team)."""
    return col(PathwayRow.teams).contains(f",{team},") if team else true()


def pathways(team: str | None) -> Any:
    return select(PathwayRow).where(in_team(team))


def due_for_review() -> Any:
    return select(PathwayRow).where(col(PathwayRow.review_due).is_not(None))


def alerts(team: str | None) -> Any:
    statement = select(PathwayAlert)
    if team is not None:
        visible = select(PathwayRow.patient_id).where(in_team(team))
        statement = statement.where(col(PathwayAlert.patient_id).in_(visible))
    return statement


def alert(session: Session, alert_id: str, *, fresh: bool = False) -> PathwayAlert | None:
    # ``fresh`` reads the row again rather than from the session's identity map: after
    # taking the patient's lock, another person may have acted on it meanwhile.
    return session.get(PathwayAlert, alert_id, populate_existing=fresh)


def open_alerts_with_kind_or_severity(kind: str | None, severity: str | None) -> Any:
    """Patients with an unresolved alert of this kind and/or severity."""
    wanted = select(PathwayAlert.patient_id).where(PathwayAlert.status != "resolved")
    if kind is not None:
        wanted = wanted.where(PathwayAlert.kind == kind)
    if severity is not None:
        wanted = wanted.where(PathwayAlert.severity == severity)
    return wanted


@dataclass
class OpenAlerts:
    """One patient's unresolved alerts: how many of each severity, and of which kinds."""

    by_severity: dict[str, int] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)


def open_alerts_of(session: Session, patients: list[UUID]) -> dict[UUID, OpenAlerts]:
    """Unresolved alerts per patient, in one query for a page of pathways."""
    if not patients:
        return {}
    found: dict[UUID, OpenAlerts] = {}
    for patient_id, severity, kind, count in session.exec(
        select(PathwayAlert.patient_id, PathwayAlert.severity, PathwayAlert.kind, func.count())
        .where(col(PathwayAlert.patient_id).in_(patients), PathwayAlert.status != "resolved")
        .group_by(col(PathwayAlert.patient_id), col(PathwayAlert.severity), col(PathwayAlert.kind))
    ).all():
        alerts = found.setdefault(patient_id, OpenAlerts())
        alerts.by_severity[severity] = alerts.by_severity.get(severity, 0) + int(count)
        alerts.kinds.add(kind)
    return found


def stage_counts(session: Session, pathways: Any) -> dict[str, int]:
    """How many of these pathways are at each stage."""
    wanted = pathways.with_only_columns(col(PathwayRow.stage)).subquery()
    return {
        stage: int(count)
        for stage, count in session.exec(
            select(wanted.c.stage, func.count()).group_by(wanted.c.stage)
        ).all()
    }


def open_alert_counts(session: Session, pathways: Any) -> tuple[dict[str, int], int]:
    """Unresolved alerts of these pathways by severity, and the patients among them with
    a breached wait."""
    patients = pathways.with_only_columns(col(PathwayRow.patient_id))
    unresolved = (col(PathwayAlert.patient_id).in_(patients), PathwayAlert.status != "resolved")
    by_severity = {
        severity: int(count)
        for severity, count in session.exec(
            select(PathwayAlert.severity, func.count())
            .where(*unresolved)
            .group_by(col(PathwayAlert.severity))
        ).all()
    }
    breached = session.exec(
        select(func.count(func.distinct(PathwayAlert.patient_id))).where(
            *unresolved, PathwayAlert.kind == "waiting-breach"
        )
    ).one()
    return by_severity, int(breached)


def reviews_of(session: Session, patient_id: UUID) -> Sequence[MdtReview]:
    """The MDT's reviews of one pathway, newest first."""
    return session.exec(
        select(MdtReview)
        .where(MdtReview.patient_id == patient_id)
        .order_by(col(MdtReview.reviewed_at).desc())
    ).all()


def changed_since(
    session: Session, since: datetime, team: str | None, limit: int
) -> Sequence[PathwayRow]:
    return session.exec(
        select(PathwayRow)
        .where(col(PathwayRow.updated_at) >= since, in_team(team))
        .order_by(col(PathwayRow.updated_at))
        .limit(limit)
    ).all()
