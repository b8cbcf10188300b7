"""Alert rules: small pure functions over facts the projection has gathered.

Each cites the line of ../shared/CLINICAL.md it implements.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.coordinator.domain import Alert


def phq9_item9_alert(item9: int | None, seen_at: datetime, source_event: str) -> Alert | None:
    """CLINICAL.md, Measures: PHQ-9 item 9 above 0 → urgent safety alert, same working day
    (Simon et al. 2013: item 9 predicts suicide attempts)."""
    if item9 is None or item9 <= 0:
        return None
    return Alert(
        kind="phq9-item9",
        severity="urgent",
        status="open",
        reason=f"PHQ-9 item 9 answered {item9} ({source_event}): thoughts of self-harm",
        who="duty clinician",
        due=_end_of_day(seen_at),
        raised_at=seen_at,
        source="CLINICAL.md Measures: PHQ-9 item 9 > 0, urgent safety alert, same working day",
    )


def _end_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=23, minute=59, second=59, microsecond=0)


def triage_due(received_at: datetime, priority: str) -> datetime:
    """CLINICAL.md, Waiting times: urgent referrals triaged within 2 working days
    (local policy). CLINICAL.md sets no triage time for routine referrals; 5 working
    days is this service's working target (local policy) until the referrals issue
    makes both a setting."""
    due = received_at
    added = 0
    days = 2 if priority == "urgent" else 5
    while added < days:
        due += timedelta(days=1)
        if due.weekday() < 5:
            added += 1
    return due


def treatment_due(received_at: datetime, target: str) -> datetime:
    """CLINICAL.md, Waiting times: psychology's first treatment alert at 6 weeks (NHS
    Talking Therapies); consultant-led treatment alert at 12 weeks (local policy)."""
    weeks = 6 if target == "psychology" else 12
    return received_at + timedelta(weeks=weeks)


def dna_review_alert(dna_count: int, threshold: int, at: datetime) -> Alert:
    """CLINICAL.md, Therapy: after 2 missed appointments in an episode → discharge review
    alert (local policy). Discharge after a DNA is a decision, never automatic."""
    return Alert(
        kind="dna-threshold",
        severity="high",
        status="open",
        reason=f"{dna_count} missed appointments (threshold {threshold}): review, not discharge",
        who="psychologist",
        due=at + timedelta(days=7),
        raised_at=at,
        source="CLINICAL.md Therapy: DNA after 2 missed appointments → discharge review",
    )


def vitals_alert(crossed: list[str], phase: str, at: datetime) -> Alert:
    """CLINICAL.md, During a session: systolic ≥ 180 or diastolic ≥ 110 during, ≥ 160/100
    before starting, SpO2 < 92% (local policy)."""
    return Alert(
        kind="vitals-out-of-range",
        severity="high",
        status="open",
        reason=f"vitals {phase} the infusion: " + "; ".join(crossed),
        who="infusion clinician",
        due=_end_of_day(at),
        raised_at=at,
        source="CLINICAL.md During a session: vitals thresholds (local policy)",
    )


def serious_adverse_event_alert(code: str, at: datetime) -> Alert:
    """CLINICAL.md, During a session: a serious adverse event closes the session and raises
    an MDT alert."""
    return Alert(
        kind="serious-adverse-event",
        severity="urgent",
        status="open",
        reason=f"serious adverse event during an infusion: {code}",
        who="MDT",
        due=_end_of_day(at),
        raised_at=at,
        source="CLINICAL.md During a session: serious adverse event → MDT alert",
    )
