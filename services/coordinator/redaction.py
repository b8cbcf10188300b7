"""What an admin may see of a pathway (issue 12).

Admins watch pathway status across all patients: stage, waits, and alert kinds and
severities. They never see scores, PHQ-9 item 9 wording or clinical notes, in the
pathway, the alert list or the FHIR export. Pure functions over the projection's values,
so the one fold serves every reader and the redaction is tested on its own.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from services.coordinator.domain import Alert, NextAction, Pathway, TimelineEntry

# FHIR resources that are scores and questionnaire answers: never in an admin's export.
P = TypeVar("P", bound=Pathway)  # the stored pathway, or the answer that carries it

CLINICAL_RESOURCES = frozenset({"Observation", "QuestionnaireResponse"})
# Fields of the remaining resources that carry clinical words (doses, responses).
CLINICAL_FIELDS = {"Procedure": ("note", "outcome")}


def _alert(alert: Alert) -> Alert:
    reason = f"{alert.severity} {alert.kind} alert for the {alert.owner_role}"
    return msgspec.structs.replace(alert, reason=reason)


def _entry(entry: TimelineEntry) -> TimelineEntry:
    return msgspec.structs.replace(entry, summary=entry.type)  # the kind of event only


def _action(action: NextAction) -> NextAction:
    # "MDT review: <an alert's reason>": the reason may carry a score or item-9 words.
    if action.action.startswith("MDT review"):
        return msgspec.structs.replace(action, action="MDT review")
    return action


def for_admin(pathway: P) -> P:
    """The pathway without scores, outcomes, item-9 answers or alert wording: stage,
    streams' statuses and times, waits, alert kinds, severities, owners and dues."""
    course = pathway.streams.infusion_course
    if course is not None:
        course = msgspec.structs.replace(course, last_response=None)
    review = pathway.review_due
    if review is not None:
        review = msgspec.structs.replace(review, reason="MDT review due")
    return msgspec.structs.replace(
        pathway,
        streams=msgspec.structs.replace(pathway.streams, infusion_course=course),
        timeline=[_entry(entry) for entry in pathway.timeline],
        measures={name: [] for name in pathway.measures},
        outcomes={},
        alerts=[_alert(alert) for alert in pathway.alerts],
        next_actions=[_action(action) for action in pathway.next_actions],
        review_due=review,
        opioid_use=None,
    )


def bundle_for_admin(bundle: dict[str, Any]) -> dict[str, Any]:
    """A FHIR export without scores, questionnaires or clinical notes."""
    entries = []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        kind = resource.get("resourceType")
        if kind in CLINICAL_RESOURCES:
            continue
        dropped = CLINICAL_FIELDS.get(kind, ())
        if dropped:
            resource = {k: v for k, v in resource.items() if k not in dropped}
            entry = {**entry, "resource": resource}
        entries.append(entry)
    return {**bundle, "entry": entries}
