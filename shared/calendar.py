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

    def local(self, moment: datetime) -> datetime:
        """The moment on the clinic's wall clock (for people, never for storage)."""
        return moment.astimezone(self.zone)

    def day_of(self, moment: datetime) -> date:
        return self.local(moment).date()

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

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
        day = local.date()
        for _ in range(days):
            day = self.next_working_day(day)
        due = datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=self.zone)
        return due.astimezone(UTC)

    def end_of_working_day(self, moment: datetime) -> datetime:
        """'Same working day': the end of the moment's day if it is a working day, else the
        end of the next working day (an answer on Saturday is due by Monday's close)."""
        day = self.day_of(moment)
        if not self.is_working_day(day):
            day = self.next_working_day(day)
        return datetime.combine(day, time(23, 59, 59), tzinfo=self.zone).astimezone(UTC)

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days after the start's day up to and including the end's day (spans are
        weeks to months, so counting day by day is cheap and plainly right)."""
        first, last = self.day_of(start), self.day_of(end)
        span = (last - first).days
        return sum(1 for n in range(1, span + 1) if self.is_working_day(first + timedelta(days=n)))


@cache
def working_calendar(
    time_zone: str = "Europe/London", bank_holidays: str = "GB-ENG"
) -> WorkingCalendar:
    return WorkingCalendar(time_zone, bank_holidays)
