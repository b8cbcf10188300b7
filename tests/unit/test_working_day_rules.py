"""Working-day rules in the clinic's calendar (issue 12).

CLINICAL.md, Waiting times: "urgent referrals: triage within 2 working days (local
policy)"; "working days and 'same working day' follow the clinic's calendar: its time
zone (default Europe/London) and England and Wales bank holidays". CLINICAL.md,
Measures: PHQ-9 item 9 above 0 → urgent safety alert, "same working day".
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.coordinator import rules
from shared import triage


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("received", "due"),
    [
        # Friday 2 May 2025, 10:00 in London; Monday 5 May is the early May bank holiday
        (utc(2025, 5, 2, 9, 0), utc(2025, 5, 7, 9, 0)),
        # Thursday before Good Friday (18 April 2025) and Easter Monday (21 April)
        (utc(2025, 4, 17, 9, 0), utc(2025, 4, 23, 9, 0)),
        # Tuesday 23:30 UTC is already Wednesday in London (BST): due Friday
        (utc(2025, 7, 1, 23, 30), utc(2025, 7, 3, 23, 30)),
    ],
)
def test_urgent_triage_is_due_in_two_working_days_of_the_clinic_calendar(
    received: datetime, due: datetime
) -> None:
    """CLINICAL.md Waiting times: urgent triage within 2 working days, bank holidays and
    the clinic's time zone included; the coordinator's rule is the shared function."""
    assert triage.triage_due(received, "urgent") == due
    assert rules.triage_due(received, "urgent") == due


def test_item9_is_due_by_the_end_of_the_clinic_working_day() -> None:
    """CLINICAL.md Measures: item 9 above 0 → urgent safety alert, same working day, in
    the clinic's calendar: an answer on a bank-holiday weekend is due by the end of the
    next working day, at 23:59:59 London time."""
    saturday = utc(2025, 5, 3, 10, 0)  # Monday 5 May is a bank holiday
    alert = rules.phq9_item9_alert(1, saturday, "therapy session")
    assert alert is not None
    assert alert.due == utc(2025, 5, 6, 22, 59, 59)
    # 23:30 UTC on a Wednesday in summer is Thursday in London: due Thursday night
    late = rules.phq9_item9_alert(2, utc(2025, 7, 2, 23, 30), "therapy session")
    assert late is not None
    assert late.due == utc(2025, 7, 3, 22, 59, 59)
