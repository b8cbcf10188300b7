"""When a referral's triage falls due: one function, for the referrals inbox and the
coordinator alike, so the two can never disagree about a deadline.

CLINICAL.md, Waiting times: urgent referrals are triaged within 2 working days (local
policy), and working days follow the clinic's calendar (its time zone and England and
Wales bank holidays, shared/calendar.py). CLINICAL.md sets no triage time for routine
referrals; carepath's working target is 5 working days (local policy).
"""

from __future__ import annotations

from datetime import datetime

from shared.calendar import working_calendar
from shared.policy import ClinicalPolicy, clinical_policy


def triage_working_days(priority: str, policy: ClinicalPolicy | None = None) -> int:
    waits = (policy or clinical_policy()).waits
    if priority == "urgent":
        return waits.urgent_triage_working_days
    return waits.routine_triage_working_days


def triage_due(
    received_at: datetime, priority: str, policy: ClinicalPolicy | None = None
) -> datetime:
    """The same wall-clock time on the n-th working day after the referral arrived (a
    Friday 16:00 urgent referral is due on Tuesday at 16:00; after a bank-holiday
    Monday, on Wednesday)."""
    days = triage_working_days(priority, policy)
    return working_calendar().add_working_days(received_at, days)


def same_working_day(seen_at: datetime) -> datetime:
    """CLINICAL.md, Measures: "same working day": the end of the clinic's working day on
    which it was seen (the next working day's end when seen on a weekend or holiday)."""
    return working_calendar().end_of_working_day(seen_at)
