"""HTTP controllers of the referrals service: patients, referrals, triage, the inbox.

Each route parses, calls one command (services.py) and returns a view (views.py).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from services.referrals import services, views
from services.referrals.models import Referral
from services.referrals.schemas import (
    Cancellation,
    InboxPage,
    InfoResponse,
    PatientCorrection,
    PatientCreate,
    PatientNames,
    PatientPage,
    PatientRead,
    PatientTrace,
    PatientTraced,
    ReferralCreate,
    ReferralRead,
    ReferralStatus,
    Triage,
)
from shared.auth import Role, User, requires
from shared.events.catalogue import ReferralPriority, ReferralTarget
from shared.pagination import PageSize
from shared.tables import utcnow
from shared.uow import UnitOfWork
from shared.web.dependencies import UowDep, UserDep
from shared.web.handlers import command, query

CLINICAL_ROLES = (Role.referrer, Role.psychologist, Role.infusion_clinician, Role.mdt)
READERS = (*CLINICAL_ROLES, Role.admin)
MAX_NAMES = 200  # a page of the status list, which pages at 200
TRIAGING_TEAMS = (Role.psychologist, Role.infusion_clinician, Role.mdt)


class PatientController(Controller):
    path = "/api/patients"
    tags = ["patients"]
    opt = {"resource": "Patient"}
    guards = [requires(*CLINICAL_ROLES)]

    @command(operation_id="registerPatient", summary="Register a patient", status_code=201)
    def register(self, data: JSONBody[PatientCreate], uow: UowDep, user: UserDep) -> PatientRead:
        return views.patient_read(services.register_patient(data, uow, user))

    @command(
        "/trace",
        operation_id="tracePatient",
        summary="Find a registered patient by NHS number, birth date and family name",
    )
    def trace(self, data: JSONBody[PatientTrace], uow: UowDep, user: UserDep) -> PatientTraced:
        return PatientTraced(id=services.trace_patient(data, uow, user).id)

    @query(
        operation_id="searchPatients",
        summary="Patients by name (the start of a given or family name) or NHS number, "
        "among those the caller may see",
    )
    def search(
        self,
        uow: UowDep,
        user: UserDep,
        q: Annotated[str, QueryParameter(min_length=2, max_length=100)],
        limit: Annotated[int, QueryParameter(ge=1, le=50)] = 20,
    ) -> PatientPage:
        found = services.search_patients(q, limit, uow, user)
        return PatientPage(items=[views.patient_read(p) for p in found])

    @query(
        "/names",
        operation_id="namePatients",
        summary="The names of patients by id, up to a page of them, among those the caller "
        "may see (the others are left out)",
    )
    def names(
        self,
        uow: UowDep,
        user: UserDep,
        id: Annotated[list[UUID], QueryParameter(min_items=1, max_items=MAX_NAMES)],
    ) -> PatientNames:
        # `id`, repeated, as in the query string: a problem names the field as sent.
        return views.patient_names(services.name_patients(id, uow, user))

    @query("/{patient_id:uuid}", operation_id="readPatient")
    def read(self, patient_id: FromPath[UUID], uow: UowDep, user: UserDep) -> PatientRead:
        return views.patient_read(services.read_patient(patient_id, uow, user))

    @command(
        "/{patient_id:uuid}",
        operation_id="correctPatient",
        summary="Correct details",
        method="PATCH",
    )
    def correct(
        self,
        patient_id: FromPath[UUID],
        data: JSONBody[PatientCorrection],
        uow: UowDep,
        user: UserDep,
    ) -> PatientRead:
        return views.patient_read(services.correct_patient(patient_id, data, uow, user))


class ReferralController(Controller):
    """Each command answers with the referral in full, its history included."""

    path = "/api/referrals"
    tags = ["referrals"]
    opt = {"resource": "ServiceRequest"}

    @command(
        operation_id="createReferral",
        summary="Refer a patient to a team",
        roles=CLINICAL_ROLES,
        status_code=201,
    )
    def create(self, data: JSONBody[ReferralCreate], uow: UowDep, user: UserDep) -> ReferralRead:
        return _referral(uow, user, services.refer(data, uow, user))

    @query(
        operation_id="listReferrals",
        summary="The inbox: referrals by priority, then waiting",
        roles=READERS,
    )
    def inbox(
        self,
        uow: UowDep,
        user: UserDep,
        target: FromQuery[ReferralTarget | None] = None,
        status: FromQuery[ReferralStatus | None] = None,
        priority: FromQuery[ReferralPriority | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: PageSize = 50,
    ) -> InboxPage:
        filters = services.InboxQuery(target, status, priority, cursor, limit)
        page, next_cursor = services.inbox(filters, uow, user)
        now = utcnow()
        duplicates = views.possible_duplicates(uow.session, [referral for referral, _ in page])
        items = [
            views.referral_read(
                uow.session,
                referral,
                user,
                now=now,
                patient=patient,
                duplicate_of=duplicates.get(referral.id),
            )
            for referral, patient in page
        ]
        return InboxPage(items=items, next_cursor=next_cursor)

    @query("/{referral_id:uuid}", operation_id="readReferral", roles=READERS)
    def read(self, referral_id: FromPath[UUID], uow: UowDep, user: UserDep) -> ReferralRead:
        return _referral(uow, user, services.read_referral(referral_id, uow, user))

    @command(
        "/{referral_id:uuid}/triage",
        operation_id="triageReferral",
        summary="Accept, reject (with a reason) or ask the referrer a question",
        roles=TRIAGING_TEAMS,
    )
    def triage(
        self, referral_id: FromPath[UUID], data: JSONBody[Triage], uow: UowDep, user: UserDep
    ) -> ReferralRead:
        return _referral(uow, user, services.triage(referral_id, data, uow, user))

    @command(
        "/{referral_id:uuid}/info",
        operation_id="answerReferralQuestion",
        summary="The referrer answers the triage question; the referral returns to the inbox",
        roles=CLINICAL_ROLES,
    )
    def provide_info(
        self, referral_id: FromPath[UUID], data: JSONBody[InfoResponse], uow: UowDep, user: UserDep
    ) -> ReferralRead:
        return _referral(uow, user, services.provide_info(referral_id, data, uow, user))

    @command("/{referral_id:uuid}/cancel", operation_id="cancelReferral", roles=CLINICAL_ROLES)
    def cancel(
        self, referral_id: FromPath[UUID], data: JSONBody[Cancellation], uow: UowDep, user: UserDep
    ) -> ReferralRead:
        return _referral(uow, user, services.cancel(referral_id, data, uow, user))


def _referral(uow: UnitOfWork, user: User, referral: Referral) -> ReferralRead:
    duplicate_of = views.possible_duplicates(uow.session, [referral]).get(referral.id)
    return views.referral_read(uow.session, referral, user, detail=True, duplicate_of=duplicate_of)
