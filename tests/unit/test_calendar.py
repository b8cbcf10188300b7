"""CLINICAL.md, Waiting times: working days follow the clinic's time zone (default
Europe/London) and England and Wales bank holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.calendar import WorkingCalendar

LONDON = WorkingCalendar()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2027, 1, 4), True),  # Monday
        (date(2027, 1, 2), False),  # Saturday
        (date(2027, 3, 26), False),  # Good Friday
        (date(2027, 3, 29), False),  # Easter Monday
        (date(2026, 12, 28), False),  # Boxing Day (substitute day)
        (date(2027, 8, 30), False),  # Summer bank holiday (England, not Scotland)
        (date(2027, 8, 2), True),  # Scotland's summer holiday is a working day in England
    ],
)
def test_working_days_are_weekdays_less_england_and_wales_bank_holidays(
    day: date, working: bool
) -> None:
    assert LONDON.is_working_day(day) is working


def test_scotland_has_its_own_bank_holidays() -> None:
    assert WorkingCalendar(bank_holidays="GB-SCT").is_working_day(date(2027, 8, 2)) is False


def test_two_working_days_from_friday_afternoon_is_tuesday_afternoon() -> None:
    # Friday 8 January 2027 at 16:00 in London (GMT)
    assert LONDON.add_working_days(utc(2027, 1, 8, 16, 0), 2) == utc(2027, 1, 12, 16, 0)


def test_a_bank_holiday_monday_pushes_the_due_day_on() -> None:
    # Thursday before Easter 2027: Good Friday and Easter Monday are not working days
    assert LONDON.add_working_days(utc(2027, 3, 25, 10, 0), 2) == utc(2027, 3, 31, 9, 0)


def test_the_day_is_the_clinics_local_day_not_utcs() -> None:
    # 23:30 UTC on Friday 2 July 2027 is already Saturday 00:30 in London (BST)
    late_friday = utc(2027, 7, 2, 23, 30)
    assert LONDON.day_of(late_friday) == date(2027, 7, 3)
    assert LONDON.add_working_days(late_friday, 1) == utc(2027, 7, 4, 23, 30)  # Monday 00:30 BST


def test_same_working_day_is_the_end_of_that_day_or_of_the_next_working_day() -> None:
    assert LONDON.end_of_working_day(utc(2027, 1, 6, 10, 0)) == utc(2027, 1, 6, 23, 59, 59)
    # Saturday → Monday's close; summer time: 23:59:59 BST is 22:59:59 UTC
    assert LONDON.end_of_working_day(utc(2027, 7, 3, 10, 0)) == utc(2027, 7, 5, 22, 59, 59)


def test_working_days_between_counts_after_the_start_up_to_the_end() -> None:
    friday = utc(2027, 1, 8, 16, 0)
    assert LONDON.working_days_between(friday, utc(2027, 1, 9, 12, 0)) == 0
    assert LONDON.working_days_between(friday, utc(2027, 1, 11, 9, 0)) == 1
    assert LONDON.working_days_between(friday, utc(2027, 1, 12, 9, 0)) == 2
    assert LONDON.working_days_between(utc(2027, 1, 12), friday) == 0
    # Christmas 2026: 25th (Fri), 28th (Boxing Day substitute) and 1 January are holidays
    assert LONDON.working_days_between(utc(2026, 12, 24, 12), utc(2027, 1, 4, 12)) == 4


def test_the_count_reaches_the_allowance_on_the_due_day() -> None:
    received = utc(2027, 3, 25, 10, 0)
    due = LONDON.add_working_days(received, 2)
    assert LONDON.working_days_between(received, due) == 2


@settings(max_examples=300, deadline=None)
@given(
    first=st.dates(min_value=date(2019, 1, 1), max_value=date(2031, 12, 31)),
    span=st.integers(min_value=-10, max_value=800),
    calendar=st.sampled_from([LONDON, WorkingCalendar("Europe/London", "GB-SCT")]),
)
def test_working_days_counted_a_week_at_a_time_equal_counting_day_by_day(
    first: date, span: int, calendar: WorkingCalendar
) -> None:
    """The inbox counts each referral's wait; counting whole weeks must give exactly what
    asking the holidays package about every day gives."""
    last = first + timedelta(days=span)
    day_by_day = sum(
        1
        for n in range(1, span + 1)
        if (first + timedelta(days=n)).weekday() < 5
        and (first + timedelta(days=n)) not in calendar.holidays
    )
    assert calendar.working_days_after(first, last) == day_by_day


def test_answers_kept_by_day_stay_right_when_the_keep_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An inbox page asks the same days again (issue 15): the answers are kept by day, up
    to a bound, then forgotten and worked out again, never mixed up."""
    monkeypatch.setattr("shared.calendar.ANSWERS_KEPT", 3)
    calendar = WorkingCalendar()
    friday = utc(2027, 1, 8, 16, 0)
    expected = [utc(2027, 1, 8 + gap, 16, 0) for gap in (3, 4, 5, 6, 7)]  # Mon..Fri
    for _ in range(2):
        assert [calendar.add_working_days(friday, n) for n in range(1, 6)] == expected
        counts = [calendar.working_days_after(date(2027, 1, 8), due.date()) for due in expected]
        assert counts == [1, 2, 3, 4, 5]
    assert len(calendar._nth_after) <= 3 and len(calendar._count_after) <= 3
