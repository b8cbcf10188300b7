"""Alert rules: small pure functions over facts the projection has gathered.

Each cites the line of ../shared/CLINICAL.md it implements. Every threshold comes from
the clinical policy (shared/policy.py): a rule takes the policy, or its section, as its
last argument, and without one uses the policy the service loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from services.coordinator.domain import (
    ROLE_OF_TARGET,
    Alert,
    MeasureOutcome,
    OwnerRole,
    ReferralStream,
    Severity,
    Streams,
)
from shared.policy import ChangePolicy, ClinicalPolicy, clinical_policy
from shared.triage import same_working_day, triage_working_days
from shared.triage import triage_due as shared_triage_due

# --- what each alert is ---------------------------------------------------------------


@dataclass(frozen=True)
class AlertRule:
    """One kind of alert: how urgent it is, who acts on it, and the line of CLINICAL.md it
    implements (its {fields} are filled in from the policy or the event as it is raised)."""

    severity: Severity
    owner_role: OwnerRole
    source: str


_WAITS = (
    "CLINICAL.md Waiting times: psychology {waits.psychology_alert_weeks} and "
    "{waits.psychology_breach_weeks} weeks, consultant-led "
    "{waits.consultant_alert_weeks} and {waits.consultant_breach_weeks} weeks"
)
ALERT_RULES: dict[str, AlertRule] = {
    "phq9-item9": AlertRule(
        "urgent",
        "mdt",
        "CLINICAL.md Measures: PHQ-9 item 9 > 0, urgent safety alert, same working day",
    ),
    "dna-threshold": AlertRule(
        "warning",
        "psychologist",
        "CLINICAL.md Therapy: DNA after {threshold} missed appointments → discharge review",
    ),
    "vitals-out-of-range": AlertRule(
        "warning",
        "infusion-clinician",
        "CLINICAL.md During a session: vitals thresholds (local policy)",
    ),
    "vitals-critical": AlertRule(
        "urgent",
        "infusion-clinician",
        "CLINICAL.md During a session: critically abnormal vitals (NEWS2 red score; "
        "SpO2 below {vitals.critical_low_spo2}%, local policy) → urgent alert",
    ),
    "serious-adverse-event": AlertRule(
        "urgent", "mdt", "CLINICAL.md During a session: serious adverse event → MDT alert"
    ),
    "reliable-deterioration": AlertRule(
        "warning", "mdt", "CLINICAL.md Change that matters: reliable deterioration"
    ),
    "no-response": AlertRule(
        "warning",
        "mdt",
        "CLINICAL.md Course rules: no response after {sessions} infusions → MDT review",
    ),
    # The time thresholds (below): a referral's waits go to its own team (time_alert), and
    # an urgent referral's overdue triage is urgent.
    "triage-overdue": AlertRule(
        "warning",
        "mdt",
        "CLINICAL.md Waiting times: urgent referrals triaged within "
        "{waits.urgent_triage_working_days} working days",
    ),
    "waiting-time": AlertRule("warning", "mdt", _WAITS),
    "waiting-breach": AlertRule("urgent", "mdt", _WAITS),
    "maintenance-overdue": AlertRule(
        "warning",
        "infusion-clinician",
        "CLINICAL.md Course rules: alert when a planned maintenance infusion is overdue",
    ),
    "urgent-overdue": AlertRule(
        "critical",
        "mdt",
        "issue 12 (local policy): an urgent alert not acknowledged "
        "{alerts.urgent_escalation_minutes} minutes after its due time escalates to the MDT",
    ),
    "no-psychology-referral": AlertRule(
        "warning",
        "mdt",
        "CLINICAL.md Waiting times: suggest a psychology referral within "
        "{waits.psychology_suggestion_days} days of an infusion course starting",
    ),
}


def _alert(kind: str, at: datetime, reason: str, due: datetime, **source_fields: object) -> Alert:
    """An open alert of this kind raised at ``at``, as its rule describes it."""
    rule = ALERT_RULES[kind]
    return Alert(
        kind=kind,
        severity=rule.severity,
        status="open",
        reason=reason,
        owner_role=rule.owner_role,
        due=due,
        raised_at=at,
        source=rule.source.format(**source_fields),
    )


def phq9_item9_alert(item9: int | None, seen_at: datetime, source_event: str) -> Alert | None:
    """CLINICAL.md, Measures: PHQ-9 item 9 above 0 → urgent safety alert, same working day
    (Simon et al. 2013: item 9 predicts suicide attempts)."""
    if item9 is None or item9 <= 0:
        return None
    reason = f"PHQ-9 item 9 answered {item9} ({source_event}): thoughts of self-harm"
    return _alert("phq9-item9", seen_at, reason, _end_of_day(seen_at))


def _end_of_day(moment: datetime) -> datetime:
    """The end of the clinic's working day (CLINICAL.md: "same working day")."""
    return same_working_day(moment)


def _review_due(at: datetime, policy: ClinicalPolicy) -> datetime:
    return at + timedelta(days=policy.alerts.review_due_days)


def _triage_days(priority: str, policy: ClinicalPolicy) -> int:
    return triage_working_days(priority, policy)


def triage_due(
    received_at: datetime, priority: str, policy: ClinicalPolicy | None = None
) -> datetime:
    """CLINICAL.md, Waiting times: urgent referrals triaged within 2 working days
    (local policy), in the clinic's working calendar. The one deadline lives in
    shared/triage.py, so the referrals inbox and the coordinator agree on it."""
    return shared_triage_due(received_at, priority, policy)


def alert_weeks(target: str, policy: ClinicalPolicy) -> int:
    waits = policy.waits
    return waits.psychology_alert_weeks if target == "psychology" else waits.consultant_alert_weeks


def breach_weeks(target: str, policy: ClinicalPolicy) -> int:
    waits = policy.waits
    return (
        waits.psychology_breach_weeks if target == "psychology" else waits.consultant_breach_weeks
    )


def treatment_due(
    received_at: datetime, target: str, policy: ClinicalPolicy | None = None
) -> datetime:
    """CLINICAL.md, Waiting times: psychology's first treatment alert at 6 weeks (NHS
    Talking Therapies); consultant-led treatment alert at 12 weeks (local policy)."""
    return received_at + timedelta(weeks=alert_weeks(target, policy or clinical_policy()))


def dna_review_alert(
    dna_count: int, threshold: int, at: datetime, policy: ClinicalPolicy | None = None
) -> Alert:
    """CLINICAL.md, Therapy: after 2 missed appointments in an episode → discharge review
    alert (local policy). Discharge after a DNA is a decision, never automatic."""
    reason = f"{dna_count} missed appointments (threshold {threshold}): review, not discharge"
    due = _review_due(at, policy or clinical_policy())
    return _alert("dna-threshold", at, reason, due, threshold=threshold)


def vitals_alert(crossed: list[str], phase: str, at: datetime) -> Alert:
    """CLINICAL.md, During a session: systolic ≥ 180 or diastolic ≥ 110 during, ≥ 160/100
    before starting, SpO2 < 92% (local policy)."""
    return _alert("vitals-out-of-range", at, vitals_reason(crossed, phase, 1), _end_of_day(at))


def critical_vitals_alert(
    found: list[str], phase: str, at: datetime, policy: ClinicalPolicy | None = None
) -> Alert:
    """An urgent alert for the infusion clinician, due within the monitoring interval."""
    policy = policy or clinical_policy()
    due = at + timedelta(minutes=policy.vitals.critical_due_minutes)
    reason = "critically abnormal " + vitals_reason(found, phase, 1)
    return _alert("vitals-critical", at, reason, due, vitals=policy.vitals)


def vitals_reason(crossed: list[str], phase: str, readings: int) -> str:
    """One alert per session and kind: it says how many readings it stands for."""
    reason = f"vitals {phase} the infusion: " + "; ".join(crossed)
    if readings > 1:
        reason += f" (latest of {readings} readings out of range in this session)"
    return reason


def serious_adverse_event_alert(code: str, at: datetime) -> Alert:
    """CLINICAL.md, During a session: a serious adverse event closes the session and raises
    an MDT alert."""
    reason = f"serious adverse event during an infusion: {code}"
    return _alert("serious-adverse-event", at, reason, _end_of_day(at))


# --- change that matters (CLINICAL.md, "Change that matters") -----------------------------


def depression_anxiety_change(
    instrument: str, first: int, last: int, policy: ChangePolicy | None = None
) -> MeasureOutcome:
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
    return MeasureOutcome(
        first=float(first),
        last=float(last),
        change=float(last - first),
        at_caseness_first=first_case,
        at_caseness_last=last_case,
        reliable_improvement=first - last >= reliable,
        reliable_deterioration=last - first >= reliable,
        recovered=(not last_case) if first_case else None,
        response=response,
    )


def pain_change(first: int, last: int, policy: ChangePolicy | None = None) -> MeasureOutcome:
    """Pain NRS: meaningful relief is a fall of 30% or more, substantial 50% (IMMPACT)."""
    policy = policy or clinical_policy().change
    fall = (first - last) / first if first > 0 else 0.0
    return MeasureOutcome(
        first=float(first),
        last=float(last),
        change=float(last - first),
        meaningful_relief=first > 0 and fall >= policy.pain_meaningful_fraction,
        substantial_relief=first > 0 and fall >= policy.pain_substantial_fraction,
    )


def reliable_deterioration_alert(
    instrument: str, change: MeasureOutcome, at: datetime, policy: ClinicalPolicy | None = None
) -> Alert | None:
    """CLINICAL.md: reliable deterioration (PHQ-9 up 6, GAD-7 up 4 from the first score)."""
    if not change.reliable_deterioration:
        return None
    name = "PHQ-9" if instrument == "phq9" else "GAD-7"
    reason = f"{name} rose from {change.first:g} to {change.last:g}"
    due = _review_due(at, policy or clinical_policy())
    return _alert("reliable-deterioration", at, reason, due)


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
    reason = f"no meaningful response after {after_sessions} infusions"
    return _alert("no-response", at, reason, _review_due(at, policy), sessions=after_sessions)


# --- escalation ----------------------------------------------------------------------------

ESCALATION = "urgent-overdue"
# "Nothing ahead": the next-due time of a pathway with no threshold left to pass.
NOTHING_DUE = datetime(9999, 12, 31, tzinfo=UTC)


def escalation_due(alert: Alert, policy: ClinicalPolicy | None = None) -> datetime | None:
    """When an urgent alert nobody has acted on escalates to the MDT (None: it never
    does: not urgent, already acknowledged or resolved, or itself an escalation)."""
    if alert.severity != "urgent" or alert.status != "open" or alert.kind == ESCALATION:
        return None
    minutes = (policy or clinical_policy()).alerts.urgent_escalation_minutes
    return alert.due + timedelta(minutes=minutes)


def escalated_alert(
    overdue: Alert, crossed_at: datetime, policy: ClinicalPolicy | None = None
) -> Alert:
    """A new, louder alert for the MDT about an urgent alert past its due time, due by
    the end of the clinic's working day."""
    policy = policy or clinical_policy()
    reason = (
        f"urgent {overdue.kind} alert for the {overdue.owner_role} not acknowledged by its "
        "due time: the MDT must act"
    )
    alert = _alert(ESCALATION, crossed_at, reason, _end_of_day(crossed_at), alerts=policy.alerts)
    return msgspec.structs.replace(alert, subject=overdue.id)


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
_REFERRAL_WAITS = ("triage-overdue", "waiting-time", "waiting-breach")


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


def treatment_started_at(streams: Streams, referral: ReferralStream) -> datetime | None:
    """When the referral's treatment began (as `treatment_started` judges it), if it has."""
    if referral.target == "psychology":
        episode = streams.therapy_episode
        return episode.first_treatment_at if episode is not None else None
    if referral.target == "ketamine-infusion":
        course = streams.infusion_course
        return course.first_session_at if course is not None else None
    reviews = [r.reviewed_at for r in streams.mdt_reviews if r.reviewed_at >= referral.received_at]
    return min(reviews, default=None)


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
            ("waiting-time", alert_weeks(referral.target, policy)),
            ("waiting-breach", breach_weeks(referral.target, policy)),
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


def time_alert(
    crossing: Crossing,
    streams: Streams,
    policy: ClinicalPolicy | None = None,
    seen_at: datetime | None = None,
) -> Alert:
    """The alert for a crossed time threshold; its wording names the rule's source. An
    urgent one is due by the end of the working day the clock saw it (``seen_at``)."""
    policy = policy or clinical_policy()
    seen = max(seen_at or crossing.crossed_at, crossing.crossed_at)
    waits = policy.waits
    referral = next((r for r in streams.referrals if r.id == crossing.subject), None)
    target = referral.target if referral is not None else "the"
    kind, at = crossing.kind, crossing.crossed_at
    if kind == "triage-overdue":
        urgent = referral is not None and referral.priority == "urgent"
        days = _triage_days("urgent" if urgent else "routine", policy)
        reason = (
            f"{referral.priority if referral else ''} {target} referral not triaged "
            f"within {days} working days"
        )
        alert = _alert(kind, at, reason, at, waits=waits)
        if urgent:  # the team acts by the end of the clinic's working day
            alert = msgspec.structs.replace(alert, severity="urgent", due=_end_of_day(seen))
    elif kind in ("waiting-time", "waiting-breach"):
        weeks = round((at - referral.received_at).days / 7) if referral else 0
        standard = breach_weeks(target, policy)
        reason = f"{target} referral waiting {weeks} weeks without treatment"
        if kind == "waiting-breach":
            reason += f" ({standard}-week standard breached)"
            due = _end_of_day(seen)  # urgent: by the end of the clinic's working day
        else:
            due = (referral.received_at if referral else at) + timedelta(weeks=standard)
        alert = _alert(kind, at, reason, due, waits=waits)
    elif kind == "maintenance-overdue":
        reason = "planned maintenance infusion overdue"
        alert = _alert(kind, at, reason, _review_due(at, policy))
    else:
        reason = (
            f"infusions started {waits.psychology_suggestion_days} days ago with no "
            "psychology referral: consider CBT alongside infusions"
        )
        alert = _alert(kind, at, reason, _review_due(at, policy), waits=waits)
    # The referral's own team acts on its waits.
    team = ROLE_OF_TARGET.get(target, "mdt") if kind in _REFERRAL_WAITS else alert.owner_role
    return msgspec.structs.replace(alert, owner_role=team, subject=crossing.subject)


def overdue_urgent(alerts: list[Alert], now: datetime) -> list[Crossing]:
    """Urgent alerts nobody has acknowledged by their due time: each escalates once."""
    found = []
    for alert in alerts:
        due = escalation_due(alert)
        if due is not None and now >= due:
            found.append(Crossing(ESCALATION, alert.id, due))
    return found


def new_crossings(streams: Streams, alerts: list[Alert], now: datetime) -> list[Crossing]:
    """Thresholds these streams and alerts have passed by `now` and not yet raised."""
    raised = {(alert.kind, alert.subject, alert.raised_at) for alert in alerts}
    found = crossed(streams, now) + overdue_urgent(alerts, now)
    return [c for c in found if (c.kind, c.subject, c.crossed_at) not in raised]


def next_due(streams: Streams, alerts: list[Alert]) -> datetime:
    """When the next threshold not yet raised falls due (`NOTHING_DUE` if none): the
    clock looks only at pathways whose time has come, not at every open one."""
    ahead = new_crossings(streams, alerts, NOTHING_DUE)
    return min((crossing.crossed_at for crossing in ahead), default=NOTHING_DUE)
