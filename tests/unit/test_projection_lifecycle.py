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
    ReferralRejected,
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
    assert pathway.streams.referrals[0].status == "info-requested"
    assert [(a.owner_role, a.action.startswith("answer")) for a in pathway.next_actions] == [
        ("referrer", True)
    ]
    answered = status_event(
        "referral.info_provided", ReferralInfoProvided, 3, 3, provided_at=T0 + timedelta(hours=3)
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), asked, answered])
    assert pathway.streams.referrals[0].status == "received"
    assert pathway.next_actions[0].owner_role == "psychologist"


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
    assert action.owner_role == "psychologist"
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
    assert pathway.streams.referrals[0].status == "closed"
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
    assert pathway.streams.referrals[0].status == "cancelled"
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
    assert [(r.id, r.status, r.priority) for r in pathway.streams.referrals] == [
        (str(REFERRAL), "accepted", "urgent")
    ]


def infusion_event(event_type: str, hours: int, sequence: int, **data: Any) -> Envelope:
    from shared.events import catalogue

    course_id = UUID("2e5e4f30-1d9c-4e8f-a071-c3d4e5f6a7b8")
    payload = catalogue.payload_type(event_type, 1)
    assert payload is not None
    envelope = new_event(
        type=event_type,
        data=msgspec.convert({"course_id": course_id, **data}, payload, from_attributes=True),
        producer="infusions",
        patient_id=PATIENT,
        subject=Subject(type="infusion-course", id=str(course_id)),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=T0 + timedelta(hours=hours),
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def test_an_infusion_course_moves_the_stage_through_assessment_induction_and_maintenance() -> None:
    """DESIGN.md stages: referred → triaged → assessment → induction → maintenance."""
    at = T0 + timedelta(hours=2)
    response = {
        "pain_change_fraction": 0.5,
        "phq9_change_fraction": None,
        "pain_meaningful": True,
        "pain_substantial": True,
        "phq9_response": False,
        "responded": True,
    }
    events = [
        patient_registered(PATIENT),
        received(),
        infusion_event(
            "infusion.course.opened", 2, 1, referral_id=REFERRAL, priority="routine", opened_at=at
        ),
        infusion_event(
            "infusion.assessment.recorded",
            3,
            2,
            assessment_id=REFERRAL,
            outcome="eligible",
            blocked_by=[],
            cautions_overridden=[],
            pain_nrs=8,
            phq9_total=14,
            phq9_item9=0,
            opioid_mme_per_day=60.0,
            assessed_at=at,
        ),
        infusion_event(
            "infusion.plan.agreed",
            4,
            3,
            plan_id=REFERRAL,
            indication="pain",
            total_mg=84.0,
            rate_mg_per_h=21.0,
            induction_count=1,
            induction_spacing_days=3,
            maintenance_interval_days=28,
            overridden_fields=["rate_mg_per_kg_per_h"],
            agreed_at=at,
        ),
        infusion_event(
            "infusion.session.started", 5, 4, session_id=REFERRAL, number=1, started_at=at
        ),
    ]
    pathway = project(PATIENT, events)
    assert pathway.stage == "induction"
    assert [p.score for p in pathway.measures["opioid_mme"]] == [60.0]
    assert (
        pathway.streams.infusion_course is not None
        and pathway.streams.infusion_course.dose_overridden
    )
    completed = infusion_event(
        "infusion.session.completed",
        9,
        5,
        session_id=REFERRAL,
        number=1,
        kind="induction",
        completed_at=at,
        given_mg=84.0,
        pain_before=8,
        pain_after=4,
        phq9_total=None,
        phq9_item9=None,
        response=response,
        completed_sessions=1,
        maintenance_due_at=T0 + timedelta(days=28),
    )
    pathway = project(PATIENT, [*events, completed])
    assert (pathway.stage, pathway.stage_since) == ("maintenance", T0 + timedelta(hours=9))
    course = pathway.streams.infusion_course
    assert course is not None
    assert (course.sessions_completed, course.maintenance_due_at) == (1, T0 + timedelta(days=28))
    # CLINICAL.md Course rules: pain before an infusion is the durable measure; pain
    # straight after it is its own series, never judged (issue 12).
    assert [p.score for p in pathway.measures["pain_nrs"]] == [7, 8, 8]
    assert [p.score for p in pathway.measures["pain_after_infusion"]] == [4]
    backwards = project(PATIENT, list(reversed([*events, completed])))
    assert msgspec.json.encode(backwards) == msgspec.json.encode(pathway)


def therapy_event(event_type: str, hours: int, sequence: int, **data: Any) -> Envelope:
    from shared.events import catalogue

    episode_id = UUID("3f6f5041-2ead-4f90-b182-d4e5f6a7b8c9")
    payload = catalogue.payload_type(event_type, 1)
    assert payload is not None
    envelope = new_event(
        type=event_type,
        data=msgspec.convert({"episode_id": episode_id, **data}, payload, from_attributes=True),
        producer="therapy",
        patient_id=PATIENT,
        subject=Subject(type="therapy-episode", id=str(episode_id)),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=T0 + timedelta(hours=hours),
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def test_therapy_measures_item9_and_missed_appointments_reach_the_pathway() -> None:
    """CLINICAL.md: PHQ-9 and GAD-7 session by session; item 9 above 0 → urgent alert;
    2 missed appointments → discharge review alert (not a discharge)."""
    at = T0 + timedelta(hours=3)
    events = [
        patient_registered(PATIENT),
        received(),
        therapy_event(
            "therapy.episode.opened",
            2,
            1,
            referral_id=REFERRAL,
            priority="routine",
            referred_at=T0,
            opened_at=T0 + timedelta(hours=2),
        ),
        therapy_event(
            "measure.recorded",
            3,
            2,
            appointment_id=REFERRAL,
            instrument="PHQ-9",
            total=15,
            band="moderately severe",
            item9=1,
            recorded_at=at,
        ),
        therapy_event(
            "measure.recorded",
            4,
            3,
            appointment_id=REFERRAL,
            instrument="GAD-7",
            total=9,
            band="mild",
            item9=None,
            recorded_at=at,
        ),
        therapy_event(
            "therapy.dna_threshold_reached", 5, 4, dna_count=2, threshold=2, reached_at=at
        ),
    ]
    pathway = project(PATIENT, events)
    assert [p.score for p in pathway.measures["gad7"]] == [9]
    assert pathway.measures["phq9"][-1].score == 15
    kinds = sorted(alert.kind for alert in pathway.alerts)
    assert kinds == ["dna-threshold", "phq9-item9"]
    assert pathway.streams.therapy_episode is not None
    assert pathway.streams.therapy_episode.status == "waitlist"
    # Referral baseline PHQ-9 12 → 15 in therapy: a case throughout, not a reliable change.
    outcome = pathway.outcomes["phq9"]
    assert (outcome.first, outcome.last, outcome.change) == (12, 15, 3)
    assert (outcome.at_caseness_first, outcome.recovered) == (True, False)
    assert not outcome.reliable_deterioration
    assert "gad7" not in pathway.outcomes  # one GAD-7 score is no change yet


def test_three_infusions_without_response_raise_one_mdt_review() -> None:
    flat = {
        "pain_change_fraction": 0.1,
        "phq9_change_fraction": None,
        "pain_meaningful": False,
        "pain_substantial": False,
        "phq9_response": False,
        "responded": False,
    }
    sessions = [
        infusion_event(
            "infusion.session.completed",
            10 + n,
            10 + n,
            session_id=REFERRAL,
            number=n,
            kind="induction",
            completed_at=T0,
            given_mg=80.0,
            pain_before=8,
            pain_after=7,
            phq9_total=None,
            phq9_item9=None,
            response=flat,
            completed_sessions=n,
            maintenance_due_at=None,
        )
        for n in (1, 2, 3, 4)
    ]
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), *sessions])
    assert [a.kind for a in pathway.alerts] == ["no-response"]
    # CLINICAL.md Course rules: response is judged on durable measures. Pain 4 before
    # infusion 2 is ≥ 30% below the referral's 7: a response, so no alert.
    second = msgspec.structs.replace(sessions[1], data={**sessions[1].data, "pain_before": 4})
    pathway = project(
        PATIENT, [patient_registered(PATIENT), received(), sessions[0], second, *sessions[2:]]
    )
    assert pathway.alerts == []
    # Relief straight after each infusion (and the infusions service calling it a
    # response) is not a durable response: the MDT still reviews (issue 12).
    acute = dict(flat, responded=True, pain_meaningful=True)
    relieved = [
        msgspec.structs.replace(s, data={**s.data, "pain_after": 2, "response": acute})
        for s in sessions
    ]
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), *relieved])
    assert [a.kind for a in pathway.alerts] == ["no-response"]


def test_a_pathway_whose_only_referral_was_rejected_or_withdrawn_is_over() -> None:
    """DESIGN.md stage: a pathway with every referral ended and no care going on is no
    longer waiting for triage."""
    rejected = status_event("referral.rejected", ReferralRejected, 2, 2, rejected_at=T0)
    cancelled = status_event(
        "referral.cancelled",
        ReferralCancelled,
        2,
        2,
        previous_status="received",
        cancelled_at=T0 + timedelta(hours=2),
    )
    for ended in (rejected, cancelled):
        pathway = project(PATIENT, [patient_registered(PATIENT), received(), ended])
        assert (pathway.stage, pathway.stage_since) == ("discharged", ended.occurred_at)


def attended(hours: int, sequence: int, kind: str, attended_treatment: int) -> Envelope:
    return therapy_event(
        "appointment.attended",
        hours,
        sequence,
        appointment_id=UUID(int=hours),
        kind=kind,
        start=T0 + timedelta(hours=hours),
        previous_status="arrived",
        status="fulfilled",
        attended_treatment=attended_treatment,
        dna_count=0,
    )


def test_psychology_moves_the_stage_through_assessment_to_follow_up() -> None:
    """DESIGN.md stage: referred → triaged → assessment → … / follow-up: for psychology,
    the attended assessment, then treatment sessions."""
    accepted = status_event(
        "referral.accepted",
        ReferralAccepted,
        2,
        2,
        priority="routine",
        conditions=["depression"],
        accepted_at=T0 + timedelta(hours=2),
    )
    start = [patient_registered(PATIENT), received(), accepted]
    assert project(PATIENT, start).stage == "triaged"
    assessed = [*start, attended(5, 1, "assessment", 0)]
    assert project(PATIENT, assessed).stage == "assessment"
    treated = [*assessed, attended(30, 2, "cbt", 1)]
    pathway = project(PATIENT, treated)
    assert (pathway.stage, pathway.stage_since) == ("follow-up", T0 + timedelta(hours=30))
    # The wait to first treatment ends at the first treatment attended (issue 13's report),
    # not at the assessment.
    episode = pathway.streams.therapy_episode
    assert episode is not None and episode.first_treatment_at == T0 + timedelta(hours=30)
    assert project(PATIENT, assessed).streams.therapy_episode.first_treatment_at is None  # type: ignore[union-attr]
    # However the events arrive.
    for order in itertools.permutations(treated):
        assert project(PATIENT, list(order)).stage == "follow-up"


def test_peg_recorded_in_therapy_is_its_own_series_with_the_mean_as_score() -> None:
    """CLINICAL.md Measures: PEG (Krebs et al. 2009), its score the mean of three items."""
    peg = therapy_event(
        "measure.recorded",
        3,
        2,
        appointment_id=REFERRAL,
        instrument="PEG",
        total=17,
        band="not banded",
        item9=None,
        recorded_at=T0,
        mean=5.7,
    )
    pathway = project(PATIENT, [patient_registered(PATIENT), received(), peg])
    assert [(p.score, p.source) for p in pathway.measures["peg"]] == [(5.7, "therapy session")]
    assert pathway.measures["phq9"][-1].score == 12  # only the referral's baseline
    assert pathway.measures["gad7"] == []


def test_the_timeline_words_each_event_from_its_codes_and_scores() -> None:
    events = [
        patient_registered(PATIENT),
        received(),
        therapy_event(
            "measure.recorded",
            3,
            2,
            appointment_id=REFERRAL,
            instrument="GAD-7",
            total=9,
            band="mild",
            item9=None,
            recorded_at=T0,
        ),
        therapy_event(
            "therapy.dna_threshold_reached", 4, 3, dna_count=2, threshold=2, reached_at=T0
        ),
    ]
    summaries = [entry.summary for entry in project(PATIENT, events).timeline]
    assert summaries == [
        "patient registered",
        "routine referral to psychology received",
        "GAD-7 recorded: 9",
        "2 missed appointments: discharge review",
    ]
