"""Request and response bodies of the referrals API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

# What other services' pages read of a patient through the typed client, a name or a
# page of names, is the answer's shape (a patient's record starts with the name), kept
# in one place so the two cannot drift apart.
from shared.client import PatientName as PatientName
from shared.client import PatientNames as PatientNames
from shared.events.catalogue import Condition, ReferralPriority, ReferralTarget

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Sex = Literal["female", "male", "other", "unknown"]  # FHIR AdministrativeGender
ContactPreference = Literal["phone", "email", "letter", "sms"]
# domain.STATUSES, as a type Litestar validates a query parameter against.
ReferralStatus = Literal[
    "received", "info-requested", "accepted", "rejected", "cancelled", "closed"
]


class PatientCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    given_name: Name
    family_name: Name
    birth_date: date
    sex: Sex
    nhs_number: Annotated[str, msgspec.Meta(min_length=10, max_length=12)] | None = None
    contact_preference: ContactPreference | None = None


class PatientTrace(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What finding a registered patient takes, as on the NHS Spine (PDS): the number and
    two details only someone who knows the patient has."""

    nhs_number: Annotated[str, msgspec.Meta(min_length=10, max_length=12)]
    birth_date: date
    family_name: Name


class PatientTraced(msgspec.Struct, kw_only=True):
    id: UUID


class PatientPage(msgspec.Struct, kw_only=True):
    items: list[PatientRead]


class PatientRead(PatientName, kw_only=True):
    """The whole record; other services read its first part, the name, as PatientName."""

    birth_date: date
    sex: str
    nhs_number: str | None
    contact_preference: str | None
    registered_at: datetime


class Referrer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    role: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    organisation: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class PriorTreatment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    kind: Literal["medicine", "therapy"]
    outcome: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class Baseline(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Item ranges are checked by the shared scoring code, which names the bad item.
    phq9_items: list[int] | None = None
    pain_nrs: int | None = None


class Attachment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]


class ReferralCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    patient_id: UUID
    target: ReferralTarget
    priority: ReferralPriority
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    conditions: Annotated[list[Condition], msgspec.Meta(min_length=1)]
    referrer: Referrer
    prior_treatments: list[PriorTreatment] = msgspec.field(default_factory=list)
    baseline: Baseline | None = None
    attachments: Annotated[list[Attachment], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )


Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


class PatientCorrection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent are changed; each correction is audited by field name."""

    given_name: Name | None = None
    family_name: Name | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    nhs_number: Annotated[str, msgspec.Meta(min_length=10, max_length=12)] | None = None
    contact_preference: ContactPreference | None = None


class Triage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    decision: Literal["accept", "reject", "request-info"]
    reason: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    question: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class InfoResponse(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    answer: Text


class Cancellation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Text


class WaitingStandardRead(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    unit: Literal["days", "working days"]
    at_risk_after: int
    breach_after: int
    source: str


class Waiting(msgspec.Struct, kw_only=True):
    days_waiting: int
    standard: WaitingStandardRead
    elapsed: int
    state: Literal["within", "at-risk", "breached"]
    clock_stopped: bool


class TransitionRead(msgspec.Struct, kw_only=True):
    action: str
    from_status: str | None
    to_status: str
    by_user: str
    by_role: str
    at: datetime
    note: str | None = None


class AttachmentRead(msgspec.Struct, kw_only=True):
    title: str
    text: str
    by_user: str
    at: datetime


class PatientSummary(msgspec.Struct, kw_only=True):
    given_name: str
    family_name: str
    birth_date: date


class BaselineRead(msgspec.Struct, kw_only=True):
    phq9_items: list[int] | None
    phq9_total: int | None
    phq9_band: str | None
    pain_nrs: int | None


class DuplicateLink(msgspec.Struct, kw_only=True):
    """The earlier open referral of the same patient to the same team this one may repeat
    (issue 16): never a refusal, a prompt to triage both together."""

    id: UUID
    href: str
    received_at: datetime


class ReferralRead(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A referral as the caller may see it: free text is left out for admins."""

    id: UUID
    patient_id: UUID
    target: str
    priority: str
    status: str
    fhir_status: str
    task_status: str
    conditions: list[str]
    referrer: Referrer
    received_at: datetime
    status_changed_at: datetime
    waiting: Waiting
    created_by: str
    baseline: BaselineRead | None = None
    reason: str | None = None
    prior_treatments: list[PriorTreatment] | None = None
    attachments: list[AttachmentRead] | None = None
    history: list[TransitionRead] | None = None
    patient: PatientSummary | None = None
    possible_duplicate_of: DuplicateLink | None = None


class InboxPage(msgspec.Struct, kw_only=True):
    items: list[ReferralRead]
    next_cursor: str | None


class ReviewReferral(msgspec.Struct, kw_only=True):
    """The coordinator's `readReviewReferral` answer, as far as a referral needs it."""

    patient_id: UUID
    priority: ReferralPriority
    reason: str
    conditions: list[Condition]
    organisation: str
