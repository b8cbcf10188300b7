"""CBT and psychology rules, pure: diaries and slots, appointments, DNAs, waits.

Sources (../shared/CLINICAL.md, "Therapy (CBT / psychology)" and "Waiting times"):
NHS Talking Therapies manual; FHIR R4 Appointment and EpisodeOfCare status sets; NHS
Data Dictionary, "Discharge after patient did not attend". The thresholds are the
clinical policy's ``therapy`` and ``waits`` sections (shared/policy.py); a rule takes
its section, and without one uses the loaded policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from shared.domain import IllegalTransition as IllegalTransition
from shared.domain import RuleBroken, StateMachine
from shared.policy import TherapyPolicy as TherapyPolicy
from shared.policy import WaitingPolicy, clinical_policy


class TherapyRuleBroken(RuleBroken):
    """A therapy rule the input breaks; the API answers 422 naming the field."""


# --- diaries: working hours, leave, slots ------------------------------------------------


@dataclass(frozen=True)
class WorkingHours:
    weekday: int  # Monday 0 … Sunday 6
    start: time
    end: time


def check_working_hours(hours: Iterable[WorkingHours]) -> None:
    seen: dict[int, list[WorkingHours]] = {}
    for index, block in enumerate(hours):
        if not 0 <= block.weekday <= 6:
            raise TherapyRuleBroken(f"hours[{index}].weekday", "is 0 (Monday) to 6 (Sunday)")
        if block.end <= block.start:
            raise TherapyRuleBroken(f"hours[{index}].end", "must be after the start")
        for other in seen.get(block.weekday, []):
            if block.start < other.end and other.start < block.end:
                raise TherapyRuleBroken(f"hours[{index}]", "overlaps another block that day")
        seen.setdefault(block.weekday, []).append(block)


def check_leave(first_day: date, last_day: date) -> None:
    if last_day < first_day:
        raise TherapyRuleBroken("last_day", "must not be before the first day")


def slots(
    hours: Iterable[WorkingHours],
    leave: Iterable[tuple[date, date]],
    booked: Iterable[datetime],
    first_day: date,
    last_day: date,
    policy: TherapyPolicy | None = None,
) -> list[datetime]:
    """Free slot starts (UTC) within working hours, off leave, not already booked.

    Times of day are the clinic's wall clock, taken here as UTC; a clinic time zone is a
    setting still to come.
    """
    step = timedelta(minutes=(policy or clinical_policy().therapy).slot_minutes)
    taken = set(booked)
    by_day: dict[int, list[WorkingHours]] = {}
    for block in hours:
        by_day.setdefault(block.weekday, []).append(block)
    leave_days = list(leave)
    free: list[datetime] = []
    day = first_day
    while day <= last_day:
        if not any(start <= day <= end for start, end in leave_days):
            for block in sorted(by_day.get(day.weekday(), []), key=lambda b: b.start):
                moment = datetime.combine(day, block.start, tzinfo=UTC)
                close = datetime.combine(day, block.end, tzinfo=UTC)
                while moment + step <= close:
                    if moment not in taken:
                        free.append(moment)
                    moment += step
        day += timedelta(days=1)
    return free


def check_bookable(
    start: datetime,
    now: datetime,
    hours: Iterable[WorkingHours],
    leave: Iterable[tuple[date, date]],
    policy: TherapyPolicy | None = None,
) -> None:
    """A booking starts on one of the clinician's slots, in the future."""
    start = start.astimezone(UTC)
    if start <= now:
        raise TherapyRuleBroken("start", "cannot be in the past")
    day = start.date()
    if any(first <= day <= last for first, last in leave):
        raise TherapyRuleBroken("start", "the clinician is on leave that day")
    if start not in slots(hours, [], [], day, day, policy):
        raise TherapyRuleBroken("start", "is not one of the clinician's slots in working hours")


# --- appointments (FHIR Appointment statuses) --------------------------------------------

BOOKED, ARRIVED, FULFILLED = "booked", "arrived", "fulfilled"
CANCELLED, NOSHOW, ENTERED_IN_ERROR = "cancelled", "noshow", "entered-in-error"
APPOINTMENT_STATUSES = (BOOKED, ARRIVED, FULFILLED, CANCELLED, NOSHOW, ENTERED_IN_ERROR)
# Statuses that hold the slot: a clinician or a patient cannot be booked twice into one.
HOLDS_SLOT = (BOOKED, ARRIVED, FULFILLED)

APPOINTMENT_TRANSITIONS: dict[str, dict[str, str]] = {
    "check-in": {BOOKED: ARRIVED},
    "attend": {BOOKED: FULFILLED, ARRIVED: FULFILLED},
    "miss": {BOOKED: NOSHOW, ARRIVED: NOSHOW},
    "cancel": {BOOKED: CANCELLED, ARRIVED: CANCELLED},
    "reschedule": {BOOKED: BOOKED},
}
APPOINTMENT = StateMachine("appointment", APPOINTMENT_TRANSITIONS)
# A mistaken status is corrected, not a dead end: a noshow that did attend, a booking
# recorded against the wrong patient.
CORRECTIONS: dict[str, tuple[str, ...]] = {
    NOSHOW: (FULFILLED, BOOKED, ENTERED_IN_ERROR),
    FULFILLED: (NOSHOW, ENTERED_IN_ERROR),
    CANCELLED: (BOOKED, ENTERED_IN_ERROR),
    ARRIVED: (BOOKED, ENTERED_IN_ERROR),
    BOOKED: (ENTERED_IN_ERROR,),
}


def next_appointment_status(current: str, action: str) -> str:
    return APPOINTMENT.next_status(current, action)


def corrected_status(current: str, wanted: str) -> str:
    if wanted not in CORRECTIONS.get(current, ()):
        raise IllegalTransition("appointment", current, f"corrected to {wanted}")
    return wanted


def dna_count(statuses: Iterable[str]) -> int:
    return sum(1 for status in statuses if status == NOSHOW)


def dna_threshold_reached(before: int, after: int, policy: TherapyPolicy | None = None) -> bool:
    """True once, as the count of missed appointments reaches the threshold."""
    return before < (policy or clinical_policy().therapy).dna_threshold <= after


# --- episodes (FHIR EpisodeOfCare statuses) -----------------------------------------------

EPISODE_STATUSES = ("waitlist", "active", "onhold", "finished", "cancelled")
EPISODE_OPEN = ("waitlist", "active", "onhold")
DISCHARGE_REASONS = ("completed", "declined", "did-not-attend", "moved-away", "other")


def discharge_status(
    reason: str,
    note: str | None,
    attended_treatment: int,
    policy: TherapyPolicy | None = None,
) -> str:
    """The episode's status after discharge; the rules a discharge must meet.

    After missed appointments discharge is a decision with a reason, never automatic
    (NHS Data Dictionary); "completed" needs a finished course of treatment (at least 2
    attended treatment appointments, NHS Talking Therapies).
    """
    if reason not in DISCHARGE_REASONS:
        raise TherapyRuleBroken("reason", f"must be one of: {', '.join(DISCHARGE_REASONS)}")
    if reason in ("did-not-attend", "other") and not (note and note.strip()):
        raise TherapyRuleBroken("note", f"a discharge for '{reason}' needs a note saying why")
    needed = (policy or clinical_policy().therapy).min_treatment_appointments
    if reason == "completed" and attended_treatment < needed:
        raise TherapyRuleBroken(
            "reason", f"a completed course needs at least {needed} attended treatment appointments"
        )
    return "cancelled" if reason == "declined" else "finished"


def waiting(
    referred_at: datetime, until: datetime, policy: WaitingPolicy | None = None
) -> tuple[int, str]:
    """Days waiting and the state against the 6- and 18-week standards (the policy's
    psychology waits).

    ``until`` is now while the patient waits, and the first attended treatment
    appointment once there is one: the standard measures the wait to treatment.
    """
    policy = policy or clinical_policy().waits
    days = max((until.date() - referred_at.date()).days, 0)
    if days >= policy.psychology_breach_weeks * 7:
        return days, "breached"
    if days >= policy.psychology_alert_weeks * 7:
        return days, "at-risk"
    return days, "within"
