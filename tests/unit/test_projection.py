"""The coordinator's pathway as a pure fold (DESIGN.md, "Order-insensitive projection")."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import msgspec
import pytest

from services.coordinator.projection import ordered, project
from services.coordinator.rules import phq9_item9_alert, triage_due
from shared.events import Envelope, decode_envelope, encode_envelope

from .factories import T0, patient_registered, referral_received, unknown_event

PATIENT = UUID("5b0b3c8e-8a53-4c1e-9c53-6a1a8b2f0a01")


def history(item9: int = 0) -> list[Envelope]:
    referral = UUID("7e9d0a44-7e8f-4f0e-8a3a-0d1f4b1c2a01")
    return [
        patient_registered(PATIENT, occurred_at=T0),
        referral_received(
            PATIENT, occurred_at=T0 + timedelta(hours=1), referral_id=referral, phq9_item9=item9
        ),
        unknown_event(PATIENT, occurred_at=T0 + timedelta(hours=2)),
        referral_received(
            PATIENT,
            occurred_at=T0 + timedelta(hours=3),
            priority="urgent",
            target="psychology",
            phq9_item9=0,
        ),
    ]


# --- order and duplicates ---------------------------------------------------------------


def test_every_permutation_of_the_events_gives_the_same_pathway() -> None:
    events = history(item9=1)
    expected = project(PATIENT, events)
    for permutation in itertools.permutations(events):
        assert project(PATIENT, permutation) == expected


def test_duplicates_do_not_change_the_pathway() -> None:
    events = history()
    expected = project(PATIENT, events)
    doubled = [*events, *reversed(events), events[1]]
    pathway = project(PATIENT, doubled)
    assert pathway == expected
    assert pathway.event_count == len(events)


def test_redelivered_events_after_a_json_round_trip_are_still_duplicates() -> None:
    events = history()
    again = [decode_envelope(encode_envelope(event), allow_unknown=True) for event in events]
    assert project(PATIENT, [*events, *again]) == project(PATIENT, events)


def test_a_pathway_needs_at_least_one_event() -> None:
    with pytest.raises(ValueError):
        project(PATIENT, [])


# --- stage ------------------------------------------------------------------------------


def test_a_registered_patient_is_at_stage_registered() -> None:
    pathway = project(PATIENT, [patient_registered(PATIENT, occurred_at=T0)])
    assert pathway.stage == "registered"
    assert pathway.stage_since == T0
    assert pathway.streams.referrals == []
    assert pathway.next_actions == []


def test_a_referral_moves_the_stage_to_referred_at_its_time() -> None:
    events = history()
    pathway = project(PATIENT, events)
    assert pathway.stage == "referred"
    assert pathway.stage_since == events[1].occurred_at  # the first referral, not the second
    assert len(pathway.streams.referrals) == 2
    assert {stream.status for stream in pathway.streams.referrals} == {"received"}


def test_a_late_registration_does_not_undo_the_referred_stage() -> None:
    referral = referral_received(PATIENT, occurred_at=T0 + timedelta(hours=1))
    late_registration = patient_registered(PATIENT, occurred_at=T0)
    pathway = project(PATIENT, [referral, late_registration])
    assert pathway.stage == "referred"
    assert [entry.type for entry in pathway.timeline] == [
        "patient.registered",
        "referral.received",
    ]


# --- timeline ---------------------------------------------------------------------------


def test_timeline_is_in_occurred_at_order() -> None:
    events = history()
    pathway = project(PATIENT, reversed(events))
    assert [entry.event_id for entry in pathway.timeline] == [event.event_id for event in events]
    assert pathway.last_event_at == events[-1].occurred_at


def test_timeline_breaks_ties_in_occurred_at_by_sequence() -> None:
    referral = uuid4()
    third = referral_received(PATIENT, referral_id=referral, sequence=3, occurred_at=T0)
    first = referral_received(PATIENT, referral_id=referral, sequence=1, occurred_at=T0)
    second = referral_received(PATIENT, referral_id=referral, sequence=2, occurred_at=T0)
    pathway = project(PATIENT, [third, first, second])
    assert [entry.event_id for entry in pathway.timeline] == [
        first.event_id,
        second.event_id,
        third.event_id,
    ]


def test_ordered_sorts_by_time_then_sequence_and_drops_duplicates() -> None:
    late = patient_registered(PATIENT, occurred_at=T0 + timedelta(minutes=1), sequence=1)
    early = patient_registered(PATIENT, occurred_at=T0, sequence=9)
    assert ordered([late, early, late]) == [early, late]


def test_timeline_entries_say_what_happened_without_identifying_data() -> None:
    pathway = project(PATIENT, history())
    summaries = [entry.summary for entry in pathway.timeline]
    assert summaries[0] == "patient registered"
    assert summaries[1] == "routine referral to ketamine-infusion received"
    assert summaries[3] == "urgent referral to psychology received"


# --- unknown events ---------------------------------------------------------------------


def test_unknown_event_types_are_on_the_timeline_and_do_not_break_the_fold() -> None:
    events = [
        patient_registered(PATIENT, occurred_at=T0),
        unknown_event(PATIENT, "research.survey.sent", occurred_at=T0 + timedelta(1)),
        unknown_event(PATIENT, "some.future.event", occurred_at=T0 + timedelta(2), subject_id="z"),
    ]
    pathway = project(PATIENT, events)
    assert [entry.type for entry in pathway.timeline] == [
        "patient.registered",
        "research.survey.sent",
        "some.future.event",
    ]
    assert pathway.timeline[1].summary == "research.survey.sent"
    assert pathway.stage == "registered"
    assert pathway.alerts == []
    assert pathway.event_count == 3


# --- measures and alerts ----------------------------------------------------------------


def test_baseline_scores_become_measure_points() -> None:
    event = referral_received(PATIENT, occurred_at=T0, phq9_total=17, pain_nrs=8)
    pathway = project(PATIENT, [event])
    assert [(point.score, point.at) for point in pathway.measures["phq9"]] == [(17, T0)]
    assert [point.score for point in pathway.measures["pain_nrs"]] == [8]
    assert pathway.measures["gad7"] == []


def test_a_referral_without_a_baseline_adds_no_measures_or_alerts() -> None:
    event = referral_received(
        PATIENT, occurred_at=T0, phq9_item9=None, phq9_total=None, pain_nrs=None
    )
    pathway = project(PATIENT, [event])
    assert all(points == [] for points in pathway.measures.values())
    assert pathway.alerts == []


@pytest.mark.parametrize("item9", [1, 2, 3])
def test_phq9_item9_above_zero_raises_an_urgent_alert(item9: int) -> None:
    """CLINICAL.md Measures: PHQ-9 item 9 ("thoughts that you would be better off dead or
    of hurting yourself"), any answer above 0 → urgent safety alert, same working day
    (Simon et al. 2013)."""
    events = history(item9=item9)
    pathway = project(PATIENT, events)
    (alert,) = pathway.alerts
    assert alert.kind == "phq9-item9"
    assert alert.severity == "urgent"
    assert alert.status == "open"
    assert str(item9) in alert.reason
    assert alert.raised_at == events[1].occurred_at
    # Same day: due before the next midnight.
    assert alert.due.date() == events[1].occurred_at.date()
    assert alert.due >= alert.raised_at
    assert "CLINICAL.md" in alert.source


def test_phq9_item9_of_zero_raises_no_alert() -> None:
    """CLINICAL.md Measures: only an item 9 answer above 0 raises the safety alert."""
    assert project(PATIENT, history(item9=0)).alerts == []


def test_the_item9_rule_ignores_a_missing_answer() -> None:
    assert phq9_item9_alert(None, T0, "referral baseline") is None
    assert phq9_item9_alert(0, T0, "referral baseline") is None
    assert phq9_item9_alert(1, T0, "referral baseline") is not None


# --- next actions and triage --------------------------------------------------------------


def test_each_received_referral_needs_triage_by_its_team_soonest_first() -> None:
    pathway = project(PATIENT, history())
    assert [(action.owner_role, action.due) for action in pathway.next_actions] == sorted(
        [(action.owner_role, action.due) for action in pathway.next_actions], key=lambda a: a[1]
    )
    teams = {action.owner_role for action in pathway.next_actions}
    assert teams == {"infusion-clinician", "psychologist"}
    urgent = next(a for a in pathway.next_actions if a.owner_role == "psychologist")
    assert "urgent" in urgent.action


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (datetime(2025, 3, 3, 9, tzinfo=UTC), datetime(2025, 3, 5, 9, tzinfo=UTC)),  # Mon → Wed
        (datetime(2025, 3, 5, 9, tzinfo=UTC), datetime(2025, 3, 7, 9, tzinfo=UTC)),  # Wed → Fri
        (datetime(2025, 3, 6, 9, tzinfo=UTC), datetime(2025, 3, 10, 9, tzinfo=UTC)),  # Thu → Mon
        (datetime(2025, 3, 7, 9, tzinfo=UTC), datetime(2025, 3, 11, 9, tzinfo=UTC)),  # Fri → Tue
        (datetime(2025, 3, 8, 9, tzinfo=UTC), datetime(2025, 3, 11, 9, tzinfo=UTC)),  # Sat → Tue
        (datetime(2025, 3, 9, 9, tzinfo=UTC), datetime(2025, 3, 11, 9, tzinfo=UTC)),  # Sun → Tue
    ],
)
def test_urgent_triage_is_due_in_two_working_days_skipping_weekends(
    received: datetime, expected: datetime
) -> None:
    """CLINICAL.md Waiting times: urgent referrals triaged within 2 working days
    (local policy)."""
    due = triage_due(received, "urgent")
    assert due == expected
    assert due.weekday() < 5


def test_routine_triage_is_later_than_urgent_and_on_a_working_day() -> None:
    for offset in range(7):
        received = T0 + timedelta(days=offset)
        routine = triage_due(received, "routine")
        assert routine > triage_due(received, "urgent")
        assert routine.weekday() < 5


def test_projection_is_serialisable_for_the_api() -> None:
    pathway = project(PATIENT, history(item9=2))
    document = msgspec.to_builtins(pathway)
    assert document["stage"] == "referred"
    assert document["alerts"][0]["kind"] == "phq9-item9"
    assert msgspec.convert(document, type(pathway)) == pathway
