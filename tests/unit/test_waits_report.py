"""The waiting-times report (issue 13) against CLINICAL.md's standards: psychology's first
treatment within 6 weeks (breach at 18), consultant-led within 18 (alert at 12); where
treatment starts for each team is the coordinator's own rule (rules.treatment_started)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import msgspec

from services.coordinator.domain import Pathway
from services.coordinator.reports import waits_by_week, week_of
from shared.policy import clinical_policy

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)  # a Wednesday
RECEIVED = NOW - timedelta(weeks=26)


def pathway(referrals: list[dict[str, Any]], **streams: Any) -> Pathway:
    return msgspec.convert(
        {
            "patient_id": str(uuid4()),
            "stage": "referred",
            "stage_since": RECEIVED.isoformat(),
            "streams": {"referrals": referrals, **streams},
            "timeline": [],
            "measures": {},
            "alerts": [],
            "next_actions": [],
            "event_count": 1,
            "last_event_at": NOW.isoformat(),
        },
        Pathway,
        strict=False,
    )


def referral(
    target: str, status: str = "accepted", received: datetime = RECEIVED
) -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "target": target,
        "priority": "routine",
        "status": status,
        "received_at": received.isoformat(),
    }


def episode(treated_after: timedelta | None) -> dict[str, Any]:
    started = (RECEIVED + treated_after).isoformat() if treated_after else None
    return {
        "id": str(uuid4()),
        "status": "active",
        "referred_at": RECEIVED.isoformat(),
        "attended_treatment": 1 if started else 0,
        "first_treatment_at": started,
    }


def test_each_referral_lands_in_its_week_by_when_treatment_started() -> None:
    psychology = [
        pathway([referral("psychology")], therapy_episode=episode(timedelta(weeks=6)))
        for _ in range(2)
    ]
    psychology.append(
        pathway([referral("psychology")], therapy_episode=episode(timedelta(weeks=6, days=1)))
    )
    psychology.append(
        pathway([referral("psychology")], therapy_episode=episode(timedelta(weeks=18, days=1)))
    )
    psychology.append(pathway([referral("psychology")], therapy_episode=episode(None)))
    psychology.append(pathway([referral("psychology", status="rejected")]))  # never waited
    infusion = pathway(
        [referral("ketamine-infusion")],
        infusion_course={
            "id": str(uuid4()),
            "status": "active",
            "opened_at": RECEIVED.isoformat(),
            "first_session_at": (RECEIVED + timedelta(weeks=12, days=1)).isoformat(),
        },
    )
    mdt = pathway(
        [referral("pain-mdt")],
        mdt_reviews=[
            {
                "id": str(uuid4()),
                "reviewed_at": (RECEIVED + timedelta(weeks=2)).isoformat(),
                "decision": "continue",
                "attendees": ["a"],
                "reviewed_by": "m",
            }
        ],
    )
    rows = waits_by_week([*psychology, infusion, mdt], week_of(RECEIVED), NOW, clinical_policy())
    week = week_of(RECEIVED)
    by_team = {row.team: row for row in rows if row.week_starting == week}
    assert msgspec.structs.asdict(by_team["psychology"]) == {
        "team": "psychology",
        "week_starting": week,
        "referred": 5,
        "treated_within_alert": 2,  # exactly 6 weeks is within
        "treated_within_breach": 1,
        "treated_later": 1,
        "waiting": 1,
        "waiting_past_breach": 1,  # 26 weeks and counting
        "alert_weeks": 6,
        "breach_weeks": 18,
    }
    assert (
        by_team["ketamine-infusion"].treated_within_breach,
        by_team["ketamine-infusion"].alert_weeks,
    ) == (1, 12)
    assert by_team["pain-mdt"].treated_within_alert == 1
    # Every team has a row for every week to this one, most of them empty.
    assert len(rows) == 3 * 27 and rows[-1].week_starting == week_of(NOW)
    assert sum(row.referred for row in rows) == 7


def test_a_week_is_the_clinics_monday_to_sunday() -> None:
    sunday_night = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)  # Sunday, 23:30 in London
    assert week_of(sunday_night).isoformat() == "2026-11-23"
    assert week_of(sunday_night + timedelta(hours=1)).isoformat() == "2026-11-30"
