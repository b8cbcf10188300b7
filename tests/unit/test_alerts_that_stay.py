"""Alerts that stay until a person acts (issue 12).

CLINICAL.md, Change that matters: reliable deterioration is a PHQ-9 rise of 6 or more,
or a GAD-7 rise of 4 or more, from the first score ("the symmetric rule used by NHS
Talking Therapies reports"). It is judged over the series: any later score that far
above the first raises it, and a later, slightly lower score neither deletes it nor
gives it a new id. An alert's id never comes from its wording.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest

from services.coordinator.domain import Alert, Pathway
from services.coordinator.projection import project
from shared.events import Envelope, Subject, new_event, payload_type
from shared.policy import default_policy

from .factories import ACTOR, T0, patient_registered, referral_received

PATIENT = UUID("0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5")
REFERRAL = UUID("1d2e3f4a-5b6c-4d7e-9f80-91a2b3c4d5e6")
EPISODE = UUID("2e3f4a5b-6c7d-4e8f-a091-a2b3c4d5e6f7")
CHANGE = default_policy().change


def therapy(event_type: str, hours: int, sequence: int, **data: Any) -> Envelope:
    payload = payload_type(event_type, 1)
    assert payload is not None
    envelope = new_event(
        type=event_type,
        data=msgspec.convert({"episode_id": EPISODE, **data}, payload, from_attributes=True),
        producer="therapy",
        patient_id=PATIENT,
        subject=Subject(type="therapy-episode", id=str(EPISODE)),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=T0 + timedelta(hours=hours),
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def score(hours: int, sequence: int, total: int, instrument: str = "PHQ-9") -> Envelope:
    return therapy(
        "measure.recorded",
        hours,
        sequence,
        appointment_id=UUID(int=sequence),
        instrument=instrument,
        total=total,
        band="moderate",
        item9=0 if instrument == "PHQ-9" else None,
        recorded_at=T0 + timedelta(hours=hours),
    )


def handled(alert: Alert, action: str, hours: int, sequence: int) -> Envelope:
    envelope = new_event(
        type=f"pathway.alert.{action}",
        data=msgspec.convert(
            {
                "alert_id": alert.id,
                "kind": alert.kind,
                "by_user": "dr-mdt",
                "by_role": "mdt",
                "handled_at": T0 + timedelta(hours=hours),
            },
            payload_type(f"pathway.alert.{action}", 1),  # type: ignore[arg-type]
        ),
        producer="coordinator",
        patient_id=PATIENT,
        subject=Subject(type="alert", id=alert.id),
        actor=ACTOR,
        correlation_id="corr-unit",
        occurred_at=T0 + timedelta(hours=hours),
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def start(phq9: int = 8) -> list[Envelope]:
    return [
        patient_registered(PATIENT),
        referral_received(
            PATIENT,
            occurred_at=T0 + timedelta(minutes=30),
            referral_id=REFERRAL,
            target="psychology",
            phq9_total=phq9,
            phq9_item9=0,
        ),
    ]


def deteriorations(pathway: Pathway) -> list[Alert]:
    return [a for a in pathway.alerts if a.kind == "reliable-deterioration"]


@pytest.mark.parametrize(
    ("instrument", "rise", "raised"),
    [
        ("PHQ-9", CHANGE.phq9_reliable_change - 1, False),
        ("PHQ-9", CHANGE.phq9_reliable_change, True),
        ("GAD-7", CHANGE.gad7_reliable_change - 1, False),
        ("GAD-7", CHANGE.gad7_reliable_change, True),
    ],
)
def test_reliable_deterioration_at_its_threshold(instrument: str, rise: int, raised: bool) -> None:
    """CLINICAL.md Change that matters: reliable deterioration, PHQ-9 rises by ≥ 6 or
    GAD-7 by ≥ 4 from the first score."""
    # The referral's baseline PHQ-9 (5) is the first PHQ-9; GAD-7 starts in therapy.
    events = [*start(5), score(1, 1, 5, instrument), score(2, 2, 5 + rise, instrument)]
    assert bool(deteriorations(project(PATIENT, events))) is raised


def test_a_later_lower_score_keeps_the_alert_open_under_the_same_id() -> None:
    """CLINICAL.md Change that matters: judged over the series; the alert stays until a
    person acknowledges or resolves it (issue 12: a slightly lower score deleted it)."""
    events = [*start(8), score(1, 1, 15)]
    (raised,) = deteriorations(project(PATIENT, events))
    assert raised.status == "open"
    later = project(PATIENT, [*events, score(2, 2, 13), score(3, 3, 9)])
    (still,) = deteriorations(later)
    assert (still.id, still.status, still.raised_at) == (raised.id, "open", raised.raised_at)


def test_the_alert_id_does_not_change_with_its_wording() -> None:
    """No alert id is built from reason text: a rule whose words change keeps its ids."""
    events = [*start(8), score(1, 1, 15)]
    (alert,) = deteriorations(project(PATIENT, events))
    assert "15" in alert.reason
    reworded = msgspec.structs.replace(alert, reason="something else")
    from services.coordinator.projection import _named

    assert _named(PATIENT, reworded).id == alert.id


def test_acknowledged_stays_acknowledged_and_resolved_needs_a_new_crossing() -> None:
    """CLINICAL.md Change that matters: once a person resolves it, a new alert comes only
    when a score crosses again from below the threshold."""
    events = [*start(8), score(1, 1, 15)]
    (alert,) = deteriorations(project(PATIENT, events))
    acknowledged = [*events, handled(alert, "acknowledged", 2, 1), score(3, 2, 16)]
    (after_ack,) = deteriorations(project(PATIENT, acknowledged))
    assert (after_ack.id, after_ack.status) == (alert.id, "acknowledged")
    resolved = [*acknowledged, handled(alert, "resolved", 4, 2), score(5, 3, 15)]
    (after_resolve,) = deteriorations(project(PATIENT, resolved))
    assert after_resolve.status == "resolved"  # still above the first: the same crossing
    crossed_again = [*resolved, score(6, 4, 9), score(7, 5, 17)]
    first, second = deteriorations(project(PATIENT, crossed_again))
    assert (first.id, first.status) == (alert.id, "resolved")
    assert second.status == "open" and second.id != alert.id


def test_an_acknowledgement_made_before_the_upgrade_still_finds_its_alert() -> None:
    """Stored pathways are re-folded after the upgrade: an acknowledgement recorded
    against the old, wording-based id must still apply to the alert."""
    from uuid import uuid5

    # An urgent item-9 alert raised at the referral, named as before issue 12.
    events = [
        *start(8)[:1],
        referral_received(
            PATIENT, occurred_at=T0 + timedelta(minutes=30), referral_id=REFERRAL, phq9_item9=2
        ),
    ]
    (item9,) = project(PATIENT, events).alerts
    old_id = str(uuid5(PATIENT, f"{item9.kind}|{item9.raised_at.isoformat()}|{item9.reason}"))
    assert old_id != item9.id
    old = msgspec.structs.replace(item9, id=old_id)
    (after,) = project(PATIENT, [*events, handled(old, "acknowledged", 1, 1)]).alerts
    assert (after.id, after.status) == (item9.id, "acknowledged")
