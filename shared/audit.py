"""The append-only audit log of every access to patient data (FHIR AuditEvent's shape)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from sqlalchemy import insert
from sqlmodel import Session

from shared.db import table_of
from shared.tables import AuditRecord, utcnow

# Written with a Core insert on the session's connection: every read of patient data
# writes one, and the ORM's flush (and fetching back the new id), then its execute, cost
# a read more than the row (issue 15). One statement object, so SQLAlchemy finds its
# compiled form without building a cache key each time.
AUDIT_LOG = table_of(AuditRecord)
WRITE_AUDIT_ROW = insert(AUDIT_LOG)


class AuditAction(StrEnum):
    create = "C"
    read = "R"
    update = "U"
    delete = "D"
    execute = "E"


class AuditOutcome(StrEnum):
    success = "0"
    denied = "4"  # FHIR: minor failure
    failed = "8"  # FHIR: serious failure


def record_access(
    session: Session,
    *,
    user_id: str,
    role: str,
    action: AuditAction,
    entity_type: str,
    entity_id: str | None,
    patient_id: UUID | None,
    path: str,
    outcome: AuditOutcome = AuditOutcome.success,
    detail: str | None = None,
) -> None:
    """Write an audit row in the caller's transaction (it commits with the change it
    describes, or not at all)."""
    session.connection().execute(
        WRITE_AUDIT_ROW,
        {
            "recorded": utcnow(),
            "action": action.value,
            "outcome": outcome.value,
            "agent_user": user_id[:100],
            "agent_role": role[:40],
            "entity_type": entity_type,
            "entity_id": entity_id,
            "patient_id": patient_id,
            "path": path[:300],
            "detail": detail[:300] if detail else None,
        },
    )


@dataclass(frozen=True)
class AccessTrail:
    """One request's caller and path, so a handler names only what it touched."""

    user_id: str
    role: str
    path: str

    def record(
        self,
        session: Session,
        action: AuditAction,
        entity_type: str,
        entity_id: str | None,
        patient_id: UUID | None,
        *,
        outcome: AuditOutcome = AuditOutcome.success,
        detail: str | None = None,
    ) -> None:
        record_access(
            session,
            user_id=self.user_id,
            role=self.role,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            patient_id=patient_id,
            path=self.path,
            outcome=outcome,
            detail=detail,
        )
