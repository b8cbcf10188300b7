"""Vitals alerts on the pathway (issue 12, coordinator side of the stops).

CLINICAL.md, During a session: "alert when systolic ≥ 180 or diastolic ≥ 110 during a
session, or systolic ≥ 160 / diastolic ≥ 100 before starting; SpO2 < 92% (local
policy)". Critically abnormal readings (SpO2 45, systolic 60) raise an urgent alert
(NEWS2 red scores; SpO2 below every BTS target range, local policy), and repeated
out-of-range readings in one session make one alert that is updated.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest

from services.coordinator.domain import Alert
from services.coordinator.projection import project
from shared.events import Envelope, Subject, new_event, payload_type
from shared.policy import default_policy
from shared.vitals import critical_vitals

from .factories import ACTOR, T0, patient_registered

PATIENT = UUID("3f4a5b6c-7d8e-4f90-a1b2-c3d4e5f6a7b8")
COURSE = UUID("4a5b6c7d-8e9f-4a01-b2c3-d4e5f6a7b8c9")
SESSION = UUID("5b6c7d8e-9f0a-4b12-83d4-e5f6a7b8c9d0")
OTHER_SESSION = UUID("6c7d8e9f-0a1b-4c23-94e5-f6a7b8c9d0e1")
VITALS = default_policy().vitals


def reading(
    minutes: int,
    *,
    session: UUID = SESSION,
    systolic: int = 185,
    diastolic: int = 95,
    heart_rate: int = 80,
    spo2: int = 97,
    crossed: list[str] | None = None,
) -> Envelope:
    payload = payload_type("infusion.vitals.out_of_range", 1)
    assert payload is not None
    at = T0 + timedelta(minutes=minutes)
    data: dict[str, Any] = {
        "course_id": COURSE,
        "session_id": session,
        "phase": "during",
        "systolic": systolic,
        "diastolic": diastolic,
        "heart_rate": heart_rate,
        "spo2": spo2,
        "crossed": crossed if crossed is not None else [f"systolic {systolic} ≥ 180"],
        "measured_at": at,
    }
    envelope = new_event(
        type="infusion.vitals.out_of_range",
        data=msgspec.convert(data, payload),
        producer="infusions",
        patient_id=PATIENT,
        subject=Subject(type="infusion-course", id=str(COURSE)),
        actor=ACTOR,
        correlation_id="corr-vitals",
        occurred_at=at,
    )
    return msgspec.structs.replace(envelope, sequence=minutes + 1)


def acted(alert: Alert, action: str, minutes: int) -> Envelope:
    payload = payload_type(f"pathway.alert.{action}", 1)
    assert payload is not None
    at = T0 + timedelta(minutes=minutes)
    data = {"alert_id": alert.id, "kind": alert.kind, "by_user": "n", "by_role": "mdt"}
    return new_event(
        type=f"pathway.alert.{action}",
        data=msgspec.convert({**data, "handled_at": at}, payload),
        producer="coordinator",
        patient_id=PATIENT,
        subject=Subject(type="alert", id=alert.id),
        actor=ACTOR,
        correlation_id="corr-vitals",
        occurred_at=at,
    )


def alerts(*events: Envelope) -> list[Alert]:
    return project(PATIENT, [patient_registered(PATIENT), *events]).alerts


@pytest.mark.parametrize(
    ("values", "critical"),
    [
        ({"spo2": 45}, True),  # issue 12
        ({"systolic": 60}, True),  # issue 12
        ({"spo2": VITALS.critical_low_spo2}, False),
        ({"spo2": VITALS.critical_low_spo2 - 1}, True),
        ({"systolic": VITALS.critical_low_systolic + 1}, False),
        ({"systolic": VITALS.critical_low_systolic}, True),
        ({"systolic": VITALS.critical_high_systolic - 1}, False),
        ({"systolic": VITALS.critical_high_systolic}, True),
        ({"heart_rate": VITALS.critical_low_heart_rate}, True),
        ({"heart_rate": VITALS.critical_high_heart_rate}, True),
        ({"heart_rate": VITALS.critical_high_heart_rate - 1}, False),
    ],
)
def test_critically_abnormal_vitals_at_their_thresholds(
    values: dict[str, int], critical: bool
) -> None:
    """CLINICAL.md During a session (local policy) and issue 12: critically abnormal
    vitals raise an urgent alert for the infusion clinician, due within the monitoring
    interval; thresholds are NEWS2 red scores and SpO2 < 88% (policy vitals.critical_*)."""
    reading_values = {"systolic": 120, "heart_rate": 80, "spo2": 97, **values}
    assert bool(critical_vitals(**reading_values)) is critical
    (alert,) = alerts(reading(0, **reading_values, crossed=["SpO2 below 92%"]))
    if critical:
        assert (alert.kind, alert.severity, alert.owner_role) == (
            "vitals-critical",
            "urgent",
            "infusion-clinician",
        )
        assert alert.due == T0 + timedelta(minutes=VITALS.critical_due_minutes)
        assert alert.reason.startswith("critically abnormal")
    else:
        assert (alert.kind, alert.severity) == ("vitals-out-of-range", "warning")


def test_repeated_readings_in_one_session_update_one_alert() -> None:
    """Issue 12: repeated out-of-range readings in one session make one alert that is
    updated, not one alert per reading (same id, reason names the latest reading)."""
    (first,) = alerts(reading(0, systolic=185))
    (updated,) = alerts(reading(0, systolic=185), reading(15, systolic=192), reading(30))
    assert (updated.id, updated.raised_at, updated.status) == (first.id, T0, "open")
    assert "latest of 3 readings" in updated.reason
    assert "systolic 185" in updated.reason
    # Another session is another alert.
    both = alerts(reading(0), reading(15, session=OTHER_SESSION))
    assert len({a.id for a in both}) == 2


def test_a_critical_reading_after_a_warning_is_its_own_urgent_alert() -> None:
    warning, critical = alerts(reading(0), reading(15, spo2=45), reading(30, systolic=60))
    assert (warning.kind, critical.kind) == ("vitals-out-of-range", "vitals-critical")
    assert "latest of 2 readings" in critical.reason


def test_a_reading_after_the_alert_was_resolved_raises_a_new_one() -> None:
    (first,) = alerts(reading(0))
    resolved, again = alerts(reading(0), acted(first, "resolved", 10), reading(20))
    assert (resolved.id, resolved.status) == (first.id, "resolved")
    assert again.status == "open" and again.id != first.id
    # Acknowledged is still the same alert: the next reading updates it.
    (kept,) = alerts(reading(0), acted(first, "acknowledged", 10), reading(20))
    assert (kept.id, kept.status) == (first.id, "acknowledged")
