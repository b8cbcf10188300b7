"""Waiting times by team and week of referral (issue 13, the admin's report): how many
referrals each team received each week, how many started treatment within the alert and
the breach standards (CLINICAL.md, Waiting times: psychology 6 and 18 weeks, consultant-led
12 and 18), how many started later, and how many are still waiting, past the breach or
not. Pure: it reads folded pathways and the one policy; the command loads them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

import msgspec

from services.coordinator.domain import Pathway
from services.coordinator.rules import alert_weeks, breach_weeks, treatment_started_at
from shared.calendar import working_calendar
from shared.policy import ClinicalPolicy

TEAMS = ("psychology", "ketamine-infusion", "pain-mdt")
# A referral that was rejected or withdrawn never waited for treatment from this team.
NOT_WAITING = ("rejected", "cancelled")


class WaitsWeek(msgspec.Struct, frozen=True, kw_only=True):
    team: str
    week_starting: date
    referred: int
    treated_within_alert: int
    treated_within_breach: int
    treated_later: int
    waiting: int
    waiting_past_breach: int
    alert_weeks: int
    breach_weeks: int


def week_of(moment: datetime) -> date:
    """The Monday of the moment's week on the clinic's calendar."""
    day = working_calendar().day_of(moment)
    return day - timedelta(days=day.weekday())


def waits_by_week(
    pathways: Iterable[Pathway], first_week: date, now: datetime, policy: ClinicalPolicy
) -> list[WaitsWeek]:
    """One row per team and week from `first_week` to this week, oldest week first."""
    tally: dict[tuple[str, date], dict[str, int]] = {}
    for pathway in pathways:
        for referral in pathway.streams.referrals:
            week = week_of(referral.received_at)
            if referral.target not in TEAMS or referral.status in NOT_WAITING or week < first_week:
                continue
            started = treatment_started_at(pathway.streams, referral)
            waited = (started or now) - referral.received_at
            row = tally.setdefault((referral.target, week), {})
            row["referred"] = row.get("referred", 0) + 1
            if started is None:
                outcome = "waiting"
                if waited > timedelta(weeks=breach_weeks(referral.target, policy)):
                    row["waiting_past_breach"] = row.get("waiting_past_breach", 0) + 1
            elif waited <= timedelta(weeks=alert_weeks(referral.target, policy)):
                outcome = "treated_within_alert"
            elif waited <= timedelta(weeks=breach_weeks(referral.target, policy)):
                outcome = "treated_within_breach"
            else:
                outcome = "treated_later"
            row[outcome] = row.get(outcome, 0) + 1
    weeks = []
    week = first_week
    while week <= week_of(now):
        weeks.append(week)
        week += timedelta(weeks=1)
    return [
        WaitsWeek(
            team=team,
            week_starting=week,
            referred=(row := tally.get((team, week), {})).get("referred", 0),
            treated_within_alert=row.get("treated_within_alert", 0),
            treated_within_breach=row.get("treated_within_breach", 0),
            treated_later=row.get("treated_later", 0),
            waiting=row.get("waiting", 0),
            waiting_past_breach=row.get("waiting_past_breach", 0),
            alert_weeks=alert_weeks(team, policy),
            breach_weeks=breach_weeks(team, policy),
        )
        for team in TEAMS
        for week in weeks
    ]
