"""Property: the pathway is the same for any delivery order, with any duplicates.

DESIGN.md, "Order-insensitive projection": the coordinator folds a patient's events
sorted by (occurred_at, sequence); a late or redelivered event takes its place.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid5

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from services.coordinator.projection import project
from shared.events import Envelope, Subject, new_event
from shared.events.catalogue import PathwayAlertRaised, payload_type

from .factories import ACTOR, T0, patient_registered, referral_received

PATIENT = UUID("4a7a6152-3fbe-4a01-8c93-e5f6a7b8c9d0")
REFERRAL = UUID("5b8b7263-40cf-4b12-9da4-f6a7b8c9d0e1")
COURSE = UUID("6c9c8374-51d0-4c23-8eb5-a7b8c9d0e1f2")
EPISODE = UUID("7dad9485-62e1-4d34-9fc6-b8c9d0e1f2a3")
# The referral's item-9 alert (raised an hour after T0), named as the fold names it.
ITEM9_ALERT = str(uuid5(PATIENT, f"phq9-item9|{REFERRAL}|{(T0 + timedelta(hours=1)).isoformat()}"))


def event(
    event_type: str, subject: tuple[str, UUID], hours: int, sequence: int, **data: Any
) -> Envelope:
    payload = payload_type(event_type, 1)
    assert payload is not None
    envelope = new_event(
        type=event_type,
        data=msgspec.convert(data, payload, from_attributes=True),
        producer="test",
        patient_id=PATIENT,
        subject=Subject(type=subject[0], id=str(subject[1])),
        actor=ACTOR,
        correlation_id="corr-prop",
        occurred_at=T0 + timedelta(hours=hours),
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def history() -> list[Envelope]:
    """A patient's journey through every service, in the order it happened."""
    at = T0
    referral = ("referral", REFERRAL)
    course = ("infusion-course", COURSE)
    episode = ("therapy-episode", EPISODE)
    response = {
        "pain_change_fraction": 0.4,
        "phq9_change_fraction": None,
        "pain_meaningful": True,
        "pain_substantial": False,
        "phq9_response": False,
        "responded": True,
    }
    return [
        patient_registered(PATIENT),
        referral_received(
            PATIENT, occurred_at=T0 + timedelta(hours=1), referral_id=REFERRAL, phq9_item9=1
        ),
        event(
            "referral.accepted",
            referral,
            2,
            2,
            referral_id=REFERRAL,
            target="ketamine-infusion",
            priority="routine",
            conditions=["crps"],
            accepted_at=at,
        ),
        event(
            "infusion.course.opened",
            course,
            3,
            1,
            course_id=COURSE,
            referral_id=REFERRAL,
            priority="routine",
            opened_at=at,
        ),
        event(
            "infusion.assessment.recorded",
            course,
            4,
            2,
            course_id=COURSE,
            assessment_id=COURSE,
            outcome="eligible",
            blocked_by=[],
            cautions_overridden=[],
            pain_nrs=8,
            phq9_total=12,
            phq9_item9=0,
            opioid_mme_per_day=45.0,
            assessed_at=at,
        ),
        event(
            "infusion.vitals.out_of_range",
            course,
            5,
            3,
            course_id=COURSE,
            session_id=COURSE,
            phase="during",
            systolic=185,
            diastolic=100,
            heart_rate=90,
            spo2=97,
            crossed=["systolic 185 ≥ 180"],
            measured_at=at,
        ),
        event(
            "infusion.session.completed",
            course,
            6,
            4,
            course_id=COURSE,
            session_id=COURSE,
            number=1,
            kind="induction",
            completed_at=at,
            given_mg=80.0,
            pain_before=8,
            pain_after=5,
            phq9_total=None,
            phq9_item9=None,
            response=response,
            completed_sessions=1,
            maintenance_due_at=None,
        ),
        event(
            "therapy.episode.opened",
            episode,
            7,
            1,
            episode_id=EPISODE,
            referral_id=REFERRAL,
            priority="routine",
            referred_at=at,
            opened_at=at,
        ),
        event(
            "measure.recorded",
            episode,
            8,
            2,
            episode_id=EPISODE,
            appointment_id=EPISODE,
            instrument="GAD-7",
            total=11,
            band="moderate",
            item9=None,
            recorded_at=at,
        ),
        event(
            "therapy.dna_threshold_reached",
            episode,
            9,
            3,
            episode_id=EPISODE,
            dna_count=2,
            threshold=2,
            reached_at=at,
        ),
        event(
            "referral.closed",
            referral,
            10,
            3,
            referral_id=REFERRAL,
            target="ketamine-infusion",
            closed_at=at,
            closed_by="infusion.course.closed",
            outcome="completed",
        ),
    ]


EVENTS = history()
EXPECTED = msgspec.json.encode(project(PATIENT, EVENTS))


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(range(len(EVENTS))),
    duplicates=st.lists(st.integers(0, len(EVENTS) - 1), max_size=8),
    prefix=st.integers(1, len(EVENTS)),
)
def test_any_order_with_duplicates_gives_the_same_pathway(
    order: list[int], duplicates: list[int], prefix: int
) -> None:
    delivered = [EVENTS[i] for i in order] + [EVENTS[i] for i in duplicates]
    assert msgspec.json.encode(project(PATIENT, delivered)) == EXPECTED
    # Any prefix of the history, shuffled the same way, folds like that prefix in order.
    part = EVENTS[:prefix]
    shuffled = [part[i] for i in order if i < prefix]
    assert msgspec.json.encode(project(PATIENT, shuffled)) == msgspec.json.encode(
        project(PATIENT, part)
    )


# --- generated histories ----------------------------------------------------------------


@st.composite
def generated_history(draw: st.DrawFn) -> list[Envelope]:
    """A patient's events with generated scores, counts and times: infusions with any
    pain and PHQ-9 scores, therapy measures, MDT reviews and the clock's raises."""
    hour = st.integers(0, 24 * 200)
    course = ("infusion-course", COURSE)
    episode = ("therapy-episode", EPISODE)
    events = [
        patient_registered(PATIENT),
        referral_received(
            PATIENT,
            occurred_at=T0 + timedelta(hours=1),
            referral_id=REFERRAL,
            priority=draw(st.sampled_from(["routine", "urgent"])),
            phq9_item9=draw(st.integers(0, 3)),
            phq9_total=draw(st.integers(0, 27)),
            pain_nrs=draw(st.integers(0, 10)),
        ),
    ]
    sessions = draw(st.integers(0, 5))
    for number in range(1, sessions + 1):
        pain_before, pain_after = draw(st.integers(0, 10)), draw(st.integers(0, 10))
        responded = draw(st.booleans())
        events.append(
            event(
                "infusion.session.completed",
                course,
                draw(hour),
                number,
                course_id=COURSE,
                session_id=COURSE,
                number=number,
                kind="induction",
                completed_at=T0,
                given_mg=80.0,
                pain_before=pain_before,
                pain_after=pain_after,
                phq9_total=draw(st.none() | st.integers(0, 27)),
                phq9_item9=draw(st.none() | st.integers(0, 3)),
                response={
                    "pain_change_fraction": None,
                    "phq9_change_fraction": None,
                    "pain_meaningful": responded,
                    "pain_substantial": False,
                    "phq9_response": False,
                    "responded": responded,
                },
                completed_sessions=number,
                maintenance_due_at=None,
            )
        )
    # Out-of-range vitals, some critical, repeated within two sessions (one alert per
    # session and kind, updated by each reading).
    for number in range(1, draw(st.integers(0, 4)) + 1):
        systolic = draw(st.sampled_from([60, 120, 185, 230]))
        events.append(
            event(
                "infusion.vitals.out_of_range",
                course,
                draw(hour),
                10 + number,
                course_id=COURSE,
                session_id=draw(st.sampled_from([COURSE, EPISODE])),
                phase="during",
                systolic=systolic,
                diastolic=90,
                heart_rate=draw(st.sampled_from([35, 80, 140])),
                spo2=draw(st.sampled_from([45, 90, 97])),
                crossed=[f"systolic {systolic}"],
                measured_at=T0,
            )
        )
    for number in range(1, draw(st.integers(0, 4)) + 1):
        instrument = draw(st.sampled_from(["PHQ-9", "GAD-7"]))
        events.append(
            event(
                "measure.recorded",
                episode,
                draw(hour),
                number,
                episode_id=EPISODE,
                appointment_id=EPISODE,
                instrument=instrument,
                total=draw(st.integers(0, 21)),
                band="moderate",
                item9=draw(st.integers(0, 3)) if instrument == "PHQ-9" else None,
                recorded_at=T0,
            )
        )
    for number in range(1, draw(st.integers(0, 2)) + 1):
        events.append(
            event(
                "mdt.review.recorded",
                ("mdt_review", EPISODE),
                draw(hour),
                number,
                review_id=UUID(int=number),
                decision=draw(st.sampled_from(["continue", "stop-infusions", "discharge"])),
                attendees=["dr-a"],
                reviewed_by="dr-a",
                reviewed_at=T0 + timedelta(hours=draw(hour)),
            )
        )
    for number in range(1, draw(st.integers(0, 3)) + 1):
        crossed_at = T0 + timedelta(hours=draw(hour))
        # the waits, and the escalation of the referral's item-9 alert (issue 12)
        kind = draw(
            st.sampled_from(["triage-overdue", "waiting-time", "waiting-breach", "urgent-overdue"])
        )
        raised = new_event(
            type="pathway.alert.raised",
            data=PathwayAlertRaised(
                kind=kind,
                subject=ITEM9_ALERT if kind == "urgent-overdue" else str(REFERRAL),
                crossed_at=crossed_at,
            ),
            producer="coordinator",
            patient_id=PATIENT,
            subject=Subject(type="pathway", id=str(PATIENT)),
            actor=ACTOR,
            correlation_id="corr-prop",
            occurred_at=crossed_at + timedelta(hours=draw(st.integers(0, 48))),
        )
        events.append(msgspec.structs.replace(raised, sequence=number))
    # People acknowledge or resolve the item-9 alert, at any time.
    for number in range(1, draw(st.integers(0, 2)) + 1):
        action = draw(st.sampled_from(["acknowledged", "resolved"]))
        at = T0 + timedelta(hours=draw(hour))
        payload = payload_type(f"pathway.alert.{action}", 1)
        assert payload is not None
        handled = new_event(
            type=f"pathway.alert.{action}",
            data=msgspec.convert(
                {
                    "alert_id": ITEM9_ALERT,
                    "kind": "phq9-item9",
                    "by_user": "dr-a",
                    "by_role": "mdt",
                    "handled_at": at,
                },
                payload,
            ),
            producer="coordinator",
            patient_id=PATIENT,
            subject=Subject(type="alert", id=ITEM9_ALERT),
            actor=ACTOR,
            correlation_id="corr-prop",
            occurred_at=at,
        )
        events.append(msgspec.structs.replace(handled, sequence=number))
    return events


@settings(max_examples=150, deadline=None)
@given(history=generated_history(), data=st.data())
def test_generated_histories_fold_the_same_in_any_order_with_duplicates(
    history: list[Envelope], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(history))
    duplicates = data.draw(st.lists(st.sampled_from(history), max_size=6))
    expected = msgspec.json.encode(project(PATIENT, history))
    assert msgspec.json.encode(project(PATIENT, [*order, *duplicates])) == expected
