"""Response to ketamine on durable measures (issue 12).

CLINICAL.md, Course rules: "response is judged on durable measures: pain and PHQ-9
recorded before the next infusion or at follow-up, not minutes after an infusion (acute
ketamine analgesia would hide non-response). A PHQ-9 asks about the past two weeks: one
taken straight after an infusion is its own series and never used for caseness,
reliable change or response." No meaningful response (pain ≥ 30% or PHQ-9 ≥ 50% better
than baseline) after 3 infusions → MDT review alert (local policy).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec

from services.coordinator.domain import Pathway
from services.coordinator.projection import project
from shared.events import Envelope, Subject, new_event, payload_type
from shared.policy import default_policy

from .factories import ACTOR, T0, patient_registered, referral_received

PATIENT = UUID("7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a")
REFERRAL = UUID("8e9f0a1b-2c3d-4e4f-9a5b-6c7d8e9f0a1b")
COURSE = UUID("9f0a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c")
AFTER = default_policy().course.no_response_after_sessions
FLAT = {
    "pain_change_fraction": 0.0,
    "phq9_change_fraction": None,
    "pain_meaningful": False,
    "pain_substantial": False,
    "phq9_response": False,
    "responded": False,
}


def infusion(number: int, *, phq9: int | None = None, pain_before: int = 8) -> Envelope:
    payload = payload_type("infusion.session.completed", 1)
    assert payload is not None
    at = T0 + timedelta(days=7 * number)
    data: dict[str, Any] = {
        "course_id": COURSE,
        "session_id": UUID(int=number),
        "number": number,
        "kind": "induction",
        "completed_at": at,
        "given_mg": 80.0,
        "pain_before": pain_before,
        "pain_after": 2,  # acute relief straight after every infusion
        "phq9_total": phq9,
        "phq9_item9": 0 if phq9 is not None else None,
        "response": {**FLAT, "responded": True, "pain_meaningful": True},
        "completed_sessions": number,
        "maintenance_due_at": None,
    }
    envelope = new_event(
        type="infusion.session.completed",
        data=msgspec.convert(data, payload),
        producer="infusions",
        patient_id=PATIENT,
        subject=Subject(type="infusion-course", id=str(COURSE)),
        actor=ACTOR,
        correlation_id="corr-durable",
        occurred_at=at,
    )
    return msgspec.structs.replace(envelope, sequence=number)


def therapy_phq9(days: int, total: int) -> Envelope:
    payload = payload_type("measure.recorded", 1)
    assert payload is not None
    at = T0 + timedelta(days=days)
    data = {
        "episode_id": REFERRAL,
        "appointment_id": UUID(int=days),
        "instrument": "PHQ-9",
        "total": total,
        "band": "mild",
        "item9": 0,
        "recorded_at": at,
    }
    return new_event(
        type="measure.recorded",
        data=msgspec.convert(data, payload),
        producer="therapy",
        patient_id=PATIENT,
        subject=Subject(type="therapy-episode", id=str(REFERRAL)),
        actor=ACTOR,
        correlation_id="corr-durable",
        occurred_at=at,
    )


def pathway(*events: Envelope, phq9: int = 12, pain: int = 8) -> Pathway:
    start = [
        patient_registered(PATIENT),
        referral_received(
            PATIENT,
            occurred_at=T0 + timedelta(hours=1),
            referral_id=REFERRAL,
            phq9_total=phq9,
            pain_nrs=pain,
        ),
    ]
    return project(PATIENT, [*start, *events])


def kinds(result: Pathway) -> list[str]:
    return [a.kind for a in result.alerts]


def test_relief_straight_after_each_infusion_is_not_a_response() -> None:
    """CLINICAL.md Course rules: judged on durable measures, not pain minutes after an
    infusion: pain 2 after each of 3 infusions, 8 before each → MDT review."""
    result = pathway(*(infusion(n) for n in range(1, AFTER + 1)))
    assert kinds(result) == ["no-response"]
    assert [p.score for p in result.measures["pain_after_infusion"]] == [2] * AFTER
    assert [p.source for p in result.measures["pain_nrs"]][1:] == [
        f"before infusion {n}" for n in range(1, AFTER + 1)
    ]
    assert result.outcomes["pain_nrs"].meaningful_relief is False


def test_pain_before_a_later_infusion_thirty_percent_down_is_a_response() -> None:
    """CLINICAL.md Change that matters: meaningful pain relief is a fall of ≥ 30% from
    baseline (IMMPACT); 8 → 6 is 25% (no), 8 → 5 is 37.5% (yes)."""
    no = pathway(infusion(1), infusion(2, pain_before=6), infusion(3, pain_before=6))
    assert kinds(no) == ["no-response"]
    yes = pathway(infusion(1), infusion(2, pain_before=5), infusion(3, pain_before=8))
    assert kinds(yes) == []


def test_a_phq9_straight_after_an_infusion_is_its_own_series_and_never_judged() -> None:
    """CLINICAL.md Course rules: a PHQ-9 straight after an infusion is never used for
    caseness, reliable change or response: 12 → 3 after infusions is no response, and
    12 → 20 after an infusion is no reliable deterioration."""
    better = pathway(*(infusion(n, phq9=3) for n in range(1, AFTER + 1)))
    assert kinds(better) == ["no-response"]
    assert [p.score for p in better.measures["phq9_after_infusion"]] == [3] * AFTER
    assert [p.score for p in better.measures["phq9"]] == [12]
    assert "phq9" not in better.outcomes
    worse = pathway(infusion(1, phq9=20))
    assert "reliable-deterioration" not in kinds(worse)


def test_a_durable_phq9_half_the_baseline_at_follow_up_is_a_response() -> None:
    """CLINICAL.md Change that matters: depression response to ketamine is PHQ-9 ≥ 50%
    below baseline (Sanacora et al. 2017), on a PHQ-9 recorded at follow-up."""
    infusions = [infusion(n) for n in range(1, AFTER + 1)]
    assert kinds(pathway(therapy_phq9(10, 7), *infusions)) == ["no-response"]  # 42%
    assert kinds(pathway(therapy_phq9(10, 6), *infusions)) == []  # 50%
    # Before the first infusion it says nothing about the infusions.
    assert kinds(pathway(therapy_phq9(3, 6), *infusions)) == ["no-response"]
