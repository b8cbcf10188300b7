"""Time-based alerts: the rules that find crossed thresholds, the fold that turns the
clock's `pathway.alert.raised` events into alerts and clears them, and the clock itself
against a real coordinator database.

Every threshold here comes from ../shared/CLINICAL.md, "Waiting times" and "Course rules".
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from sqlmodel import col, select

from services.coordinator.app import SPEC
from services.coordinator.clock import new_crossings, raise_crossed, tick
from services.coordinator.domain import (
    Alert,
    InfusionCourseStream,
    MdtReviewStream,
    Pathway,
    ReferralStream,
    Streams,
    TherapyEpisodeStream,
)
from services.coordinator.handlers import handle_event, rebuild_pathways
from services.coordinator.models import PathwayAlert, PathwayRow
from services.coordinator.projection import project
from services.coordinator.rules import (
    NOTHING_DUE,
    Crossing,
    crossed,
    escalation_due,
    time_alert,
    triage_due,
)
from shared.events import Actor, Envelope, Subject, new_event, payload_type
from shared.events.catalogue import PathwayAlertRaised
from shared.messaging import make_broker
from shared.policy import default_policy
from shared.runtime import ServiceRuntime
from shared.settings import BrokerKind, PlatformSettings, RunMode, load_service_settings
from shared.tables import OutboxEvent, as_utc
from shared.triage import same_working_day

from .factories import ACTOR, T0, patient_registered, referral_received

PATIENT = UUID("8ebea596-73f2-4e45-a0d7-c9d0e1f2a3b4")
REFERRAL = UUID("9fcfb6a7-8403-4f56-b1e8-d0e1f2a3b4c5")
PSYCHOLOGY_REFERRAL = UUID("a0d0c7b8-9514-4067-82f9-e1f2a3b4c5d6")
COURSE = UUID("b1e1d8c9-a625-4178-930a-f2a3b4c5d6e7")
EPISODE = UUID("c2f2e9da-b736-4289-a41b-a3b4c5d6e7f8")

SECOND = timedelta(seconds=1)
MONDAY = T0  # 2025-03-03 09:00 UTC
FRIDAY = T0 + timedelta(days=4)  # 2025-03-07 09:00 UTC
CLOCK = Actor(user_id="coordinator-clock", role="service")
WAITS = ("waiting-time", "waiting-breach")
# The shipped clinical policy's thresholds (shared/policy.toml).
POLICY = default_policy()
PSYCHOLOGY_ALERT_WEEKS = POLICY.waits.psychology_alert_weeks
PSYCHOLOGY_BREACH_WEEKS = POLICY.waits.psychology_breach_weeks
CONSULTANT_ALERT_WEEKS = POLICY.waits.consultant_alert_weeks
CONSULTANT_BREACH_WEEKS = POLICY.waits.consultant_breach_weeks
PSYCHOLOGY_SUGGESTION_DAYS = POLICY.waits.psychology_suggestion_days
MAINTENANCE_GRACE = timedelta(days=POLICY.course.maintenance_grace_days)


# --- stream builders (for the pure rules) -------------------------------------------------


def referral(
    target: str = "psychology",
    priority: str = "routine",
    status: str = "received",
    received_at: datetime = MONDAY,
    referral_id: UUID = REFERRAL,
) -> ReferralStream:
    return ReferralStream(
        id=str(referral_id),
        target=target,
        priority=priority,
        status=status,
        received_at=received_at,
    )


def course(
    status: str = "active",
    first_session_at: datetime | None = None,
    maintenance_due_at: datetime | None = None,
) -> InfusionCourseStream:
    return InfusionCourseStream(
        id=str(COURSE),
        status=status,
        opened_at=MONDAY,
        first_session_at=first_session_at,
        maintenance_due_at=maintenance_due_at,
    )


def episode(
    attended_treatment: int = 0, discharge_reason: str | None = None
) -> TherapyEpisodeStream:
    return TherapyEpisodeStream(
        id=str(EPISODE),
        status="cancelled" if discharge_reason == "declined" else "active",
        referred_at=MONDAY,
        attended_treatment=attended_treatment,
        discharge_reason=discharge_reason,
    )


def review(reviewed_at: datetime) -> MdtReviewStream:
    return MdtReviewStream(
        id=str(uuid4()),
        reviewed_at=reviewed_at,
        decision="continue",
        attendees=["dr-a", "dr-b"],
        reviewed_by="dr-a",
    )


def of_kind(crossings: list[Crossing], *kinds: str) -> list[Crossing]:
    return [c for c in crossings if c.kind in kinds]


# --- event builders (for the fold and the clock) ------------------------------------------


def event(
    event_type: str,
    subject: tuple[str, UUID],
    at: datetime,
    *,
    patient: UUID = PATIENT,
    producer: str = "test",
    sequence: int = 0,
    **data: Any,
) -> Envelope:
    """Any catalogued event, its payload checked against the catalogue."""
    payload = payload_type(event_type, 1)
    assert payload is not None
    envelope = new_event(
        type=event_type,
        data=msgspec.convert(data, payload, from_attributes=True),
        producer=producer,
        patient_id=patient,
        subject=Subject(type=subject[0], id=str(subject[1])),
        actor=ACTOR,
        correlation_id="corr-time",
        occurred_at=at,
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def alert_raised(
    kind: str,
    subject: UUID,
    crossed_at: datetime,
    at: datetime | None = None,
    *,
    patient: UUID = PATIENT,
) -> Envelope:
    """What the coordinator's clock records when it sees a threshold pass."""
    return new_event(
        type="pathway.alert.raised",
        data=PathwayAlertRaised(kind=kind, subject=str(subject), crossed_at=crossed_at),
        producer="coordinator",
        patient_id=patient,
        subject=Subject(type="pathway", id=str(patient)),
        actor=CLOCK,
        correlation_id="corr-time",
        occurred_at=at or crossed_at + timedelta(minutes=1),
    )


def referral_status(
    event_type: str,
    at: datetime,
    *,
    referral_id: UUID = REFERRAL,
    target: str = "psychology",
    sequence: int = 2,
    patient: UUID = PATIENT,
) -> Envelope:
    """referral.accepted / rejected / cancelled / info_requested for one referral."""
    fields_of: dict[str, dict[str, Any]] = {
        "referral.accepted": {
            "priority": "urgent",
            "conditions": ["depression"],
            "accepted_at": at,
        },
        "referral.rejected": {"rejected_at": at},
        "referral.cancelled": {"previous_status": "received", "cancelled_at": at},
        "referral.info_requested": {"requested_at": at},
        "referral.info_provided": {"provided_at": at},
    }
    fields = fields_of[event_type]
    return event(
        event_type,
        ("referral", referral_id),
        at,
        patient=patient,
        producer="referrals",
        sequence=sequence,
        referral_id=referral_id,
        target=target,
        **fields,
    )


def acknowledged(alert_id: str, kind: str, at: datetime) -> Envelope:
    return event(
        "pathway.alert.acknowledged",
        ("pathway", PATIENT),
        at,
        producer="coordinator",
        alert_id=alert_id,
        kind=kind,
        by_user="dr-psych",
        by_role="psychologist",
        handled_at=at,
    )


def course_opened(at: datetime) -> Envelope:
    return event(
        "infusion.course.opened",
        ("infusion-course", COURSE),
        at,
        producer="infusions",
        sequence=1,
        course_id=COURSE,
        referral_id=REFERRAL,
        priority="routine",
        opened_at=at,
    )


def session_started(at: datetime, number: int = 1) -> Envelope:
    return event(
        "infusion.session.started",
        ("infusion-course", COURSE),
        at,
        producer="infusions",
        sequence=1 + number,
        course_id=COURSE,
        session_id=uuid4(),
        number=number,
        started_at=at,
    )


def mdt_review(at: datetime) -> Envelope:
    return event(
        "mdt.review.recorded",
        ("pathway", PATIENT),
        at,
        producer="coordinator",
        review_id=uuid4(),
        decision="continue",
        attendees=["dr-a", "dr-b"],
        reviewed_by="dr-a",
        reviewed_at=at,
    )


def urgent_psychology(at: datetime = FRIDAY, patient: UUID = PATIENT) -> list[Envelope]:
    """A patient with one urgent psychology referral, still waiting for triage."""
    return [
        patient_registered(patient, occurred_at=at - timedelta(hours=1)),
        referral_received(
            patient, occurred_at=at, referral_id=REFERRAL, target="psychology", priority="urgent"
        ),
    ]


def builtins(pathway: Pathway) -> Any:
    return msgspec.to_builtins(pathway)


# --- A. crossed(): each threshold, one second before and at the moment ----------------------


@pytest.mark.parametrize(
    ("priority", "received_at", "due"),
    [
        # urgent, Friday → Tuesday: Saturday and Sunday are not working days
        ("urgent", FRIDAY, datetime(2025, 3, 11, 9, 0, tzinfo=UTC)),
        ("urgent", MONDAY, datetime(2025, 3, 5, 9, 0, tzinfo=UTC)),
        # received on a Saturday: Monday is the first working day, Tuesday the second
        (
            "urgent",
            datetime(2025, 3, 8, 14, 30, tzinfo=UTC),
            datetime(2025, 3, 11, 14, 30, tzinfo=UTC),
        ),
        ("routine", FRIDAY, datetime(2025, 3, 14, 9, 0, tzinfo=UTC)),
        ("routine", MONDAY, datetime(2025, 3, 10, 9, 0, tzinfo=UTC)),
    ],
)
def test_an_untriaged_referral_is_overdue_after_its_working_days(
    priority: str, received_at: datetime, due: datetime
) -> None:
    """CLINICAL.md Waiting times: "urgent referrals: triage within 2 working days (local
    policy)"; routine: 5 working days, this service's working target (rules.triage_due)."""
    streams = Streams(referrals=[referral(priority=priority, received_at=received_at)])
    assert triage_due(received_at, priority) == due
    assert crossed(streams, due - SECOND) == []
    assert crossed(streams, due) == [Crossing("triage-overdue", str(REFERRAL), due)]
    assert crossed(streams, due + timedelta(days=3)) == [
        Crossing("triage-overdue", str(REFERRAL), due)
    ]


@pytest.mark.parametrize("status", ["info-requested", "accepted"])
def test_a_referral_in_triage_or_accepted_is_not_overdue_for_triage(status: str) -> None:
    """CLINICAL.md Waiting times: the triage clock is for referrals nobody has looked at."""
    streams = Streams(referrals=[referral(priority="urgent", status=status)])
    assert of_kind(crossed(streams, MONDAY + timedelta(weeks=5)), "triage-overdue") == []


@pytest.mark.parametrize("status", ["received", "accepted"])
def test_psychology_waits_alert_at_six_weeks_and_breach_at_eighteen(status: str) -> None:
    """CLINICAL.md Waiting times: psychology, "first attended treatment appointment within
    6 weeks ... and within 18 weeks ...: alert at 6 weeks, breach at 18"."""
    streams = Streams(referrals=[referral(status=status)])
    six = MONDAY + timedelta(weeks=PSYCHOLOGY_ALERT_WEEKS)
    eighteen = MONDAY + timedelta(weeks=PSYCHOLOGY_BREACH_WEEKS)
    assert six == MONDAY + timedelta(weeks=6) and eighteen == MONDAY + timedelta(weeks=18)
    alert = Crossing("waiting-time", str(REFERRAL), six)
    breach = Crossing("waiting-breach", str(REFERRAL), eighteen)
    assert of_kind(crossed(streams, six - SECOND), *WAITS) == []
    assert of_kind(crossed(streams, six), *WAITS) == [alert]
    assert of_kind(crossed(streams, eighteen - SECOND), *WAITS) == [alert]
    assert of_kind(crossed(streams, eighteen), *WAITS) == [alert, breach]


def test_psychology_wait_ends_at_the_first_attended_treatment_appointment() -> None:
    """CLINICAL.md Waiting times: the standard is the first *attended treatment*
    appointment; an episode with none attended is still waiting."""
    late = MONDAY + timedelta(weeks=20)
    waiting = Streams(referrals=[referral(status="accepted")], therapy_episode=episode(0))
    assert [c.kind for c in crossed(waiting, late)] == ["waiting-time", "waiting-breach"]
    treated = Streams(referrals=[referral(status="accepted")], therapy_episode=episode(1))
    assert crossed(treated, late) == []


@pytest.mark.parametrize("status", ["rejected", "cancelled", "closed"])
def test_an_ended_referral_has_no_waiting_clock(status: str) -> None:
    streams = Streams(referrals=[referral(status=status)])
    assert crossed(streams, MONDAY + timedelta(weeks=30)) == []


def test_infusion_clinic_waits_alert_at_twelve_weeks_not_six_and_breach_at_eighteen() -> None:
    """CLINICAL.md Waiting times: consultant-led treatment, "alert at 12 weeks (local
    policy), breach at 18"."""
    streams = Streams(referrals=[referral(target="ketamine-infusion", status="accepted")])
    six = MONDAY + timedelta(weeks=6)
    twelve = MONDAY + timedelta(weeks=CONSULTANT_ALERT_WEEKS)
    eighteen = MONDAY + timedelta(weeks=CONSULTANT_BREACH_WEEKS)
    assert twelve == MONDAY + timedelta(weeks=12)
    assert crossed(streams, six) == []
    assert crossed(streams, twelve - SECOND) == []
    assert crossed(streams, twelve) == [Crossing("waiting-time", str(REFERRAL), twelve)]
    assert crossed(streams, eighteen - SECOND) == [Crossing("waiting-time", str(REFERRAL), twelve)]
    assert crossed(streams, eighteen) == [
        Crossing("waiting-time", str(REFERRAL), twelve),
        Crossing("waiting-breach", str(REFERRAL), eighteen),
    ]


def test_infusion_clinic_wait_ends_at_the_first_infusion() -> None:
    """CLINICAL.md Waiting times: consultant-led treatment *starts*: the first infusion."""
    late = MONDAY + timedelta(weeks=20)
    accepted = referral(target="ketamine-infusion", status="accepted")
    opened_only = Streams(referrals=[accepted], infusion_course=course(status="planned"))
    assert [c.kind for c in crossed(opened_only, late)] == ["waiting-time", "waiting-breach"]
    started = Streams(
        referrals=[accepted],
        infusion_course=course(first_session_at=MONDAY + timedelta(weeks=19)),
        # a psychology episode exists, so the course raises no suggestion of its own
        therapy_episode=episode(0),
    )
    assert crossed(started, late) == []


def test_pain_mdt_wait_ends_at_a_review_after_the_referral_not_before() -> None:
    """CLINICAL.md Waiting times: pain MDT is consultant-led (12 and 18 weeks); its
    treatment begins with the MDT's first review after the referral arrived."""
    late = MONDAY + timedelta(weeks=20)
    pain = referral(target="pain-mdt", status="accepted")
    twelve = MONDAY + timedelta(weeks=12)
    eighteen = MONDAY + timedelta(weeks=18)
    older = Streams(referrals=[pain], mdt_reviews=[review(MONDAY - timedelta(days=30))])
    assert crossed(older, late) == [
        Crossing("waiting-time", str(REFERRAL), twelve),
        Crossing("waiting-breach", str(REFERRAL), eighteen),
    ]
    assert crossed(older, twelve - SECOND) == []
    after = Streams(referrals=[pain], mdt_reviews=[review(MONDAY + timedelta(weeks=13))])
    assert crossed(after, late) == []
    same_moment = Streams(referrals=[pain], mdt_reviews=[review(MONDAY)])
    assert crossed(same_moment, late) == []


@pytest.mark.parametrize("status", ["planned", "active"])
def test_a_planned_maintenance_infusion_is_overdue_a_day_after_it_was_due(status: str) -> None:
    """CLINICAL.md Course rules: "alert when a planned maintenance infusion is overdue"
    (overdue once the due day has passed: MAINTENANCE_GRACE, one day)."""
    assert timedelta(days=1) == MAINTENANCE_GRACE
    due = MONDAY + timedelta(days=28)
    streams = Streams(referrals=[], infusion_course=course(status, maintenance_due_at=due))
    assert crossed(streams, due) == []
    assert crossed(streams, due + timedelta(days=1) - SECOND) == []
    assert crossed(streams, due + timedelta(days=1)) == [
        Crossing("maintenance-overdue", str(COURSE), due + timedelta(days=1))
    ]


@pytest.mark.parametrize("status", ["onhold", "finished", "cancelled"])
def test_a_course_on_hold_or_ended_has_no_overdue_maintenance(status: str) -> None:
    due = MONDAY + timedelta(days=28)
    streams = Streams(referrals=[], infusion_course=course(status, maintenance_due_at=due))
    assert crossed(streams, due + timedelta(days=30)) == []


def test_infusions_without_psychology_suggest_a_referral_after_fourteen_days() -> None:
    """CLINICAL.md Waiting times: "when an infusion course starts and no psychology
    referral exists or is declined, suggest one within 14 days (local policy)"."""
    started = MONDAY + timedelta(weeks=2)
    due = started + timedelta(days=PSYCHOLOGY_SUGGESTION_DAYS)
    assert due == started + timedelta(days=14)
    streams = Streams(
        referrals=[referral(target="ketamine-infusion", status="accepted")],
        infusion_course=course(first_session_at=started),
    )
    assert crossed(streams, due - SECOND) == []
    assert crossed(streams, due) == [Crossing("no-psychology-referral", str(COURSE), due)]


@pytest.mark.parametrize(
    ("psychology", "suggested"),
    [
        ("received", False),
        ("accepted", False),
        ("episode", False),
        # a referral the team rejected or that was cancelled is no psychology: suggest again
        ("rejected", True),
        ("cancelled", True),
    ],
)
def test_a_live_psychology_referral_or_episode_stops_the_suggestion(
    psychology: str, suggested: bool
) -> None:
    """CLINICAL.md Waiting times: suggest one when no psychology referral exists "or is
    declined"."""
    started = MONDAY + timedelta(weeks=2)
    infusion = referral(target="ketamine-infusion", status="accepted")
    if psychology == "episode":
        streams = Streams(
            referrals=[infusion],
            infusion_course=course(first_session_at=started),
            therapy_episode=episode(0),
        )
    else:
        other = referral(
            status=psychology,
            received_at=started + timedelta(days=1),
            referral_id=PSYCHOLOGY_REFERRAL,
        )
        streams = Streams(
            referrals=[infusion, other], infusion_course=course(first_session_at=started)
        )
    found = of_kind(crossed(streams, started + timedelta(days=20)), "no-psychology-referral")
    due = started + timedelta(days=14)
    expected = [Crossing("no-psychology-referral", str(COURSE), due)] if suggested else []
    assert found == expected


# --- B. time_alert(): severity, owner, wording per kind ----------------------------------


@pytest.mark.parametrize(
    ("target", "priority", "kind", "weeks", "severity", "owner", "words", "due_weeks"),
    [
        ("psychology", "urgent", "triage-overdue", None, "urgent", "psychologist", "2 working", 0),
        (
            "ketamine-infusion",
            "routine",
            "triage-overdue",
            None,
            "warning",
            "infusion-clinician",
            "5 working",
            0,
        ),
        ("psychology", "routine", "waiting-time", 6, "warning", "psychologist", "6 weeks", 18),
        (
            "ketamine-infusion",
            "routine",
            "waiting-time",
            12,
            "warning",
            "infusion-clinician",
            "12 weeks",
            18,
        ),
        ("pain-mdt", "routine", "waiting-time", 12, "warning", "mdt", "12 weeks", 18),
        ("psychology", "routine", "waiting-breach", 18, "urgent", "psychologist", "18 weeks", 18),
        ("pain-mdt", "urgent", "waiting-breach", 18, "urgent", "mdt", "18 weeks", 18),
    ],
)
def test_a_referral_time_alert_goes_to_the_team_that_triages_and_treats(
    target: str,
    priority: str,
    kind: str,
    weeks: int | None,
    severity: str,
    owner: str,
    words: str,
    due_weeks: int,
) -> None:
    """CLINICAL.md Waiting times: triage 2 working days; psychology 6 and 18 weeks;
    consultant-led 12 and 18 weeks (a breach is urgent)."""
    stream = referral(target=target, priority=priority, received_at=FRIDAY)
    streams = Streams(referrals=[stream])
    at = triage_due(FRIDAY, priority) if weeks is None else FRIDAY + timedelta(weeks=weeks)
    crossing = Crossing(kind, str(REFERRAL), at)
    assert crossing in crossed(streams, at)  # the rule and the alert agree on the moment
    alert = time_alert(crossing, streams)
    assert (alert.kind, alert.severity, alert.owner_role, alert.status) == (
        kind,
        severity,
        owner,
        "open",
    )
    assert (alert.raised_at, alert.subject, alert.cleared_at) == (at, str(REFERRAL), None)
    assert words in alert.reason
    assert target in alert.reason
    assert alert.source.startswith("CLINICAL.md Waiting times")
    if severity == "urgent":
        # Issue 12: an urgent alert names its owner and a due time in the clinic's working
        # calendar: the end of the working day it was raised.
        assert alert.due == same_working_day(at)
    else:
        assert alert.due == (at if due_weeks == 0 else FRIDAY + timedelta(weeks=due_weeks))


def test_an_overdue_maintenance_infusion_is_the_infusion_clinicians() -> None:
    """CLINICAL.md Course rules: alert when a planned maintenance infusion is overdue."""
    due = MONDAY + timedelta(days=28)
    streams = Streams(referrals=[], infusion_course=course(maintenance_due_at=due))
    (crossing,) = crossed(streams, due + timedelta(days=2))
    alert = time_alert(crossing, streams)
    assert (alert.kind, alert.severity, alert.owner_role) == (
        "maintenance-overdue",
        "warning",
        "infusion-clinician",
    )
    assert (alert.raised_at, alert.subject) == (due + MAINTENANCE_GRACE, str(COURSE))
    assert "maintenance" in alert.reason
    assert alert.source.startswith("CLINICAL.md Course rules")


def test_no_psychology_referral_is_the_mdts_suggestion() -> None:
    """CLINICAL.md Waiting times: suggest a psychology referral within 14 days."""
    started = MONDAY + timedelta(weeks=2)
    streams = Streams(referrals=[], infusion_course=course(first_session_at=started))
    (crossing,) = crossed(streams, started + timedelta(days=15))
    alert = time_alert(crossing, streams)
    assert (alert.kind, alert.severity, alert.owner_role) == (
        "no-psychology-referral",
        "warning",
        "mdt",
    )
    assert (alert.raised_at, alert.subject) == (started + timedelta(days=14), str(COURSE))
    assert "14 days" in alert.reason and "psychology" in alert.reason


# --- C. the fold: raises become alerts, later events clear them -----------------------------

TUESDAY = datetime(2025, 3, 11, 9, 0, tzinfo=UTC)  # urgent triage due for FRIDAY's referral


def test_a_raise_for_an_untriaged_urgent_referral_opens_an_alert_that_acceptance_resolves() -> None:
    """CLINICAL.md Waiting times: urgent referrals triaged within 2 working days."""
    raise_ = alert_raised("triage-overdue", REFERRAL, TUESDAY)
    pathway = project(PATIENT, [*urgent_psychology(), raise_])
    (alert,) = pathway.alerts
    assert (alert.kind, alert.severity, alert.status, alert.owner_role) == (
        "triage-overdue",
        "urgent",
        "open",
        "psychologist",
    )
    assert (alert.subject, alert.raised_at, alert.cleared_at) == (str(REFERRAL), TUESDAY, None)
    assert alert.id

    accepted = referral_status("referral.accepted", TUESDAY + timedelta(hours=2))
    pathway = project(PATIENT, [*urgent_psychology(), raise_, accepted])
    (alert,) = pathway.alerts
    assert (alert.status, alert.cleared_at) == ("resolved", accepted.occurred_at)

    # Nothing else in the pathway depends on the raise.
    without = builtins(project(PATIENT, [*urgent_psychology(), accepted]))
    with_raise = builtins(pathway)
    for key in ("stage", "stage_since", "streams", "measures", "next_actions", "outcomes"):
        assert with_raise[key] == without[key], key


@pytest.mark.parametrize(
    "accepted_at",
    [
        FRIDAY + timedelta(hours=3),  # accepted before the threshold: never crossed at all
        TUESDAY + timedelta(seconds=30),  # accepted after the threshold, before the raise
    ],
)
def test_a_raise_already_cleared_by_an_earlier_event_opens_no_alert(
    accepted_at: datetime,
) -> None:
    """The clock's raise can arrive after the events that answered it."""
    raise_ = alert_raised("triage-overdue", REFERRAL, TUESDAY, TUESDAY + timedelta(minutes=1))
    accepted = referral_status("referral.accepted", accepted_at)
    for events in (
        [*urgent_psychology(), accepted, raise_],
        [raise_, accepted, *urgent_psychology()],
    ):
        assert project(PATIENT, events).alerts == []


def test_the_same_crossing_raised_twice_is_one_alert() -> None:
    """Two clock looks before the first raise came back: two events, one crossing."""
    first = alert_raised("triage-overdue", REFERRAL, TUESDAY, TUESDAY + timedelta(minutes=1))
    second = alert_raised("triage-overdue", REFERRAL, TUESDAY, TUESDAY + timedelta(minutes=2))
    assert first.event_id != second.event_id
    pathway = project(PATIENT, [*urgent_psychology(), first, second])
    assert [(a.kind, a.status) for a in pathway.alerts] == [("triage-overdue", "open")]


@pytest.mark.parametrize("ack_after", [timedelta(hours=1), timedelta(hours=5)])
def test_an_acknowledged_time_alert_resolves_when_its_condition_clears(
    ack_after: timedelta,
) -> None:
    """An acknowledgement says someone saw it; the condition clearing resolves it,
    whether the acknowledgement came before or after the clearing event."""
    raise_ = alert_raised("triage-overdue", REFERRAL, TUESDAY)
    (alert,) = project(PATIENT, [*urgent_psychology(), raise_]).alerts
    ack = acknowledged(alert.id, alert.kind, TUESDAY + ack_after)
    seen = project(PATIENT, [*urgent_psychology(), raise_, ack])
    if ack_after < timedelta(hours=2):
        assert [a.status for a in seen.alerts] == ["acknowledged"]
    accepted = referral_status("referral.accepted", TUESDAY + timedelta(hours=2))
    pathway = project(PATIENT, [*urgent_psychology(), raise_, ack, accepted])
    (alert_after,) = pathway.alerts
    assert (alert_after.id, alert_after.status) == (alert.id, "resolved")
    assert alert_after.cleared_at == accepted.occurred_at


def waits_history() -> list[Envelope]:
    """An urgent psychology referral: triage overdue then accepted; the 6-week wait
    crossed, raised twice, then ended by the first attended treatment appointment."""
    six = FRIDAY + timedelta(weeks=6)
    triage = alert_raised("triage-overdue", REFERRAL, TUESDAY)
    accepted = referral_status("referral.accepted", TUESDAY + timedelta(hours=3))
    wait = alert_raised("waiting-time", REFERRAL, six)
    wait_again = alert_raised("waiting-time", REFERRAL, six, six + timedelta(minutes=2))
    opened = event(
        "therapy.episode.opened",
        ("therapy-episode", EPISODE),
        FRIDAY + timedelta(weeks=4),
        producer="therapy",
        sequence=1,
        episode_id=EPISODE,
        referral_id=REFERRAL,
        priority="urgent",
        referred_at=FRIDAY,
        opened_at=FRIDAY + timedelta(weeks=4),
    )
    attended = event(
        "appointment.attended",
        ("therapy-episode", EPISODE),
        FRIDAY + timedelta(weeks=7),
        producer="therapy",
        sequence=2,
        episode_id=EPISODE,
        appointment_id=uuid4(),
        kind="cbt",
        start=FRIDAY + timedelta(weeks=7),
        previous_status="checked-in",
        status="attended",
        attended_treatment=1,
        dna_count=0,
    )
    return [*urgent_psychology(), triage, accepted, wait, wait_again, opened, attended]


def test_raises_and_clearing_events_in_any_order_give_the_same_pathway() -> None:
    events = waits_history()
    expected = project(PATIENT, events)
    assert [(a.kind, a.status, a.cleared_at) for a in expected.alerts] == [
        ("triage-overdue", "resolved", TUESDAY + timedelta(hours=3)),
        ("waiting-time", "resolved", FRIDAY + timedelta(weeks=7)),
    ]
    reference = builtins(expected)
    shuffler = random.Random(20250303)
    for _ in range(200):
        order = events[:]
        shuffler.shuffle(order)
        assert builtins(project(PATIENT, order)) == reference
    # Every order of the raises and the events that clear them, exhaustively.
    tail = events[2:]
    for permutation in itertools.permutations(tail[:5]):
        assert builtins(project(PATIENT, [*events[:2], *permutation, *tail[5:]])) == reference


def test_a_time_alert_keeps_its_id_across_rebuilds() -> None:
    """Acknowledgements find the alert again only if a rebuild names it the same."""
    first = project(PATIENT, waits_history())
    again = project(PATIENT, list(reversed(waits_history())))  # fresh event ids
    assert [a.id for a in first.alerts] == [a.id for a in again.alerts]
    assert len({a.id for a in first.alerts}) == 2
    # Opening and resolving do not rename it.
    raise_ = alert_raised("triage-overdue", REFERRAL, TUESDAY)
    (opened,) = project(PATIENT, [*urgent_psychology(), raise_]).alerts
    assert opened.id == first.alerts[0].id


def infusion_history(started: datetime) -> list[Envelope]:
    return [
        patient_registered(PATIENT, occurred_at=MONDAY),
        referral_received(PATIENT, occurred_at=MONDAY, referral_id=REFERRAL),
        referral_status(
            "referral.accepted", MONDAY + timedelta(days=1), target="ketamine-infusion"
        ),
        course_opened(MONDAY + timedelta(days=2)),
        session_started(started),
    ]


def test_an_infusion_course_without_psychology_asks_the_mdt_to_refer_within_14_days() -> None:
    """CLINICAL.md Waiting times: "when an infusion course starts and no psychology
    referral exists ..., suggest one within 14 days (local policy)"."""
    started = MONDAY + timedelta(weeks=1)
    pathway = project(PATIENT, infusion_history(started))
    (suggestion,) = [a for a in pathway.next_actions if "psychology" in a.action]
    assert (suggestion.owner_role, suggestion.due) == ("mdt", started + timedelta(days=14))

    psychology = referral_received(
        PATIENT,
        occurred_at=started + timedelta(days=3),
        referral_id=PSYCHOLOGY_REFERRAL,
        target="psychology",
        sequence=1,
    )
    pathway = project(PATIENT, [*infusion_history(started), psychology])
    assert [a for a in pathway.next_actions if a.owner_role == "mdt"] == []


def test_the_no_psychology_alert_asks_for_an_mdt_review_until_a_referral_arrives() -> None:
    started = MONDAY + timedelta(weeks=1)
    due = started + timedelta(days=14)
    raise_ = alert_raised("no-psychology-referral", COURSE, due)
    pathway = project(PATIENT, [*infusion_history(started), raise_])
    (alert,) = pathway.alerts
    assert (alert.kind, alert.status, alert.owner_role) == ("no-psychology-referral", "open", "mdt")
    reviews = [a for a in pathway.next_actions if a.action.startswith("MDT review")]
    assert [(a.owner_role, a.due) for a in reviews] == [("mdt", alert.due)]

    psychology = referral_received(
        PATIENT,
        occurred_at=due + timedelta(days=2),
        referral_id=PSYCHOLOGY_REFERRAL,
        target="psychology",
        sequence=1,
    )
    pathway = project(PATIENT, [*infusion_history(started), raise_, psychology])
    (alert,) = pathway.alerts
    assert (alert.status, alert.cleared_at) == ("resolved", psychology.occurred_at)
    assert [a for a in pathway.next_actions if a.owner_role == "mdt"] == []


def test_an_open_urgent_mdt_alert_asks_for_an_mdt_review_until_the_mdt_meets() -> None:
    """CLINICAL.md Measures: PHQ-9 item 9 above 0 → urgent safety alert, same working day;
    the MDT owns it, so the pathway asks for its review by the alert's due."""
    events = [
        patient_registered(PATIENT, occurred_at=MONDAY),
        referral_received(
            PATIENT, occurred_at=MONDAY + timedelta(hours=1), referral_id=REFERRAL, phq9_item9=2
        ),
    ]
    pathway = project(PATIENT, events)
    (alert,) = pathway.alerts
    assert (alert.kind, alert.severity, alert.owner_role) == ("phq9-item9", "urgent", "mdt")
    (review_action,) = [a for a in pathway.next_actions if a.action.startswith("MDT review")]
    assert (review_action.owner_role, review_action.due) == ("mdt", alert.due)

    reviewed = project(PATIENT, [*events, mdt_review(MONDAY + timedelta(hours=4))])
    assert [a for a in reviewed.next_actions if a.action.startswith("MDT review")] == []
    # A review older than the alert does not answer it.
    earlier = project(PATIENT, [*events, mdt_review(MONDAY + timedelta(minutes=30))])
    assert [a.action.startswith("MDT review") for a in earlier.next_actions].count(True) == 1


# --- D. the clock against a real coordinator database -------------------------------------


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ServiceRuntime]:
    """The coordinator's runtime on a migrated SQLite file; its relay is never started."""
    platform = PlatformSettings(
        env=RunMode.development, broker=BrokerKind.memory, data_dir=tmp_path
    )
    # environ={}: a CAREPATH_*_DATABASE_URL in the shell must not point this at a server.
    service = ServiceRuntime(
        SPEC, load_service_settings("coordinator", platform, {}), make_broker(platform)
    )
    service.migrate()
    yield service
    service.close()


def store(runtime: ServiceRuntime, events: list[Envelope]) -> None:
    for envelope in events:
        with runtime.sessions() as session:
            handle_event(session, envelope)
            session.commit()


def raised_rows(runtime: ServiceRuntime, patient: UUID) -> list[OutboxEvent]:
    with runtime.sessions() as session:
        statement = (
            select(OutboxEvent)
            .where(OutboxEvent.patient_id == patient, OutboxEvent.type == "pathway.alert.raised")
            .order_by(col(OutboxEvent.position))
        )
        return list(session.exec(statement).all())


def stored_alerts(runtime: ServiceRuntime, patient: UUID) -> list[tuple[str, str]]:
    with runtime.sessions() as session:
        row = session.get(PathwayRow, patient)
        assert row is not None
        return [(a["kind"], a["status"]) for a in row.document["alerts"]]


def test_the_clock_raises_each_crossing_once_and_rebuild_agrees(runtime: ServiceRuntime) -> None:
    store(runtime, urgent_psychology())
    # Friday + 2 working days and an hour: overdue for triage, and the urgent alert it
    # raises is due by the end of the working day (so not yet escalated).
    now = TUESDAY + timedelta(hours=1)

    with runtime.sessions() as session:
        row = session.get(PathwayRow, PATIENT)
        assert row is not None
        assert new_crossings(row.document, TUESDAY - SECOND) == []
        assert new_crossings(row.document, now) == [
            Crossing("triage-overdue", str(REFERRAL), TUESDAY)
        ]
        assert raise_crossed(session, PATIENT, now) == 1
        session.commit()

    (outbox_row,) = raised_rows(runtime, PATIENT)
    assert as_utc(outbox_row.occurred_at) == now
    envelope = outbox_row.envelope
    # The message body names a rule, a referral id and a time: nothing about who.
    assert envelope["data"] == {
        "kind": "triage-overdue",
        "subject": str(REFERRAL),
        "crossed_at": msgspec.to_builtins(TUESDAY),
    }
    assert envelope["producer"] == "coordinator"
    assert envelope["subject"] == {"type": "pathway", "id": str(PATIENT)}
    assert stored_alerts(runtime, PATIENT) == [("triage-overdue", "open")]
    with runtime.sessions() as session:
        pathway_row = session.get(PathwayRow, PATIENT)
        assert pathway_row is not None and pathway_row.open_alerts == 1
        alert_rows = session.exec(
            select(PathwayAlert).where(PathwayAlert.patient_id == PATIENT)
        ).all()
        assert [(a.kind, a.severity, a.owner_role) for a in alert_rows] == [
            ("triage-overdue", "urgent", "psychologist")
        ]

    with runtime.sessions() as session:
        assert raise_crossed(session, PATIENT, now) == 0  # already raised
        session.commit()
    assert len(raised_rows(runtime, PATIENT)) == 1

    later = now + timedelta(weeks=19)
    with runtime.sessions() as session:
        # the waits, and the urgent triage alert nobody acknowledged escalates (issue 12)
        assert raise_crossed(session, PATIENT, later) == 3
        session.commit()
    rows = raised_rows(runtime, PATIENT)
    assert [(r.envelope["data"]["kind"], as_utc(r.occurred_at)) for r in rows[1:]] == [
        ("waiting-time", later),
        ("waiting-breach", later),
        ("urgent-overdue", later),
    ]
    assert [r.sequence for r in rows] == [1, 2, 3, 4]
    assert sorted(stored_alerts(runtime, PATIENT)) == [
        ("triage-overdue", "open"),
        ("urgent-overdue", "open"),
        ("waiting-breach", "open"),
        ("waiting-time", "open"),
    ]
    with runtime.sessions() as session:
        assert raise_crossed(session, PATIENT, later) == 0
        assert rebuild_pathways(session, repair=False) == []  # the rebuild equals live

    # Triage answers the triage alert; the waits go on until treatment starts.
    store(runtime, [referral_status("referral.accepted", later + timedelta(hours=1))])
    assert sorted(stored_alerts(runtime, PATIENT)) == [
        ("triage-overdue", "resolved"),
        ("urgent-overdue", "open"),  # a person deals with an escalation
        ("waiting-breach", "open"),
        ("waiting-time", "open"),
    ]
    with runtime.sessions() as session:
        # A day on, the urgent breach nobody acknowledged escalates too (issue 12).
        assert raise_crossed(session, PATIENT, later + timedelta(days=1)) == 1
        session.commit()
    with runtime.sessions() as session:
        assert raise_crossed(session, PATIENT, later + timedelta(days=1)) == 0
        assert rebuild_pathways(session, repair=False) == []


def test_a_tick_raises_only_for_pathways_with_a_new_crossing(runtime: ServiceRuntime) -> None:
    overdue, fresh, unknown = uuid4(), uuid4(), uuid4()
    store(runtime, urgent_psychology(patient=overdue))
    store(
        runtime,
        [
            patient_registered(fresh, occurred_at=MONDAY + timedelta(days=8)),
            referral_received(fresh, occurred_at=MONDAY + timedelta(days=8), referral_id=uuid4()),
        ],
    )
    now = TUESDAY + timedelta(hours=1)
    assert tick(runtime, now) == 1
    assert tick(runtime, now) == 0
    assert [r.envelope["data"]["kind"] for r in raised_rows(runtime, overdue)] == ["triage-overdue"]
    assert raised_rows(runtime, fresh) == []
    with runtime.sessions() as session:
        assert raise_crossed(session, unknown, now) == 0  # no pathway, nothing to raise
        assert rebuild_pathways(session, repair=False) == []


# --- found by review: triage after an answer, simultaneous referrals, declined CBT ---------


def test_after_the_referrer_answers_the_triage_time_runs_again_and_can_be_raised_again() -> None:
    """Local policy: once the referrer answers the team's question, the team has its
    triage time again from the answer (CLINICAL.md: urgent, 2 working days)."""
    raise_first = alert_raised("triage-overdue", REFERRAL, TUESDAY)
    asked = referral_status("referral.info_requested", TUESDAY + timedelta(hours=1), sequence=2)
    answered_at = datetime(2025, 3, 12, 9, 0, tzinfo=UTC)  # a Wednesday
    answered = referral_status("referral.info_provided", answered_at, sequence=3)
    history = [*urgent_psychology(), raise_first, asked, answered]
    pathway = project(PATIENT, history)
    (first,) = pathway.alerts
    assert first.status == "resolved"  # the question was a triage decision
    # Still untriaged two working days after the answer (Friday): a new crossing.
    streams = pathway.streams
    due_again = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
    assert of_kind(crossed(streams, due_again - SECOND), "triage-overdue") == []
    (again,) = of_kind(crossed(streams, due_again), "triage-overdue")
    assert again.crossed_at == due_again
    raise_again = alert_raised("triage-overdue", REFERRAL, due_again)
    both = project(PATIENT, [*history, raise_again]).alerts
    assert [(a.status, a.raised_at) for a in both] == [("resolved", TUESDAY), ("open", due_again)]
    assert both[0].id != both[1].id


def test_two_referrals_crossing_at_the_same_instant_get_two_alert_ids() -> None:
    other = UUID("d3a3fa0b-c847-439a-b52c-b4c5d6e7f809")
    history = [
        *urgent_psychology(),
        referral_received(
            PATIENT,
            occurred_at=FRIDAY,
            referral_id=other,
            target="psychology",
            priority="urgent",
            sequence=1,
        ),
        alert_raised("triage-overdue", REFERRAL, TUESDAY),
        alert_raised("triage-overdue", other, TUESDAY),
    ]
    alerts = project(PATIENT, history).alerts
    assert sorted(a.subject or "" for a in alerts) == sorted([str(REFERRAL), str(other)])
    assert len({a.id for a in alerts}) == 2


def test_a_declined_therapy_episode_is_no_psychology_so_the_suggestion_returns() -> None:
    """CLINICAL.md Waiting times: suggest a psychology referral when none exists "or is
    declined"."""
    started = MONDAY + timedelta(weeks=2)
    infusion = referral(target="ketamine-infusion", status="accepted")
    declined = referral(
        status="closed", received_at=started + timedelta(days=1), referral_id=PSYCHOLOGY_REFERRAL
    )
    streams = Streams(
        referrals=[infusion, declined],
        infusion_course=course(first_session_at=started),
        therapy_episode=episode(0, discharge_reason="declined"),
    )
    due = started + timedelta(days=14)
    (found,) = of_kind(crossed(streams, due), "no-psychology-referral")
    assert found.crossed_at == due
    completed = msgspec.structs.replace(
        streams, therapy_episode=episode(4, discharge_reason="completed")
    )
    assert of_kind(crossed(completed, due), "no-psychology-referral") == []


# --- issue 12: a re-referral after discharge re-opens the pathway --------------------------


def discharged_then_re_referred(re_referred_at: datetime) -> list[Envelope]:
    """A psychology referral rejected (the pathway is over), then a new urgent one."""
    return [
        *urgent_psychology(FRIDAY - timedelta(days=30)),
        referral_status("referral.rejected", FRIDAY - timedelta(days=29)),
        referral_received(
            PATIENT,
            occurred_at=re_referred_at,
            referral_id=PSYCHOLOGY_REFERRAL,
            target="psychology",
            priority="urgent",
            sequence=1,
        ),
    ]


def test_a_new_referral_after_discharge_reopens_the_pathway() -> None:
    """CLINICAL.md Waiting times: "a new referral after a discharged pathway re-opens it:
    the stage moves and every time rule runs again"."""
    before = project(PATIENT, discharged_then_re_referred(FRIDAY)[:-1])
    assert before.stage == "discharged"
    pathway = project(PATIENT, discharged_then_re_referred(FRIDAY))
    assert (pathway.stage, pathway.stage_since) == ("referred", FRIDAY)
    (triage,) = [a for a in pathway.next_actions if a.action.startswith("triage")]
    assert triage.due == triage_due(FRIDAY, "urgent") == TUESDAY


def test_the_clock_raises_an_overdue_triage_for_a_re_referral_after_discharge(
    runtime: ServiceRuntime,
) -> None:
    """CLINICAL.md Waiting times: urgent referrals triaged within 2 working days (local
    policy), also after a discharge (issue 12: an urgent re-referral sat untriaged for
    30 days with no alert, because the clock skipped discharged pathways)."""
    store(runtime, discharged_then_re_referred(FRIDAY))
    assert tick(runtime, TUESDAY - SECOND) == 0
    assert tick(runtime, FRIDAY + timedelta(days=30)) == 1
    (raised,) = raised_rows(runtime, PATIENT)
    assert raised.envelope["data"]["subject"] == str(PSYCHOLOGY_REFERRAL)
    assert ("triage-overdue", "open") in stored_alerts(runtime, PATIENT)


# --- issue 12: an overdue urgent alert escalates to the MDT --------------------------------


def item9_referral(patient: UUID = PATIENT) -> list[Envelope]:
    return [
        patient_registered(patient, occurred_at=MONDAY),
        referral_received(
            patient, occurred_at=MONDAY + timedelta(hours=1), referral_id=REFERRAL, phq9_item9=2
        ),
    ]


def test_an_urgent_alert_names_an_owner_and_a_working_day_due_time() -> None:
    """CLINICAL.md Measures: item 9 above 0 → urgent safety alert, same working day: the
    MDT owns it, due by the end of the clinic's working day."""
    (alert,) = project(PATIENT, item9_referral()).alerts
    assert (alert.severity, alert.owner_role) == ("urgent", "mdt")
    assert alert.due == same_working_day(MONDAY) == datetime(2025, 3, 3, 23, 59, 59, tzinfo=UTC)


def test_an_urgent_alert_past_its_due_time_escalates_unless_someone_acknowledged_it() -> None:
    """Issue 12 (local policy, alerts.urgent_escalation_minutes): an urgent alert nobody
    acknowledged by its due time escalates: a new, louder (critical) alert for the MDT."""
    (alert,) = project(PATIENT, item9_referral()).alerts
    due = alert.due + timedelta(minutes=POLICY.alerts.urgent_escalation_minutes)
    escalation = alert_raised("urgent-overdue", UUID(alert.id), due)
    original, louder = project(PATIENT, [*item9_referral(), escalation]).alerts
    assert (original.id, original.status) == (alert.id, "open")
    assert (louder.kind, louder.severity, louder.owner_role, louder.subject) == (
        "urgent-overdue",
        "critical",
        "mdt",
        alert.id,
    )
    assert louder.raised_at == due and louder.due == same_working_day(due)
    # Acknowledged before the clock looked: someone is acting, so no escalation.
    ack = acknowledged(alert.id, alert.kind, due - timedelta(hours=1))
    (only,) = project(PATIENT, [*item9_referral(), ack, escalation]).alerts
    assert (only.id, only.status) == (alert.id, "acknowledged")


def test_the_clock_escalates_an_overdue_urgent_alert_once(runtime: ServiceRuntime) -> None:
    """Issue 12: escalation is raised by the periodic check, as time crossings are."""
    store(runtime, item9_referral())
    end_of_monday = same_working_day(MONDAY)
    assert tick(runtime, end_of_monday - SECOND) == 0
    assert tick(runtime, end_of_monday + timedelta(hours=9)) == 1
    assert tick(runtime, end_of_monday + timedelta(hours=10)) == 0
    (row,) = raised_rows(runtime, PATIENT)
    assert row.envelope["data"]["kind"] == "urgent-overdue"
    assert sorted(stored_alerts(runtime, PATIENT)) == [
        ("phq9-item9", "open"),
        ("urgent-overdue", "open"),
    ]
    with runtime.sessions() as session:
        assert rebuild_pathways(session, repair=False) == []


# --- the clock at scale: only pathways whose next threshold has come are read (issue 15)


def _next_due(runtime: ServiceRuntime, patient: UUID = PATIENT) -> datetime | None:
    with runtime.sessions() as session:
        row = session.get(PathwayRow, patient)
        assert row is not None
        return as_utc(row.next_due) if row.next_due else None


def test_each_pathway_keeps_when_its_next_threshold_falls_due(runtime: ServiceRuntime) -> None:
    store(runtime, urgent_psychology())
    assert _next_due(runtime) == TUESDAY  # the urgent referral's triage is due then

    assert tick(runtime, TUESDAY + timedelta(hours=1)) == 1
    # Raised: the next threshold is that alert's escalation, later on Tuesday.
    with runtime.sessions() as session:
        row = session.get(PathwayRow, PATIENT)
        assert row is not None
        alerts = msgspec.convert(row.document["alerts"], list[Alert], strict=False)
    (alert,) = [a for a in alerts if a.kind == "triage-overdue"]
    assert _next_due(runtime) == escalation_due(alert)


def test_the_clock_reads_only_pathways_whose_time_has_come(runtime: ServiceRuntime) -> None:
    store(runtime, urgent_psychology())
    assert tick(runtime, TUESDAY - SECOND) == 0
    with runtime.sessions() as session:
        # A next-due time the clock trusts: a pathway not due by it is not looked at.
        row = session.get(PathwayRow, PATIENT)
        assert row is not None
        row.next_due = TUESDAY + timedelta(days=1)
        session.add(row)
        session.commit()
    assert tick(runtime, TUESDAY + timedelta(hours=1)) == 0
    with runtime.sessions() as session:
        # Written before the column was kept: unknown, so looked at.
        row = session.get(PathwayRow, PATIENT)
        assert row is not None
        row.next_due = None
        session.add(row)
        session.commit()
    assert tick(runtime, TUESDAY + timedelta(hours=1)) == 1


def test_a_pathway_with_nothing_ahead_is_due_never(runtime: ServiceRuntime) -> None:
    store(runtime, [patient_registered(PATIENT, occurred_at=FRIDAY)])
    assert _next_due(runtime) == NOTHING_DUE
