"""The clinic's working calendar: its time zone and its bank holidays.

CLINICAL.md, Waiting times: working days and "same working day" follow the clinic's
calendar, its time zone (default Europe/London) and England and Wales bank holidays;
every time shown to a person is in the clinic's time zone. Bank holidays come from the
`holidays` package (which follows the gov.uk list, substitute days included), never
from a hand-made list that would go stale.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import TypeVar
from zoneinfo import ZoneInfo

import holidays

# A year with no working day in it would be a configuration error, not a calendar.
MAX_SEARCH_DAYS = 366


class WorkingCalendar:
    """Working days are Monday to Friday in the clinic's time zone, less bank holidays."""

    def __init__(self, time_zone: str = "Europe/London", bank_holidays: str = "GB-ENG") -> None:
        self.zone = ZoneInfo(time_zone)
        country, _, subdivision = bank_holidays.partition("-")
        self.holidays = holidays.country_holidays(country, subdiv=subdivision or None)
        self.time_zone = time_zone
        self.bank_holidays = bank_holidays
        self._by_year: dict[int, frozenset[date]] = {}
        # Answers by day: an inbox page asks the same few (its referrals arrived on a
        # few days, all judged today), and a day's answer never changes.
        self._nth_after: dict[tuple[date, int], date] = {}
        self._count_after: dict[tuple[date, date], int] = {}

    def _holidays_in(self, year: int) -> frozenset[date]:
        # The package's own lookup converts its key on every call; an inbox page asks
        # about thousands of days (each referral's wait, day by day before this).
        found = self._by_year.get(year)
        if found is None:
            self.holidays.get(date(year, 1, 1))  # fills in that year's holidays
            found = frozenset(day for day in self.holidays if day.year == year)
            self._by_year[year] = found
        return found

    def local(self, moment: datetime) -> datetime:
        """The moment on the clinic's wall clock (for people, never for storage)."""
        return moment.astimezone(self.zone)

    def day_of(self, moment: datetime) -> date:
        return self.local(moment).date()

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self._holidays_in(day.year)

    def bank_holiday(self, day: date) -> str | None:
        return self.holidays.get(day)

    def next_working_day(self, day: date) -> date:
        """The first working day after `day`."""
        for offset in range(1, MAX_SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if self.is_working_day(candidate):
                return candidate
        raise ValueError(f"no working day within a year after {day}")

    def add_working_days(self, moment: datetime, days: int) -> datetime:
        """The same wall-clock time on the `days`-th working day after the moment's day:
        a referral received on Friday at 16:00 with two working days is due on Tuesday
        at 16:00 (Monday at 16:00 after a bank-holiday Monday is Wednesday)."""
        local = self.local(moment)
        day = self._nth_working_day_after(local.date(), days)
        due = datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=self.zone)
        return due.astimezone(UTC)

    def _nth_working_day_after(self, start: date, days: int) -> date:
        found = self._nth_after.get((start, days))
        if found is None:
            found = start
            for _ in range(days):
                found = self.next_working_day(found)
            _keep(self._nth_after, (start, days), found)
        return found

    def end_of_working_day(self, moment: datetime) -> datetime:
        """'Same working day': the end of the moment's day if it is a working day, else the
        end of the next working day (an answer on Saturday is due by Monday's close)."""
        day = self.day_of(moment)
        if not self.is_working_day(day):
            day = self.next_working_day(day)
        return datetime.combine(day, time(23, 59, 59), tzinfo=self.zone).astimezone(UTC)

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days after the start's day up to and including the end's day."""
        return self.working_days_after(self.day_of(start), self.day_of(end))

    def working_days_after(self, first: date, last: date) -> int:
        """Working days after `first` up to and including `last`: the weekdays, counted
        a whole week at a time, less the bank holidays on weekdays in between."""
        span = (last - first).days
        if span <= 0:
            return 0
        found = self._count_after.get((first, last))
        if found is None:
            found = self._count_working_days(first, last, span)
            _keep(self._count_after, (first, last), found)
        return found

    def _count_working_days(self, first: date, last: date, span: int) -> int:
        weeks, rest = divmod(span, 7)
        weekdays = 5 * weeks + sum(
            1 for n in range(1, rest + 1) if (first + timedelta(days=n)).weekday() < 5
        )
        closed = sum(
            1
            for year in range(first.year, last.year + 1)
            for day in self._holidays_in(year)
            if first < day <= last and day.weekday() < 5
        )
        return weekdays - closed


K = TypeVar("K")
V = TypeVar("V")
# Days asked about in a long-running process: referrals' arrival days times the days
# they were judged on. Past this the answers are forgotten and worked out again.
ANSWERS_KEPT = 100_000


def _keep(answers: dict[K, V], key: K, value: V) -> None:
    if len(answers) >= ANSWERS_KEPT:
        answers.clear()
    answers[key] = value


@cache
def working_calendar(
    time_zone: str = "Europe/London", bank_holidays: str = "GB-ENG"
) -> WorkingCalendar:
    return WorkingCalendar(time_zone, bank_holidays)
