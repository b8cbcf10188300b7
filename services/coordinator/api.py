"""HTTP controllers of the coordinator."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from sqlmodel import Session

from services.coordinator.models import PathwayRow
from services.coordinator.schemas import PathwayRead
from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, requires


class PathwayController(Controller):
    path = "/api/pathways"
    tags = ["pathways"]
    opt = {"resource": "CarePlan"}
    guards = [requires(Role.mdt, Role.psychologist, Role.infusion_clinician, Role.admin)]

    @get(
        "/{patient_id:uuid}",
        operation_id="readPathway",
        summary="One patient's pathway across referrals, infusions and therapy",
        sync_to_thread=True,
    )
    def read(
        self,
        patient_id: FromPath[UUID],
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
    ) -> PathwayRead:
        row = db.get(PathwayRow, patient_id)
        if row is None:
            raise NotFoundException("the coordinator has no events for this patient")
        audit.record(db, AuditAction.read, "CarePlan", str(patient_id), patient_id)
        db.commit()
        return msgspec.convert(row.document, PathwayRead)
