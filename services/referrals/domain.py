"""Referral rules, pure: no database, no web framework, no broker."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Literal, Protocol, TypeVar
from uuid import UUID

from shared.calendar import working_calendar
from shared.domain import IllegalTransition as IllegalTransition
from shared.domain import RuleBroken, StateMachine
from shared.measures import PHQ9, InvalidItems, Score, check_pain_nrs, score
from shared.policy import WaitingPolicy as WaitingPolicy
from shared.policy import clinical_policy


class ReferralRuleBroken(RuleBroken):
    """A referral rule the input breaks; ``field`` names what to correct."""


def nhs_number_is_valid(value: str) -> bool:
    """The NHS number's modulus-11 check digit (NHS Data Dictionary, "NHS Number").

    Weights 10 down to 2 on the first nine digits; 11 minus the remainder mod 11 is the
    check digit, 11 becomes 0, and 10 means the number can never be valid.
    """
    digits = value.replace(" ", "").replace("-", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(
        int(digit) * weight for digit, weight in zip(digits[:9], range(10, 1, -1), strict=True)
    )
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def normalise_nhs_number(value: str) -> str:
    return value.replace(" ", "").replace("-", "")


def check_birth_date(birth_date: date, today: date) -> None:
    if birth_date > today:
        raise ReferralRuleBroken("birth_date", "cannot be in the future")
    if birth_date.year < today.year - 130:
        raise ReferralRuleBroken("birth_date", "is more than 130 years ago")


def check_prior_treatments(target: str, prior_treatment_count: int) -> None:
    # Ketamine is not first line (Cohen et al. 2018): the referral must name what was tried.
    if target == "ketamine-infusion" and prior_treatment_count == 0:
        raise ReferralRuleBroken(
            "prior_treatments",
            "a ketamine-infusion referral must name the treatments already tried",
        )


def score_baseline(
    phq9_items: Sequence[int] | None, pain_nrs: int | None
) -> tuple[Score | None, int | None]:
    try:
        phq9 = score(PHQ9, phq9_items, "baseline.phq9_items") if phq9_items is not None else None
        pain = check_pain_nrs(pain_nrs, "baseline.pain_nrs") if pain_nrs is not None else None
    except InvalidItems as error:
        raise ReferralRuleBroken(error.field, error.message) from None
    return phq9, pain


# --- the referral's life (FHIR ServiceRequest with a Task-style business status) ------

RECEIVED = "received"
INFO_REQUESTED = "info-requested"
ACCEPTED = "accepted"
REJECTED = "rejected"
CANCELLED = "cancelled"
CLOSED = "closed"
STATUSES = (RECEIVED, INFO_REQUESTED, ACCEPTED, REJECTED, CANCELLED, CLOSED)
OPEN = (RECEIVED, INFO_REQUESTED, ACCEPTED)

# action → {status it may start from: status it leads to}
TRANSITIONS: dict[str, dict[str, str]] = {
    "request-info": {RECEIVED: INFO_REQUESTED},
    "provide-info": {INFO_REQUESTED: RECEIVED},
    "accept": {RECEIVED: ACCEPTED},
    "reject": {RECEIVED: REJECTED},
    # The referrer may withdraw at any point before the loop is closed.
    "cancel": {RECEIVED: CANCELLED, INFO_REQUESTED: CANCELLED, ACCEPTED: CANCELLED},
    # The receiving service reported the course or episode ended.
    "close": {ACCEPTED: CLOSED},
}

# How each business status reads in FHIR R4: ServiceRequest.status and Task.status.
FHIR_SERVICE_REQUEST_STATUS = {
    RECEIVED: "active",
    INFO_REQUESTED: "on-hold",
    ACCEPTED: "active",
    REJECTED: "revoked",
    CANCELLED: "revoked",
    CLOSED: "completed",
}
FHIR_TASK_STATUS = {
    RECEIVED: "received",
    INFO_REQUESTED: "on-hold",
    ACCEPTED: "accepted",
    REJECTED: "rejected",
    CANCELLED: "cancelled",
    CLOSED: "completed",
}


REFERRAL = StateMachine("referral", TRANSITIONS)
next_status = REFERRAL.next_status


def check_triage(decision: str, reason: str | None, question: str | None) -> None:
    if decision == "reject" and not (reason and reason.strip()):
        raise ReferralRuleBroken("reason", "a rejection needs a reason")
    if decision == "request-info" and not (question and question.strip()):
        raise ReferralRuleBroken("question", "a request for information needs a question")


# --- waiting-time standards (CLINICAL.md, "Waiting times") --------------------------


@dataclass(frozen=True)
class WaitingStandard:
    name: str
    at_risk_after_days: int
    breach_after_days: int
    working_days: bool
    source: str


def standard_for(
    target: str, priority: str, status: str, policy: WaitingPolicy | None = None
) -> WaitingStandard:
    """The standard a referral waits against, with the clinical policy's waits (its
    ``waits`` section; without one, the loaded policy's)."""
    return _standard(target, priority, status, policy or clinical_policy().waits)


# A few standards serve every referral: an inbox page asks for one per row (issue 15).
@lru_cache(maxsize=64)
def _standard(target: str, priority: str, status: str, waits: WaitingPolicy) -> WaitingStandard:
    if priority == "urgent" and status in (RECEIVED, INFO_REQUESTED):
        days = waits.urgent_triage_working_days
        return WaitingStandard(
            name=f"urgent triage within {days} working days",
            at_risk_after_days=max(days - 1, 0),
            breach_after_days=days,
            working_days=True,
            source=f"CLINICAL.md Waiting times: urgent referrals, triage within {days} working "
            "days (local policy)",
        )
    if target == "psychology":
        return WaitingStandard(
            name=f"first treatment within {waits.psychology_alert_weeks} weeks "
            f"(breach at {waits.psychology_breach_weeks})",
            at_risk_after_days=waits.psychology_alert_weeks * 7,
            breach_after_days=waits.psychology_breach_weeks * 7,
            working_days=False,
            source="CLINICAL.md Waiting times: NHS Talking Therapies access standard",
        )
    return WaitingStandard(
        name=f"treatment within {waits.consultant_breach_weeks} weeks of referral",
        at_risk_after_days=waits.consultant_alert_weeks * 7,
        breach_after_days=waits.consultant_breach_weeks * 7,
        working_days=False,
        source="CLINICAL.md Waiting times: NHS referral-to-treatment standard "
        f"(alert at {waits.consultant_alert_weeks} weeks is local policy)",
    )


def working_days_between(start: date, end: date) -> int:
    """Working days after ``start`` up to and including ``end``, in the clinic's calendar
    (Monday to Friday less England and Wales bank holidays, shared/calendar.py)."""
    return working_calendar().working_days_after(start, end)


WaitingState = Literal["within", "at-risk", "breached"]


def waiting_days(received_at: datetime, until: datetime, standard: WaitingStandard) -> int:
    if standard.working_days:
        calendar = working_calendar()
        return working_days_between(calendar.day_of(received_at), calendar.day_of(until))
    return max((until.date() - received_at.date()).days, 0)


def triage_state(received_at: datetime, until: datetime, standard: WaitingStandard) -> WaitingState:
    """A working-day standard is judged on the moment it falls due, the coordinator's own
    (shared/triage.py): breached from the same wall-clock time on the last working day,
    at risk from that time a working day before."""
    calendar = working_calendar()
    if until >= calendar.add_working_days(received_at, standard.breach_after_days):
        return "breached"
    if until >= calendar.add_working_days(received_at, standard.at_risk_after_days):
        return "at-risk"
    return "within"


def waiting_state(days: int, standard: WaitingStandard) -> WaitingState:
    if days >= standard.breach_after_days:
        return "breached"
    if days >= standard.at_risk_after_days:
        return "at-risk"
    return "within"


PRIORITY_RANK = {"urgent": 0, "routine": 1}
# The clock stops once the referral leaves the waiting list.
CLOCK_STOPPED = (REJECTED, CANCELLED, CLOSED)


# --- who may do what, per object (the permission rules) ----------------------

# The team each clinical role triages for; the MDT triages every team's referrals.
TEAM_OF_ROLE = {"psychologist": "psychology", "infusion-clinician": "ketamine-infusion"}
ALL_REFERRALS_ROLES = frozenset({"mdt", "admin"})


def can_see_referral(role: str, user_id: str, target: str, created_by: str) -> bool:
    if role in ALL_REFERRALS_ROLES or created_by == user_id:
        return True
    return TEAM_OF_ROLE.get(role) == target


def can_triage(role: str, target: str) -> bool:
    return role == "mdt" or TEAM_OF_ROLE.get(role) == target


CLINICAL_ROLES = frozenset({"referrer", "psychologist", "infusion-clinician", "mdt"})


def can_act_as_referrer(role: str, user_id: str, created_by: str) -> bool:
    """Cancel, answer a question: the clinician who referred, or the MDT."""
    return role == "mdt" or (role in CLINICAL_ROLES and created_by == user_id)


def sees_clinical_detail(role: str) -> bool:
    """Free text, scores, names: clinical roles only (an allow-list, so a new role sees
    nothing until someone decides it should). Admins watch statuses and waits."""
    return role in CLINICAL_ROLES


# --- natural duplicates (issue 16) -------------------------------------------------------


class Referred(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def patient_id(self) -> UUID: ...
    @property
    def target(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def received_at(self) -> datetime: ...


R = TypeVar("R", bound=Referred)


def possible_duplicates(
    referrals: Iterable[Referred], open_referrals: Iterable[R], window: timedelta
) -> dict[UUID, R]:
    """Each open referral that may repeat another, with the earliest open referral of the
    same patient to the same team received up to `window` before it. Never a refusal: the
    team triages both together. A first referral that closes takes its mark with it."""
    earlier: dict[tuple[UUID, str], list[R]] = {}
    for other in sorted(open_referrals, key=lambda r: (r.received_at, str(r.id))):
        if other.status in OPEN:
            earlier.setdefault((other.patient_id, other.target), []).append(other)
    marked: dict[UUID, R] = {}
    for referral in referrals:
        if referral.status not in OPEN:
            continue
        for first in earlier.get((referral.patient_id, referral.target), []):
            if first.id == referral.id or (first.received_at, str(first.id)) >= (
                referral.received_at,
                str(referral.id),
            ):
                break
            if referral.received_at - first.received_at <= window:
                marked[referral.id] = first
                break
    return marked
