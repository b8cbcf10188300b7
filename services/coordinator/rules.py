"""Alert rules: small pure functions over facts the projection has gathered.

Each cites the line of ../shared/CLINICAL.md it implements. Every threshold comes from
the clinical policy (shared/policy.py): a rule takes the policy, or its section, as its
last argument, and without one uses the policy the service loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.coordinator.domain import (
    ROLE_OF_TARGET,
    Alert,
    OwnerRole,
    ReferralStream,
    Severity,
    Streams,
)
from shared.policy import ChangePolicy, ClinicalPolicy, clinical_policy


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
        owner_role="mdt",
        due=_end_of_day(seen_at),
        raised_at=seen_at,
        source="CLINICAL.md Measures: PHQ-9 item 9 > 0, urgent safety alert, same working day",
    )


def _end_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=23, minute=59, second=59, microsecond=0)


def _review_due(at: datetime, policy: ClinicalPolicy) -> datetime:
    return at + timedelta(days=policy.alerts.review_due_days)


def _triage_days(priority: str, policy: ClinicalPolicy) -> int:
    waits = policy.waits
    return (
        waits.urgent_triage_working_days
        if priority == "urgent"
        else waits.routine_triage_working_days
    )


def triage_due(
    received_at: datetime, priority: str, policy: ClinicalPolicy | None = None
) -> datetime:
    """CLINICAL.md, Waiting times: urgent referrals triaged within 2 working days
    (local policy). CLINICAL.md sets no triage time for routine referrals; 5 working
    days is this service's working target (local policy, waits.routine_triage_working_days)."""
    due = received_at
    added = 0
    days = _triage_days(priority, policy or clinical_policy())
    while added < days:
        due += timedelta(days=1)
        if due.weekday() < 5:
            added += 1
    return due


def _alert_weeks(target: str, policy: ClinicalPolicy) -> int:
    waits = policy.waits
    return waits.psychology_alert_weeks if target == "psychology" else waits.consultant_alert_weeks


def _breach_weeks(target: str, policy: ClinicalPolicy) -> int:
    waits = policy.waits
    return (
        waits.psychology_breach_weeks if target == "psychology" else waits.consultant_breach_weeks
    )


def treatment_due(
    received_at: datetime, target: str, policy: ClinicalPolicy | None = None
) -> datetime:
    """CLINICAL.md, Waiting times: psychology's first treatment alert at 6 weeks (NHS
    Talking Therapies); consultant-led treatment alert at 12 weeks (local policy)."""
    return received_at + timedelta(weeks=_alert_weeks(target, policy or clinical_policy()))


def dna_review_alert(
    dna_count: int, threshold: int, at: datetime, policy: ClinicalPolicy | None = None
) -> Alert:
    """CLINICAL.md, Therapy: after 2 missed appointments in an episode → discharge review
    alert (local policy). Discharge after a DNA is a decision, never automatic."""
    return Alert(
        kind="dna-threshold",
        severity="warning",
        status="open",
        reason=f"{dna_count} missed appointments (threshold {threshold}): review, not discharge",
        owner_role="psychologist",
        due=_review_due(at, policy or clinical_policy()),
        raised_at=at,
        source=f"CLINICAL.md Therapy: DNA after {threshold} missed appointments → discharge review",
    )


def vitals_alert(crossed: list[str], phase: str, at: datetime) -> Alert:
    """CLINICAL.md, During a session: systolic ≥ 180 or diastolic ≥ 110 during, ≥ 160/100
    before starting, SpO2 < 92% (local policy)."""
    return Alert(
        kind="vitals-out-of-range",
        severity="warning",
        status="open",
        reason=f"vitals {phase} the infusion: " + "; ".join(crossed),
        owner_role="infusion-clinician",
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
        owner_role="mdt",
        due=_end_of_day(at),
        raised_at=at,
        source="CLINICAL.md During a session: serious adverse event → MDT alert",
    )


# --- change that matters (CLINICAL.md, "Change that matters") -----------------------------


@dataclass(frozen=True)
class Change:
    first: float
    last: float
    change: float  # last minus first: negative is better on every instrument here
    at_caseness_first: bool | None = None
    at_caseness_last: bool | None = None
    reliable_improvement: bool = False
    reliable_deterioration: bool = False
    recovered: bool | None = None
    response: bool | None = None
    meaningful_relief: bool | None = None
    substantial_relief: bool | None = None


def depression_anxiety_change(
    instrument: str, first: int, last: int, policy: ChangePolicy | None = None
) -> Change:
    """PHQ-9 or GAD-7 from the first score to the last: caseness (PHQ-9 ≥ 10, GAD-7 ≥ 8),
    reliable improvement/deterioration (6 and 4 points), recovery (at caseness first, not
    last), and for PHQ-9 the ketamine response (a fall of 50% or more)."""
    policy = policy or clinical_policy().change
    caseness = policy.phq9_caseness if instrument == "phq9" else policy.gad7_caseness
    reliable = policy.phq9_reliable_change if instrument == "phq9" else policy.gad7_reliable_change
    first_case, last_case = first >= caseness, last >= caseness
    response = None
    if instrument == "phq9" and first > 0:
        response = (first - last) / first >= policy.phq9_response_fraction
    return Change(
        first=first,
        last=last,
        change=last - first,
        at_caseness_first=first_case,
        at_caseness_last=last_case,
        reliable_improvement=first - last >= reliable,
        reliable_deterioration=last - first >= reliable,
        recovered=(not last_case) if first_case else None,
        response=response,
    )


def pain_change(first: int, last: int, policy: ChangePolicy | None = None) -> Change:
    """Pain NRS: meaningful relief is a fall of 30% or more, substantial 50% (IMMPACT)."""
    policy = policy or clinical_policy().change
    fall = (first - last) / first if first > 0 else 0.0
    return Change(
        first=first,
        last=last,
        change=last - first,
        meaningful_relief=first > 0 and fall >= policy.pain_meaningful_fraction,
        substantial_relief=first > 0 and fall >= policy.pain_substantial_fraction,
    )


def reliable_deterioration_alert(
    instrument: str, change: Change, at: datetime, policy: ClinicalPolicy | None = None
) -> Alert | None:
    """CLINICAL.md: reliable deterioration (PHQ-9 up 6, GAD-7 up 4 from the first score)."""
    if not change.reliable_deterioration:
        return None
    name = "PHQ-9" if instrument == "phq9" else "GAD-7"
    return Alert(
        kind="reliable-deterioration",
        severity="warning",
        status="open",
        reason=f"{name} rose from {change.first:g} to {change.last:g}",
        owner_role="mdt",
        due=_review_due(at, policy or clinical_policy()),
        raised_at=at,
        source="CLINICAL.md Change that matters: reliable deterioration",
    )


def no_response_alert(
    completed_sessions: int,
    responded: bool,
    at: datetime,
    policy: ClinicalPolicy | None = None,
) -> Alert | None:
    """CLINICAL.md, Course rules: no meaningful response (pain ≥ 30% or PHQ-9 ≥ 50% better
    than baseline) after 3 infusions → MDT review alert (local policy). Raised once, at the
    infusion that makes the count."""
    policy = policy or clinical_policy()
    after_sessions = policy.course.no_response_after_sessions
    if completed_sessions != after_sessions or responded:
        return None
    return Alert(
        kind="no-response",
        severity="warning",
        status="open",
        reason=f"no meaningful response after {after_sessions} infusions",
        owner_role="mdt",
        due=_review_due(at, policy),
        raised_at=at,
        source=f"CLINICAL.md Course rules: no response after {after_sessions} infusions → "
        "MDT review",
    )


# --- time-based alerts -------------------------------------------------------------------
#
# The fold never reads the clock. A periodic check (clock.py) asks `crossed` which
# thresholds a pathway has passed by now and records each as a `pathway.alert.raised`
# event; the fold turns that event into an alert with `time_alert` and resolves it with
# `cleared` as soon as the events show the condition gone.

TIME_KINDS = (
    "triage-overdue",
    "waiting-time",
    "waiting-breach",
    "maintenance-overdue",
    "no-psychology-referral",
)
_ENDED_REFERRAL = ("rejected", "cancelled", "closed")


@dataclass(frozen=True)
class Crossing:
    """A time threshold a pathway has passed: which rule, about what, since when."""

    kind: str
    subject: str
    crossed_at: datetime


def treatment_started(streams: Streams, referral: ReferralStream) -> bool:
    """Whether the referral's treatment has begun, which stops its waiting clock.

    Psychology: the first attended treatment appointment (NHS Talking Therapies).
    Infusion clinic: the first infusion started. Pain MDT: the MDT's first review after
    the referral arrived.
    """
    if referral.target == "psychology":
        episode = streams.therapy_episode
        return episode is not None and episode.attended_treatment > 0
    if referral.target == "ketamine-infusion":
        course = streams.infusion_course
        return course is not None and course.first_session_at is not None
    return any(review.reviewed_at >= referral.received_at for review in streams.mdt_reviews)


def has_psychology(streams: Streams) -> bool:
    """Psychology is part of the pathway: a psychology referral waiting or accepted, or a
    therapy episode the patient did not decline (CLINICAL.md: suggest one when none
    "exists or is declined")."""
    if any(
        r.target == "psychology" and r.status in ("received", "info-requested", "accepted")
        for r in streams.referrals
    ):
        return True
    episode = streams.therapy_episode
    return episode is not None and episode.discharge_reason != "declined"


def crossed(
    streams: Streams, now: datetime, policy: ClinicalPolicy | None = None
) -> list[Crossing]:
    """Every time threshold these streams have passed by `now` (CLINICAL.md, Waiting
    times and Course rules)."""
    policy = policy or clinical_policy()
    found: list[Crossing] = []
    for referral in streams.referrals:
        if referral.status == "received":
            due = triage_due(referral.triage_from, referral.priority, policy)
            if now >= due:
                found.append(Crossing("triage-overdue", referral.id, due))
        if referral.status in _ENDED_REFERRAL or treatment_started(streams, referral):
            continue
        for kind, weeks in (
            ("waiting-time", _alert_weeks(referral.target, policy)),
            ("waiting-breach", _breach_weeks(referral.target, policy)),
        ):
            due = referral.received_at + timedelta(weeks=weeks)
            if now >= due:
                found.append(Crossing(kind, referral.id, due))
    course = streams.infusion_course
    if course is not None and course.status in ("planned", "active"):
        if course.maintenance_due_at is not None:
            due = course.maintenance_due_at + timedelta(days=policy.course.maintenance_grace_days)
            if now >= due:
                found.append(Crossing("maintenance-overdue", course.id, due))
        if course.first_session_at is not None and not has_psychology(streams):
            due = psychology_suggestion_due(course.first_session_at, policy)
            if now >= due:
                found.append(Crossing("no-psychology-referral", course.id, due))
    return found


def psychology_suggestion_due(
    first_session_at: datetime, policy: ClinicalPolicy | None = None
) -> datetime:
    """CLINICAL.md, Waiting times: suggest a psychology referral within 14 days of an
    infusion course starting (local policy)."""
    days = (policy or clinical_policy()).waits.psychology_suggestion_days
    return first_session_at + timedelta(days=days)


def cleared(crossing: Crossing, streams: Streams, policy: ClinicalPolicy | None = None) -> bool:
    """Whether the events now show the crossed condition gone (or never there)."""
    # The same function that finds crossings decides: a condition is cleared exactly
    # when, judged at the moment it was crossed, it is no longer found.
    return crossing not in crossed(streams, crossing.crossed_at, policy)


def time_alert(crossing: Crossing, streams: Streams, policy: ClinicalPolicy | None = None) -> Alert:
    """The alert for a crossed time threshold; its wording names the rule's source."""
    policy = policy or clinical_policy()
    waits = policy.waits
    referral = next((r for r in streams.referrals if r.id == crossing.subject), None)
    target = referral.target if referral is not None else "the"
    kind, at = crossing.kind, crossing.crossed_at
    if kind == "triage-overdue":
        urgent = referral is not None and referral.priority == "urgent"
        return _time_alert(
            crossing,
            severity="urgent" if urgent else "warning",
            reason=f"{referral.priority if referral else ''} {target} referral not triaged "
            f"within {_triage_days('urgent' if urgent else 'routine', policy)} working days",
            owner_role=ROLE_OF_TARGET.get(target, "mdt"),
            due=at,
            source="CLINICAL.md Waiting times: urgent referrals triaged within "
            f"{waits.urgent_triage_working_days} working days",
        )
    if kind in ("waiting-time", "waiting-breach"):
        weeks = round((at - referral.received_at).days / 7) if referral else 0
        breach = kind == "waiting-breach"
        breach_weeks = _breach_weeks(target, policy)
        return _time_alert(
            crossing,
            severity="urgent" if breach else "warning",
            reason=f"{target} referral waiting {weeks} weeks without treatment"
            + (f" ({breach_weeks}-week standard breached)" if breach else ""),
            owner_role=ROLE_OF_TARGET.get(target, "mdt"),
            due=at
            if breach
            else (referral.received_at if referral else at) + timedelta(weeks=breach_weeks),
            source=f"CLINICAL.md Waiting times: psychology {waits.psychology_alert_weeks} and "
            f"{waits.psychology_breach_weeks} weeks, consultant-led "
            f"{waits.consultant_alert_weeks} and {waits.consultant_breach_weeks} weeks",
        )
    if kind == "maintenance-overdue":
        return _time_alert(
            crossing,
            severity="warning",
            reason="planned maintenance infusion overdue",
            owner_role="infusion-clinician",
            due=_review_due(at, policy),
            source="CLINICAL.md Course rules: alert when a planned maintenance infusion is overdue",
        )
    return _time_alert(
        crossing,
        severity="warning",
        reason=f"infusions started {waits.psychology_suggestion_days} days ago with no "
        "psychology referral: consider CBT alongside infusions",
        owner_role="mdt",
        due=_review_due(at, policy),
        source="CLINICAL.md Waiting times: suggest a psychology referral within "
        f"{waits.psychology_suggestion_days} days of an infusion course starting",
    )


def _time_alert(
    crossing: Crossing,
    *,
    severity: Severity,
    reason: str,
    owner_role: OwnerRole,
    due: datetime,
    source: str,
) -> Alert:
    return Alert(
        kind=crossing.kind,
        severity=severity,
        status="open",
        reason=reason,
        owner_role=owner_role,
        due=due,
        raised_at=crossing.crossed_at,
        source=source,
        subject=crossing.subject,
    )
