"""The pathway follows a referral's life: triage, questions, cancellation, closure."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec

from services.coordinator.projection import project
from shared.events import Envelope, Subject, new_event
from shared.events.catalogue import (
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralInfoProvided,
    ReferralInfoRequested,
)

from .factories import ACTOR, T0, patient_registered, referral_received

PATIENT = UUID("0c3c2d1e-9b7a-4c6d-8e5f-a1b2c3d4e5f6")
REFERRAL = UUID("1d4d3e2f-0c8b-4d7e-9f60-b2c3d4e5f6a7")


def status_event(
    event_type: str, payload: type[msgspec.Struct], hours: int, sequence: int, **fields: Any
) -> Envelope:
    at = T0 + timedelta(hours=hours)
    data = msgspec.convert(
        {"referral_id": REFERRAL, "target": "psychology", **fields}, payload, from_attributes=True
    )
    envelope = new_event(
        type=event_type,
        data=data,
        producer="referrals",
        patient_id=PATIENT,
        subject=Subject(type="referral", id=str(REFERRAL)),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=at,
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def received() -> Envelope:
    return referral_received(
        PATIENT,
        occurred_at=T0 + timedelta(hours=1),
        referral_id=REFERRAL,
        target="psychology",
        sequence=1,
    )


def test_a_question_waits_on_the_referrer_and_the_answer_returns_it_to_triage() -> None:
    asked = status_event(
        "referral.info_requested", ReferralInfoRequested, 2, 2, requested_at=T0 + timedelta(hours=2)
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), asked])
    assert pathway.referrals[0].status == "info-requested"
    assert [(a.who, a.action.startswith("answer")) for a in pathway.next_actions] == [
        ("referrer", True)
    ]
    answered = status_event(
        "referral.info_provided", ReferralInfoProvided, 3, 3, provided_at=T0 + timedelta(hours=3)
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), asked, answered])
    assert pathway.referrals[0].status == "received"
    assert pathway.next_actions[0].who == "psychology team"


def test_acceptance_moves_the_stage_to_triaged_and_asks_for_treatment_within_six_weeks() -> None:
    """CLINICAL.md Waiting times: psychology, first treatment alert at 6 weeks."""
    accepted = status_event(
        "referral.accepted",
        ReferralAccepted,
        5,
        2,
        priority="routine",
        conditions=["depression"],
        accepted_at=T0 + timedelta(hours=5),
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), accepted])
    assert (pathway.stage, pathway.stage_since) == ("triaged", T0 + timedelta(hours=5))
    (action,) = pathway.next_actions
    assert action.who == "psychology team"
    assert action.due == T0 + timedelta(hours=1) + timedelta(weeks=6)


def test_closing_the_only_referral_discharges_the_pathway_in_any_delivery_order() -> None:
    events = [
        patient_registered(PATIENT),
        received(),
        status_event(
            "referral.accepted",
            ReferralAccepted,
            5,
            2,
            priority="routine",
            conditions=["depression"],
            accepted_at=T0 + timedelta(hours=5),
        ),
        status_event(
            "referral.closed",
            ReferralClosed,
            9,
            3,
            closed_at=T0 + timedelta(hours=9),
            closed_by="therapy.episode.discharged",
            outcome="completed",
        ),
    ]
    pathways = {
        msgspec.json.encode(project(PATIENT, order)) for order in itertools.permutations(events)
    }
    assert len(pathways) == 1
    pathway = project(PATIENT, events)
    assert pathway.stage == "discharged"
    assert pathway.referrals[0].status == "closed"
    assert pathway.next_actions == []


def test_a_cancelled_referral_needs_no_action() -> None:
    cancelled = status_event(
        "referral.cancelled",
        ReferralCancelled,
        2,
        2,
        previous_status="received",
        cancelled_at=T0 + timedelta(hours=2),
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), cancelled])
    assert pathway.referrals[0].status == "cancelled"
    assert pathway.next_actions == []
    assert pathway.timeline[-1].summary == "psychology referral cancelled"


def test_a_status_event_before_its_referral_arrives_still_shows_the_referral() -> None:
    accepted = status_event(
        "referral.accepted",
        ReferralAccepted,
        5,
        2,
        priority="urgent",
        conditions=["crps"],
        accepted_at=T0 + timedelta(hours=5),
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), accepted])
    assert [(r.referral_id, r.status, r.priority) for r in pathway.referrals] == [
        (str(REFERRAL), "accepted", "urgent")
    ]
