"""The pathway as a pure fold over one patient's events.

Sorted by (occurred_at, sequence, event_id), so the same events in any delivery order,
with any duplicates, give the same pathway. Types the fold does not know are kept on
the timeline and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import msgspec

from services.coordinator.domain import (
    Alert,
    MeasurePoint,
    NextAction,
    Pathway,
    ReferralStream,
    Stage,
    TimelineEntry,
)
from services.coordinator.rules import phq9_item9_alert, treatment_due, triage_due
from shared.events import Envelope

TEAM_OF_TARGET = {
    "ketamine-infusion": "infusion clinic",
    "psychology": "psychology team",
    "pain-mdt": "pain MDT",
}


def ordered(events: Iterable[Envelope]) -> list[Envelope]:
    unique = {event.event_id: event for event in events}
    return sorted(unique.values(), key=lambda e: (e.occurred_at, e.sequence, str(e.event_id)))


def project(patient_id: UUID, events: Iterable[Envelope]) -> Pathway:
    history = ordered(events)
    if not history:
        raise ValueError("a pathway needs at least one event")
    stage: Stage = "registered"
    stage_since = history[0].occurred_at
    referrals: dict[str, ReferralStream] = {}
    timeline: list[TimelineEntry] = []
    measures: dict[str, list[MeasurePoint]] = {"phq9": [], "gad7": [], "pain_nrs": []}
    alerts: list[Alert] = []

    for event in history:
        timeline.append(_timeline_entry(event))
        if event.type == "referral.received":
            data = event.data
            referrals[data["referral_id"]] = ReferralStream(
                referral_id=data["referral_id"],
                target=data["target"],
                priority=data["priority"],
                status="received",
                received_at=event.occurred_at,
            )
            if stage == "registered":
                stage, stage_since = "referred", event.occurred_at
            baseline = data.get("baseline") or {}
            if baseline.get("phq9_total") is not None:
                measures["phq9"].append(
                    MeasurePoint(
                        at=event.occurred_at,
                        value=baseline["phq9_total"],
                        source="referral baseline",
                    )
                )
            if baseline.get("pain_nrs") is not None:
                measures["pain_nrs"].append(
                    MeasurePoint(
                        at=event.occurred_at, value=baseline["pain_nrs"], source="referral baseline"
                    )
                )
            alert = phq9_item9_alert(
                baseline.get("phq9_item9"), event.occurred_at, "referral baseline"
            )
            if alert is not None:
                alerts.append(alert)
        elif event.type in REFERRAL_STATUS_OF:
            data = event.data
            stream = referrals.get(data["referral_id"]) or ReferralStream(
                # The referral's own received event has not arrived (yet): keep what is known.
                referral_id=data["referral_id"],
                target=data["target"],
                priority=data.get("priority", "unknown"),
                status="received",
                received_at=event.occurred_at,
            )
            referrals[data["referral_id"]] = msgspec.structs.replace(
                stream, status=REFERRAL_STATUS_OF[event.type]
            )
            if event.type == "referral.accepted" and stage in ("registered", "referred"):
                stage, stage_since = "triaged", event.occurred_at
            if event.type == "referral.closed" and not _open(referrals.values()):
                stage, stage_since = "discharged", event.occurred_at

    next_actions = [action for stream in referrals.values() if (action := _next_action(stream))]
    return Pathway(
        patient_id=patient_id,
        stage=stage,
        stage_since=stage_since,
        referrals=list(referrals.values()),
        timeline=timeline,
        measures=measures,
        alerts=alerts,
        next_actions=sorted(next_actions, key=lambda action: action.due),
        event_count=len(history),
        last_event_at=history[-1].occurred_at,
    )


REFERRAL_STATUS_OF = {
    "referral.info_requested": "info-requested",
    "referral.info_provided": "received",
    "referral.accepted": "accepted",
    "referral.rejected": "rejected",
    "referral.cancelled": "cancelled",
    "referral.closed": "closed",
}
OPEN_REFERRAL = ("received", "info-requested", "accepted")


def _open(streams: Iterable[ReferralStream]) -> bool:
    return any(stream.status in OPEN_REFERRAL for stream in streams)


def _next_action(stream: ReferralStream) -> NextAction | None:
    team = TEAM_OF_TARGET.get(stream.target, stream.target)
    if stream.status == "received":
        return NextAction(
            action=f"triage the {stream.priority} {stream.target} referral",
            who=team,
            due=triage_due(stream.received_at, stream.priority),
        )
    if stream.status == "info-requested":
        return NextAction(
            action=f"answer the {team}'s question about the {stream.target} referral",
            who="referrer",
            due=triage_due(stream.received_at, stream.priority),
        )
    if stream.status == "accepted":
        return NextAction(
            action=f"start treatment for the {stream.target} referral",
            who=team,
            due=treatment_due(stream.received_at, stream.target),
        )
    return None


def _timeline_entry(event: Envelope) -> TimelineEntry:
    return TimelineEntry(
        event_id=event.event_id,
        type=event.type,
        occurred_at=event.occurred_at,
        producer=event.producer,
        subject_type=event.subject.type,
        subject_id=event.subject.id,
        summary=_summary(event),
    )


def _summary(event: Envelope) -> str:
    data = event.data
    if event.type == "referral.received":
        return f"{data.get('priority', '')} referral to {data.get('target', '')} received"
    if event.type == "patient.registered":
        return "patient registered"
    if event.type in REFERRAL_STATUS_OF:
        return f"{data.get('target', '')} referral {REFERRAL_STATUS_OF[event.type]}"
    return event.type
