"""HTTP controllers of the referrals service: patients, referrals, triage, the inbox.

Each route parses, calls one command (services.py) and returns a view (views.py).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from services.referrals import services, views
from services.referrals.schemas import (
    Cancellation,
    InboxPage,
    InfoResponse,
    PatientCorrection,
    PatientCreate,
    PatientRead,
    ReferralCreate,
    ReferralRead,
    ReferralStatus,
    Triage,
)
from shared.auth import Role, User, requires
from shared.events.catalogue import ReferralPriority, ReferralTarget
from shared.tables import utcnow
from shared.uow import UnitOfWork

CLINICAL_ROLES = (Role.referrer, Role.psychologist, Role.infusion_clinician, Role.mdt)
MAX_PAGE = 200


class PatientController(Controller):
    path = "/api/patients"
    tags = ["patients"]
    opt = {"resource": "Patient"}
    guards = [requires(*CLINICAL_ROLES)]

    @post(operation_id="registerPatient", summary="Register a patient", sync_to_thread=True)
    def register(
        self,
        data: JSONBody[PatientCreate],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> PatientRead:
        return views.patient_read(services.register_patient(data, uow, user))

    @get("/{patient_id:uuid}", operation_id="readPatient", sync_to_thread=True)
    def read(
        self,
        patient_id: FromPath[UUID],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> PatientRead:
        return views.patient_read(services.read_patient(patient_id, uow, user))

    @patch(
        "/{patient_id:uuid}",
        operation_id="correctPatient",
        summary="Correct details",
        sync_to_thread=True,
    )
    def correct(
        self,
        patient_id: FromPath[UUID],
        data: JSONBody[PatientCorrection],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> PatientRead:
        return views.patient_read(services.correct_patient(patient_id, data, uow, user))


class ReferralController(Controller):
    path = "/api/referrals"
    tags = ["referrals"]
    opt = {"resource": "ServiceRequest"}

    @post(
        operation_id="createReferral",
        summary="Refer a patient to a team",
        guards=[requires(*CLINICAL_ROLES)],
        sync_to_thread=True,
    )
    def create(
        self,
        data: JSONBody[ReferralCreate],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ReferralRead:
        referral = services.refer(data, uow, user)
        return views.referral_read(uow.session, referral, user, detail=True)

    @get(
        operation_id="listReferrals",
        summary="The inbox: referrals by priority, then waiting",
        guards=[requires(*CLINICAL_ROLES, Role.admin)],
        sync_to_thread=True,
    )
    def inbox(
        self,
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
        target: FromQuery[ReferralTarget | None] = None,
        status: FromQuery[ReferralStatus | None] = None,
        priority: FromQuery[ReferralPriority | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    ) -> InboxPage:
        query = services.InboxQuery(target, status, priority, cursor, limit)
        page, next_cursor = services.inbox(query, uow, user)
        now = utcnow()
        items = [
            views.referral_read(uow.session, referral, user, now=now, patient=patient)
            for referral, patient in page
        ]
        return InboxPage(items=items, next_cursor=next_cursor)

    @get(
        "/{referral_id:uuid}",
        operation_id="readReferral",
        sync_to_thread=True,
        guards=[requires(*CLINICAL_ROLES, Role.admin)],
    )
    def read(
        self,
        referral_id: FromPath[UUID],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ReferralRead:
        referral = services.read_referral(referral_id, uow, user)
        return views.referral_read(uow.session, referral, user, detail=True)

    @post(
        "/{referral_id:uuid}/triage",
        operation_id="triageReferral",
        status_code=200,
        summary="Accept, reject (with a reason) or ask the referrer a question",
        guards=[requires(Role.psychologist, Role.infusion_clinician, Role.mdt)],
        sync_to_thread=True,
    )
    def triage(
        self,
        referral_id: FromPath[UUID],
        data: JSONBody[Triage],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ReferralRead:
        referral = services.triage(referral_id, data, uow, user)
        return views.referral_read(uow.session, referral, user, detail=True)

    @post(
        "/{referral_id:uuid}/info",
        operation_id="answerReferralQuestion",
        status_code=200,
        summary="The referrer answers the triage question; the referral returns to the inbox",
        guards=[requires(*CLINICAL_ROLES)],
        sync_to_thread=True,
    )
    def provide_info(
        self,
        referral_id: FromPath[UUID],
        data: JSONBody[InfoResponse],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ReferralRead:
        referral = services.provide_info(referral_id, data, uow, user)
        return views.referral_read(uow.session, referral, user, detail=True)

    @post(
        "/{referral_id:uuid}/cancel",
        operation_id="cancelReferral",
        status_code=200,
        guards=[requires(*CLINICAL_ROLES)],
        sync_to_thread=True,
    )
    def cancel(
        self,
        referral_id: FromPath[UUID],
        data: JSONBody[Cancellation],
        uow: NamedDependency[UnitOfWork],
        user: NamedDependency[User],
    ) -> ReferralRead:
        referral = services.cancel(referral_id, data, uow, user)
        return views.referral_read(uow.session, referral, user, detail=True)
