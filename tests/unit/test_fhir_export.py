"""FHIR R4 export of a patient's pathway (CLINICAL.md, "Standards to map to").

The pure part builds pathways with the fold from hand-made envelopes and checks the
Bundle against fhir.resources' R4B models (R4B is the R4-compatible release) and the
FHIR status sets; the embedded part drives a patient through the referrals, infusions
and therapy APIs and reads `GET /api/pathways/{id}/fhir`.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from services.coordinator.domain import Pathway
from services.coordinator.fhir import pathway_bundle
from services.coordinator.projection import project
from shared.auth import Role
from shared.clock import clinic_clock
from shared.events import Envelope, Subject, new_event, payload_type
from shared.tables import AuditRecord
from tests.embedded import (
    VALID_NHS,
    Embedded,
    assert_problem,
    assessment_body,
    plan_body,
    referral_body,
    register,
)

from .factories import ACTOR, T0, patient_registered, referral_received

PATIENT = UUID("5e0f4c11-8a2b-4c3d-9e4f-0a1b2c3d4e5f")
INFUSION_REFERRAL = UUID("6f1a5d22-9b3c-4d4e-8f50-1b2c3d4e5f60")
PSYCHOLOGY_REFERRAL = UUID("702b6e33-ac4d-4e5f-9061-2c3d4e5f6071")
COURSE = UUID("813c7f44-bd5e-4f60-a172-3d4e5f607182")
EPISODE = UUID("924d8055-ce6f-4071-b283-4e5f60718293")
SESSION_1 = UUID("a35e9166-df70-4182-8394-5f60718293a4")
SESSION_2 = UUID("b46fa277-e081-4293-94a5-60718293a4b5")
ATTENDED = UUID("c570b388-f192-43a4-a5b6-718293a4b5c6")
CANCELLED = UUID("d681c499-02a3-44b5-b6c7-8293a4b5c6d7")
MISSED = UUID("e792d5aa-13b4-45c6-87d8-93a4b5c6d7e8")

# FHIR R4 status value sets (CLINICAL.md, "Standards to map to"; hl7.org/fhir/R4).
REQUEST_STATUSES = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
TASK_STATUSES = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}
EPISODE_STATUSES = {
    "planned",
    "waitlist",
    "active",
    "onhold",
    "finished",
    "cancelled",
    "entered-in-error",
}
APPOINTMENT_STATUSES = {
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
}
PROCEDURE_STATUSES = {
    "preparation",
    "in-progress",
    "not-done",
    "on-hold",
    "stopped",
    "completed",
    "entered-in-error",
    "unknown",
}
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
FHIR_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
LOINC = "http://loinc.org"

# --- envelopes ----------------------------------------------------------------------------


def event(
    event_type: str, subject: tuple[str, UUID], hours: float, sequence: int, **data: Any
) -> Envelope:
    payload = payload_type(event_type, 1)
    assert payload is not None
    envelope = new_event(
        type=event_type,
        data=msgspec.convert(data, payload, from_attributes=True),
        producer="test",
        patient_id=PATIENT,
        subject=Subject(type=subject[0], id=str(subject[1])),
        actor=ACTOR,
        correlation_id="corr-fhir",
        occurred_at=T0 + timedelta(hours=hours),
    )
    return msgspec.structs.replace(envelope, sequence=sequence)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def referral_event(
    event_type: str, hours: float, sequence: int, referral: UUID = INFUSION_REFERRAL, **data: Any
) -> Envelope:
    target = "psychology" if referral == PSYCHOLOGY_REFERRAL else "ketamine-infusion"
    return event(
        event_type,
        ("referral", referral),
        hours,
        sequence,
        referral_id=referral,
        target=target,
        **data,
    )


def course_event(event_type: str, hours: float, sequence: int, **data: Any) -> Envelope:
    return event(event_type, ("infusion-course", COURSE), hours, sequence, course_id=COURSE, **data)


def therapy_event(event_type: str, hours: float, sequence: int, **data: Any) -> Envelope:
    return event(
        event_type, ("therapy-episode", EPISODE), hours, sequence, episode_id=EPISODE, **data
    )


RESPONDED = {
    "pain_change_fraction": 0.5,
    "phq9_change_fraction": 0.36,
    "pain_meaningful": True,
    "pain_substantial": True,
    "phq9_response": False,
    "responded": True,
}


def infusion_received(hours: float = 1) -> Envelope:
    return referral_received(
        PATIENT, occurred_at=at(hours), referral_id=INFUSION_REFERRAL, phq9_total=12
    )


def psychology_received(hours: float = 12) -> Envelope:
    return referral_received(
        PATIENT,
        occurred_at=at(hours),
        referral_id=PSYCHOLOGY_REFERRAL,
        target="psychology",
        priority="urgent",
        phq9_total=None,
        phq9_item9=None,
        pain_nrs=None,
    )


def appointment(
    event_type: str, appointment_id: UUID, hours: float, sequence: int, **data: Any
) -> Envelope:
    start = at(48)
    if event_type == "appointment.booked":
        fields = {"mode": "video", "clinician_id": "psy-1", "end": start + timedelta(hours=1)}
    else:
        fields = {"previous_status": "booked", "attended_treatment": 0, "dna_count": 0}
    return therapy_event(
        event_type,
        hours,
        sequence,
        appointment_id=appointment_id,
        kind="cbt",
        start=start,
        **{**fields, **data},
    )


def journey() -> list[Envelope]:
    """Referred to both teams: two infusions (one abandoned), vitals out of range, CBT
    with PHQ-9 and GAD-7, one appointment cancelled and one missed."""
    return [
        patient_registered(PATIENT),
        infusion_received(),
        referral_event(
            "referral.accepted",
            2,
            2,
            priority="routine",
            conditions=["crps", "depression"],
            accepted_at=at(2),
        ),
        course_event(
            "infusion.course.opened",
            3,
            1,
            referral_id=INFUSION_REFERRAL,
            priority="routine",
            opened_at=at(3),
        ),
        course_event(
            "infusion.assessment.recorded",
            4,
            2,
            assessment_id=uuid4(),
            outcome="eligible",
            blocked_by=[],
            cautions_overridden=[],
            pain_nrs=8,
            phq9_total=14,
            phq9_item9=0,
            opioid_mme_per_day=60.5,
            assessed_at=at(4),
        ),
        course_event(
            "infusion.plan.agreed",
            5,
            3,
            plan_id=uuid4(),
            indication="pain",
            total_mg=84.0,
            rate_mg_per_h=21.0,
            induction_count=3,
            induction_spacing_days=3,
            maintenance_interval_days=28,
            overridden_fields=[],
            agreed_at=at(5),
        ),
        course_event(
            "infusion.course.status_changed",
            6,
            4,
            status="active",
            previous_status="planned",
            changed_at=at(6),
        ),
        course_event(
            "infusion.session.started", 7, 5, session_id=SESSION_1, number=1, started_at=at(7)
        ),
        course_event(
            "infusion.vitals.out_of_range",
            8,
            6,
            session_id=SESSION_1,
            phase="during",
            systolic=185,
            diastolic=100,
            heart_rate=90,
            spo2=91,
            crossed=["systolic 185 ≥ 180", "SpO2 91% < 92%"],
            measured_at=at(8),
        ),
        course_event(
            "infusion.session.completed",
            9,
            7,
            session_id=SESSION_1,
            number=1,
            kind="induction",
            completed_at=at(9),
            given_mg=84.0,
            pain_before=8,
            pain_after=4,
            phq9_total=9,
            phq9_item9=1,
            response=RESPONDED,
            completed_sessions=1,
            maintenance_due_at=None,
        ),
        course_event(
            "infusion.session.started", 10, 8, session_id=SESSION_2, number=2, started_at=at(10)
        ),
        course_event(
            "infusion.session.abandoned",
            11,
            9,
            session_id=SESSION_2,
            number=2,
            previous_status="in-progress",
            ended_at=at(11),
        ),
        psychology_received(),
        referral_event(
            "referral.accepted",
            13,
            2,
            PSYCHOLOGY_REFERRAL,
            priority="urgent",
            conditions=["depression"],
            accepted_at=at(13),
        ),
        therapy_event(
            "therapy.episode.opened",
            14,
            1,
            referral_id=PSYCHOLOGY_REFERRAL,
            priority="urgent",
            referred_at=at(12),
            opened_at=at(14),
        ),
        therapy_event("therapy.episode.assigned", 15, 2, clinician_id="psy-1", assigned_at=at(15)),
        appointment("appointment.booked", ATTENDED, 16, 3),
        appointment(
            "appointment.attended", ATTENDED, 17, 4, status="fulfilled", attended_treatment=1
        ),
        therapy_event(
            "measure.recorded",
            18,
            5,
            appointment_id=ATTENDED,
            instrument="PHQ-9",
            total=11,
            band="moderate",
            item9=0,
            recorded_at=at(18),
        ),
        therapy_event(
            "measure.recorded",
            19,
            6,
            appointment_id=ATTENDED,
            instrument="GAD-7",
            total=8,
            band="mild",
            item9=None,
            recorded_at=at(19),
        ),
        appointment("appointment.booked", CANCELLED, 20, 7),
        appointment(
            "appointment.cancelled",
            CANCELLED,
            21,
            8,
            status="cancelled",
            cancelled_by="patient",
            attended_treatment=1,
        ),
        appointment("appointment.booked", MISSED, 22, 9),
        appointment(
            "appointment.missed",
            MISSED,
            23,
            10,
            status="noshow",
            attended_treatment=1,
            dna_count=1,
        ),
    ]


EVENTS = journey()
PATHWAY = project(PATIENT, EVENTS)


# --- reading a bundle ---------------------------------------------------------------------


def validated(bundle: dict[str, Any]) -> Bundle:
    """The bundle and each entry's resource validate; fullUrls are the resources' ids."""
    parsed = Bundle.model_validate(bundle)
    assert bundle["type"] == "collection"
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(urls) == len(set(urls)), "every entry its own fullUrl"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert FHIR_ID.match(resource["id"]), resource["id"]
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
    for reference in references(bundle):
        assert reference in urls, f"{reference} points outside the bundle"
    for moment in datetimes(bundle):
        assert FHIR_DATETIME.match(moment), moment
    return parsed


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


TIME_KEYS = {
    "timestamp",
    "authoredOn",
    "lastModified",
    "start",
    "end",
    "created",
    "authored",
    "performedDateTime",
    "effectiveDateTime",
}


def datetimes(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TIME_KEYS and isinstance(value, str):
                yield value
            else:
                yield from datetimes(value)
    elif isinstance(node, list):
        for value in node:
            yield from datetimes(value)


def of_type(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == resource_type
    ]


def by_url(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}


def identified(resources: list[dict[str, Any]], source: UUID) -> dict[str, Any]:
    (found,) = [
        r
        for r in resources
        if {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{source}"} in r.get("identifier", [])
    ]
    return found


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def export(events: list[Envelope]) -> tuple[Pathway, dict[str, Any]]:
    pathway = project(PATIENT, events)
    bundle = pathway_bundle(pathway, events)
    validated(bundle)
    return pathway, bundle


# --- the whole journey ----------------------------------------------------------------------


def test_the_journey_exports_as_a_valid_collection_stamped_with_the_last_event() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    parsed = validated(bundle)
    assert parsed.type == "collection"
    assert when(bundle["timestamp"]) == PATHWAY.last_event_at == at(23)
    counts = Counter(entry["resource"]["resourceType"] for entry in bundle["entry"])
    assert counts == {
        "Patient": 1,
        "ServiceRequest": 2,
        "Task": 2,
        "EpisodeOfCare": 2,
        "CarePlan": 1,
        "Appointment": 3,
        "Procedure": 2,
        # PHQ-9: referral baseline, assessment, infusion 1, therapy; GAD-7: therapy.
        "QuestionnaireResponse": 5,
        # those five scores, pain NRS three times (before the infusion, since issue 12),
        # pain straight after the infusion, opioid MME once, one out-of-range reading
        "Observation": 11,
        "Flag": len(PATHWAY.alerts),
    }
    assert len(PATHWAY.alerts) >= 2  # the vitals and the PHQ-9 item 9 alerts at least


def test_the_export_is_the_same_whatever_order_the_events_arrive_in() -> None:
    shuffled = [*reversed(EVENTS), EVENTS[3]]  # backwards, with a duplicate
    assert pathway_bundle(project(PATIENT, shuffled), shuffled) == pathway_bundle(PATHWAY, EVENTS)


def test_the_patient_is_an_id_and_nothing_else() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    (patient,) = of_type(bundle, "Patient")
    assert patient == {"resourceType": "Patient", "id": str(PATIENT)}
    subjects = {
        json.dumps(
            r.get("subject")
            or r.get("patient")
            or r.get("for")
            or r.get("participant", [{}])[0].get("actor")
        )
        for r in (entry["resource"] for entry in bundle["entry"])
        if r["resourceType"] != "Patient"
    }
    assert subjects == {json.dumps({"reference": f"urn:uuid:{PATIENT}"})}
    text = json.dumps(bundle)
    for identifying in ('"name"', "birthdate", "nhs", "telecom", "address", "gender"):
        assert identifying not in text.lower()


# --- referrals: ServiceRequest and Task -----------------------------------------------------


@pytest.mark.parametrize(
    ("status_event", "pathway_status", "request_status", "task_status"),
    [
        (None, "received", "active", "received"),
        (
            ("referral.info_requested", {"requested_at": at(2)}),
            "info-requested",
            "on-hold",
            "on-hold",
        ),
        (
            (
                "referral.accepted",
                {"priority": "routine", "conditions": ["crps"], "accepted_at": at(2)},
            ),
            "accepted",
            "active",
            "accepted",
        ),
        (("referral.rejected", {"rejected_at": at(2)}), "rejected", "revoked", "rejected"),
        (
            ("referral.cancelled", {"previous_status": "received", "cancelled_at": at(2)}),
            "cancelled",
            "revoked",
            "cancelled",
        ),
        (
            (
                "referral.closed",
                {"closed_at": at(2), "closed_by": "infusion.course.closed", "outcome": "done"},
            ),
            "closed",
            "completed",
            "completed",
        ),
    ],
    ids=["received", "info-requested", "accepted", "rejected", "cancelled", "closed"],
)
def test_each_referral_status_becomes_its_service_request_and_task_status(
    status_event: tuple[str, dict[str, Any]] | None,
    pathway_status: str,
    request_status: str,
    task_status: str,
) -> None:
    events = [patient_registered(PATIENT), infusion_received()]
    if status_event is not None:
        events.append(referral_event(status_event[0], 2, 2, **status_event[1]))
    pathway, bundle = export(events)
    (stream,) = pathway.streams.referrals
    assert stream.status == pathway_status
    (request,) = of_type(bundle, "ServiceRequest")
    (task,) = of_type(bundle, "Task")
    assert request["status"] == request_status and request_status in REQUEST_STATUSES
    assert task["status"] == task_status and task_status in TASK_STATUSES
    assert task["businessStatus"] == {"text": pathway_status}
    request_url = f"urn:uuid:{request['id']}"
    assert task["focus"] == {"reference": request_url}
    assert task["basedOn"] == [{"reference": request_url}]
    assert (request["intent"], task["intent"]) == ("order", "order")
    assert when(request["authoredOn"]) == stream.received_at == at(1)
    assert request["identifier"] == [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{INFUSION_REFERRAL}"}
    ]


def test_a_service_request_names_its_team_priority_and_reasons() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    requests = of_type(bundle, "ServiceRequest")
    infusion = identified(requests, INFUSION_REFERRAL)
    psychology = identified(requests, PSYCHOLOGY_REFERRAL)
    assert (infusion["priority"], psychology["priority"]) == ("routine", "urgent")
    assert infusion["code"]["text"] == "referral to the infusion clinic"
    assert psychology["code"]["text"] == "referral to the psychology team"
    assert [c["text"] for c in infusion["reasonCode"]] == ["crps", "depression"]


# --- episodes: EpisodeOfCare ----------------------------------------------------------------


def course_history(*extra: Envelope) -> list[Envelope]:
    opened = course_event(
        "infusion.course.opened",
        3,
        1,
        referral_id=INFUSION_REFERRAL,
        priority="routine",
        opened_at=at(3),
    )
    return [patient_registered(PATIENT), infusion_received(), opened, *extra]


def changed(status: str) -> Envelope:
    return course_event(
        "infusion.course.status_changed",
        4,
        2,
        status=status,
        previous_status="planned",
        changed_at=at(4),
    )


def closed(reason: str) -> Envelope:
    return course_event(
        "infusion.course.closed",
        5,
        3,
        referral_id=INFUSION_REFERRAL,
        reason=reason,
        closed_at=at(5),
    )


@pytest.mark.parametrize(
    ("extra", "status", "activity", "ended"),
    [
        ([], "planned", "not-started", None),
        ([changed("active")], "active", "in-progress", None),
        ([changed("onhold")], "onhold", "on-hold", None),
        ([changed("active"), closed("completed")], "finished", "completed", at(5)),
        ([changed("active"), closed("stopped")], "finished", "completed", at(5)),
        ([closed("ineligible")], "cancelled", "cancelled", at(5)),
        ([changed("cancelled")], "cancelled", "cancelled", at(4)),
    ],
    ids=["planned", "active", "onhold", "completed", "stopped", "ineligible", "cancelled"],
)
def test_the_infusion_course_is_an_episode_of_care_in_its_status(
    extra: list[Envelope], status: str, activity: str, ended: datetime | None
) -> None:
    pathway, bundle = export(course_history(*extra))
    assert pathway.streams.infusion_course is not None
    assert pathway.streams.infusion_course.status == status
    (episode,) = of_type(bundle, "EpisodeOfCare")
    assert episode["status"] == status and status in EPISODE_STATUSES
    assert when(episode["period"]["start"]) == at(3)
    assert (when(episode["period"]["end"]) if "end" in episode["period"] else None) == ended
    (request,) = of_type(bundle, "ServiceRequest")
    assert episode["referralRequest"] == [{"reference": f"urn:uuid:{request['id']}"}]
    (plan,) = of_type(bundle, "CarePlan")
    (course_activity,) = [a for a in plan["activity"] if "detail" in a]
    assert course_activity["detail"]["status"] == activity
    assert course_activity["outcomeReference"][0] == {"reference": f"urn:uuid:{episode['id']}"}


def therapy_history(*extra: Envelope) -> list[Envelope]:
    opened = therapy_event(
        "therapy.episode.opened",
        14,
        1,
        referral_id=PSYCHOLOGY_REFERRAL,
        priority="urgent",
        referred_at=at(12),
        opened_at=at(14),
    )
    return [patient_registered(PATIENT), psychology_received(), opened, *extra]


def discharged(reason: str) -> Envelope:
    return therapy_event(
        "therapy.episode.discharged",
        30,
        9,
        referral_id=PSYCHOLOGY_REFERRAL,
        reason=reason,
        discharged_at=at(30),
    )


@pytest.mark.parametrize(
    ("extra", "status", "ended"),
    [
        ([], "waitlist", None),
        ([appointment("appointment.booked", ATTENDED, 16, 3)], "active", None),
        (
            [appointment("appointment.booked", ATTENDED, 16, 3), discharged("completed")],
            "finished",
            at(30),
        ),
        ([discharged("declined")], "cancelled", at(30)),
    ],
    ids=["waitlist", "active", "completed", "declined"],
)
def test_the_therapy_episode_is_an_episode_of_care_in_its_status(
    extra: list[Envelope], status: str, ended: datetime | None
) -> None:
    pathway, bundle = export(therapy_history(*extra))
    assert pathway.streams.therapy_episode is not None
    assert pathway.streams.therapy_episode.status == status
    (episode,) = of_type(bundle, "EpisodeOfCare")
    assert episode["status"] == status and status in EPISODE_STATUSES
    assert when(episode["period"]["start"]) == at(14)
    assert (when(episode["period"]["end"]) if "end" in episode["period"] else None) == ended
    request = identified(of_type(bundle, "ServiceRequest"), PSYCHOLOGY_REFERRAL)
    assert episode["referralRequest"] == [{"reference": f"urn:uuid:{request['id']}"}]


def test_a_stream_status_outside_the_episode_set_is_mapped_into_it() -> None:
    """A later producer's spelling still exports a valid EpisodeOfCare status."""
    pathway = project(PATIENT, course_history())
    course = pathway.streams.infusion_course
    assert course is not None
    for spelled, expected in (("on-hold", "onhold"), ("completed", "finished")):
        odd = msgspec.structs.replace(
            pathway,
            streams=msgspec.structs.replace(
                pathway.streams, infusion_course=msgspec.structs.replace(course, status=spelled)
            ),
        )
        bundle = pathway_bundle(odd, course_history())
        validated(bundle)
        assert [e["status"] for e in of_type(bundle, "EpisodeOfCare")] == [expected]


# --- the care plan --------------------------------------------------------------------------


def test_an_open_pathway_is_an_active_care_plan_naming_its_stage() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    (plan,) = of_type(bundle, "CarePlan")
    assert PATHWAY.stage != "discharged"
    assert (plan["status"], plan["intent"]) == ("active", "plan")
    assert PATHWAY.stage in plan["title"]
    assert "end" not in plan["period"]
    urls = by_url(bundle)
    targets = [
        urls[ref["reference"]]["resourceType"]
        for activity in plan["activity"]
        for ref in [activity.get("reference"), *activity.get("outcomeReference", [])]
        if ref is not None
    ]
    assert Counter(targets) == {
        "ServiceRequest": 2,
        "EpisodeOfCare": 2,
        "Procedure": 2,
        "Appointment": 3,
    }
    for activity in plan["activity"]:  # FHIR cpl-3: a reference or a detail, not both
        assert ("reference" in activity) != ("detail" in activity)


def test_a_discharged_pathway_is_a_completed_care_plan() -> None:
    closing = referral_event(
        "referral.closed",
        5,
        2,
        closed_at=at(5),
        closed_by="infusion.course.closed",
        outcome="completed",
    )
    pathway, bundle = export([patient_registered(PATIENT), infusion_received(), closing])
    assert pathway.stage == "discharged"
    (plan,) = of_type(bundle, "CarePlan")
    assert plan["status"] == "completed"
    assert "discharged" in plan["title"]
    assert when(plan["period"]["end"]) == pathway.stage_since == at(5)
    assert when(plan["period"]["start"]) == T0


# --- appointments and infusions -------------------------------------------------------------


def test_each_appointment_is_exported_at_its_latest_status() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    appointments = of_type(bundle, "Appointment")
    statuses = {
        source: identified(appointments, source)["status"]
        for source in (ATTENDED, CANCELLED, MISSED)
    }
    assert statuses == {ATTENDED: "fulfilled", CANCELLED: "cancelled", MISSED: "noshow"}
    assert set(statuses.values()) <= APPOINTMENT_STATUSES
    cancelled = identified(appointments, CANCELLED)
    assert cancelled["cancelationReason"] == {"text": "by the patient"}
    attended = identified(appointments, ATTENDED)
    assert (when(attended["start"]), when(attended["end"])) == (at(48), at(49))
    assert attended["appointmentType"] == {"text": "cbt"}
    assert attended["participant"] == [
        {"actor": {"reference": f"urn:uuid:{PATIENT}"}, "status": "accepted"}
    ]
    assert "cancelationReason" not in attended


def test_a_corrected_appointment_takes_the_corrected_status() -> None:
    events = [
        *therapy_history(),
        appointment("appointment.booked", MISSED, 16, 3),
        appointment("appointment.missed", MISSED, 17, 4, status="noshow", dna_count=1),
        appointment(
            "appointment.corrected",
            MISSED,
            18,
            5,
            status="fulfilled",
            previous_status="noshow",
            attended_treatment=1,
        ),
    ]
    _, bundle = export(events)
    (corrected,) = of_type(bundle, "Appointment")
    assert corrected["status"] == "fulfilled"


def test_infusions_are_procedures_completed_or_stopped_with_the_dose_given() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    procedures = of_type(bundle, "Procedure")
    first, second = identified(procedures, SESSION_1), identified(procedures, SESSION_2)
    assert (first["status"], second["status"]) == ("completed", "stopped")
    assert {first["status"], second["status"]} <= PROCEDURE_STATUSES
    assert first["code"] == {"text": "intravenous ketamine infusion"}
    assert when(first["performedDateTime"]) == at(9)
    assert {"text": "dose given: 84 mg"} in first["note"]
    assert when(second["performedDateTime"]) == at(11)
    request = identified(of_type(bundle, "ServiceRequest"), INFUSION_REFERRAL)
    assert first["basedOn"] == [{"reference": f"urn:uuid:{request['id']}"}]
    course = PATHWAY.streams.infusion_course
    assert course is not None and course.sessions_completed == 1
    assert sum(p["status"] == "completed" for p in procedures) == course.sessions_completed


# --- scores, questionnaires and vitals ------------------------------------------------------

SERIES_CODES = {
    "phq9": ("PHQ-9 total score", "44261-6"),
    "gad7": ("GAD-7 total score", "70274-6"),
    "pain_nrs": ("Pain severity, 0-10 numeric rating scale", "72514-3"),
    "opioid_mme": ("Opioid use, morphine milligram equivalents per day", None),
}


def value_of(observation: dict[str, Any]) -> float:
    if "valueInteger" in observation:
        return float(observation["valueInteger"])
    return float(observation["valueQuantity"]["value"])


def test_observations_carry_the_pathways_measure_series() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    observations = of_type(bundle, "Observation")
    for name, (text, loinc) in SERIES_CODES.items():
        series = [o for o in observations if o["code"]["text"] == text]
        expected = [(p.at, p.score) for p in PATHWAY.measures[name]]
        assert expected, name
        assert [(when(o["effectiveDateTime"]), value_of(o)) for o in series] == expected
        for observation in series:
            assert observation["status"] == "final"
            codings = observation["code"].get("coding", [])
            assert [(c["system"], c["code"]) for c in codings] == (
                [(LOINC, loinc)] if loinc else []
            )
    (mme,) = [o for o in observations if o["code"]["text"] == SERIES_CODES["opioid_mme"][0]]
    assert mme["valueQuantity"] == {
        "value": 60.5,
        "unit": "mg/day",
        "system": "http://unitsofmeasure.org",
        "code": "mg/d",
    }


def test_each_phq9_and_gad7_is_a_questionnaire_response_with_item9_when_known() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    responses = of_type(bundle, "QuestionnaireResponse")
    answers = [
        (
            when(r["authored"]),
            {item["linkId"]: item["answer"][0]["valueInteger"] for item in r["item"]},
        )
        for r in sorted(responses, key=lambda r: r["authored"])
    ]
    assert answers == [
        (at(1), {"total": 12, "item9": 0}),  # referral baseline
        (at(4), {"total": 14, "item9": 0}),  # infusion assessment
        (at(9), {"total": 9, "item9": 1}),  # after infusion 1
        (at(18), {"total": 11, "item9": 0}),  # therapy PHQ-9
        (at(19), {"total": 8}),  # GAD-7 has no item 9
    ]
    assert all(r["status"] == "completed" for r in responses)
    # Each score's Observation says which response it came from, with the same total.
    urls = by_url(bundle)
    for observation in of_type(bundle, "Observation"):
        for source in observation.get("derivedFrom", []):
            response = urls[source["reference"]]
            assert response["resourceType"] == "QuestionnaireResponse"
            total = next(i for i in response["item"] if i["linkId"] == "total")
            assert total["answer"][0]["valueInteger"] == observation["valueInteger"]
            assert response["authored"] == observation["effectiveDateTime"]
    derived = sum(bool(o.get("derivedFrom")) for o in of_type(bundle, "Observation"))
    assert derived == len(responses)


def test_vitals_out_of_range_are_an_abnormal_observation_with_coded_components() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    (vitals,) = [
        o
        for o in of_type(bundle, "Observation")
        if o.get("category", [{}])[0].get("coding", [{}])[0].get("code") == "vital-signs"
    ]
    assert when(vitals["effectiveDateTime"]) == at(8)
    assert vitals["interpretation"][0]["coding"][0]["code"] == "A"
    components = {
        c["code"]["coding"][0]["code"]: (
            c["valueQuantity"]["value"],
            c["valueQuantity"]["code"],
            "interpretation" in c,
        )
        for c in vitals["component"]
    }
    assert components == {
        "8480-6": (185, "mm[Hg]", True),  # systolic, crossed
        "8462-4": (100, "mm[Hg]", False),
        "8867-4": (90, "/min", False),
        "59408-5": (91, "%", True),  # SpO2, crossed
    }
    procedure = identified(of_type(bundle, "Procedure"), SESSION_1)
    assert vitals["partOf"] == [{"reference": f"urn:uuid:{procedure['id']}"}]


def test_alerts_are_flags_active_until_resolved() -> None:
    bundle = pathway_bundle(PATHWAY, EVENTS)
    flags = of_type(bundle, "Flag")
    assert sorted(f["code"]["text"] for f in flags) == sorted(a.reason for a in PATHWAY.alerts)
    expected = {"open": "active", "acknowledged": "active", "resolved": "inactive"}
    assert sorted(f["status"] for f in flags) == sorted(expected[a.status] for a in PATHWAY.alerts)
    (alert,) = [a for a in PATHWAY.alerts if a.kind == "phq9-item9"]
    resolved = event(
        "pathway.alert.resolved",
        ("alert", PATIENT),
        30,
        1,
        alert_id=alert.id,
        kind=alert.kind,
        by_user="dr-a",
        by_role="mdt",
        handled_at=at(30),
    )
    pathway, after = export([*EVENTS, resolved])
    (flag,) = [f for f in of_type(after, "Flag") if f["code"]["text"] == alert.reason]
    assert flag["status"] == "inactive"
    assert [a.status for a in pathway.alerts if a.id == alert.id] == ["resolved"]


# --- through the embedded app ----------------------------------------------------------------

PHQ9_LATER = [1, 1, 1, 1, 1, 1, 1, 0, 0]  # 7
PHQ9_THERAPY = [2, 2, 2, 2, 2, 1, 1, 1, 0]  # 13
GAD7 = [1, 1, 1, 1, 1, 1, 1]  # 7
VITALS_OK = {"systolic": 130, "diastolic": 80, "heart_rate": 72, "spo2": 97}
VITALS_HIGH = {"systolic": 185, "diastolic": 100, "heart_rate": 90, "spo2": 91}


def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def call(
    embedded: Embedded,
    method: str,
    path: str,
    role: Role,
    body: Any = None,
    user: str = "unit-user",
    **params: Any,
) -> Any:
    response = embedded.client.request(
        method, path, json=body, params=params or None, headers=embedded.headers(role, user)
    )
    assert response.status_code in (200, 201), f"{method} {path}: {response.text}"
    return response.json()


def refer(embedded: Embedded, patient_id: str, target: str) -> str:
    body = referral_body(patient_id, target=target)
    if target == "psychology":
        body.pop("baseline")
        body["conditions"] = ["depression"]
    referral = call(embedded, "POST", "/api/referrals", Role.referrer, body)
    triager = Role.infusion_clinician if target == "ketamine-infusion" else Role.psychologist
    call(
        embedded, "POST", f"/api/referrals/{referral['id']}/triage", triager, {"decision": "accept"}
    )
    return str(referral["id"])


def infusions(embedded: Embedded, patient_id: str) -> None:
    """Assessed, planned, one infusion with vitals out of range, and one abandoned."""
    clinician = Role.infusion_clinician
    courses = eventually(
        lambda: call(embedded, "GET", "/api/infusion-courses", clinician, patient_id=patient_id)[
            "items"
        ],
        "the course to open",
    )
    course = f"/api/infusion-courses/{courses[0]['id']}"
    assessment = assessment_body()
    call(embedded, "POST", f"{course}/assessments", clinician, assessment)
    plan = plan_body(induction_count=3)
    call(embedded, "POST", f"{course}/plan", clinician, plan)
    for days, finish in ((0, True), (3, False)):
        if days:  # the series waits for the reassessment after the first infusion
            call(embedded, "POST", f"{course}/assessments", clinician, assessment)
        start = clinic_clock().now() + timedelta(days=days, minutes=5)
        slot = {"start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat()}
        session = call(embedded, "POST", f"{course}/sessions", clinician, slot)
        path = f"/api/infusion-sessions/{session['id']}"
        # An infusion starts on its booked day (issue 12): the clinic clock moves there.
        clinic_clock().set(max(start, clinic_clock().now()))
        call(embedded, "POST", f"{path}/check-in", clinician)
        call(embedded, "POST", f"{path}/vitals", clinician, {"phase": "before", **VITALS_OK})
        call(embedded, "POST", f"{path}/scores-before", clinician, {"pain_nrs": 8, "mood": 3})
        call(embedded, "POST", f"{path}/start", clinician)
        if not finish:
            call(embedded, "POST", f"{path}/abandon", clinician, {"reason": "felt unwell"})
            continue
        call(embedded, "POST", f"{path}/vitals", clinician, {"phase": "during", **VITALS_HIGH})
        call(embedded, "POST", f"{path}/dose", clinician, {"given_mg": 84})
        done = {"pain_nrs": 4, "mood": 6, "phq9_items": PHQ9_LATER}
        call(embedded, "POST", f"{path}/complete", clinician, done)
    clinic_clock().reset()


def therapy(embedded: Embedded, patient_id: str) -> None:
    """Assigned, one CBT appointment attended with a PHQ-9 and a GAD-7 recorded."""
    psy = Role.psychologist
    episodes = eventually(
        lambda: call(embedded, "GET", "/api/therapy-episodes", psy, patient_id=patient_id)["items"],
        "the episode to open",
    )
    episode = episodes[0]["id"]
    clinician = f"psy-{uuid4().hex[:8]}"
    call(
        embedded,
        "POST",
        "/api/clinicians",
        psy,
        {"id": clinician, "display_name": "Dr P"},
        clinician,
    )
    hours = [{"weekday": d, "start": "09:00:00", "end": "17:00:00"} for d in range(5)]
    call(
        embedded,
        "PUT",
        f"/api/clinicians/{clinician}/working-hours",
        psy,
        {"hours": hours},
        clinician,
    )
    call(
        embedded,
        "POST",
        f"/api/therapy-episodes/{episode}/assign",
        psy,
        {"clinician_id": clinician},
        clinician,
    )
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    slots = call(
        embedded,
        "GET",
        f"/api/clinicians/{clinician}/slots",
        psy,
        user=clinician,
        from_day=tomorrow,
        days=7,
    )["slots"]
    booked = call(
        embedded,
        "POST",
        f"/api/therapy-episodes/{episode}/appointments",
        psy,
        {"kind": "cbt", "start": slots[0], "mode": "video"},
        clinician,
    )
    path = f"/api/appointments/{booked['id']}"
    # Attended on its day (issue 12): the clinic clock moves there.
    clinic_clock().set(datetime.fromisoformat(slots[0]))
    try:
        call(embedded, "POST", f"{path}/attend", psy, None, clinician)
    finally:
        clinic_clock().reset()
    call(
        embedded,
        "POST",
        f"{path}/measures",
        psy,
        {"instrument": "PHQ-9", "items": PHQ9_THERAPY},
        clinician,
    )
    call(
        embedded, "POST", f"{path}/measures", psy, {"instrument": "GAD-7", "items": GAD7}, clinician
    )


def fhir(embedded: Embedded, patient_id: str, role: Role = Role.mdt) -> Any:
    return embedded.client.get(
        f"/api/pathways/{patient_id}/fhir", headers=embedded.headers(role, "dr-export")
    )


def counts(response: Any) -> Counter[str]:
    if response.status_code != 200:
        return Counter()
    return Counter(entry["resource"]["resourceType"] for entry in response.json()["entry"])


EXPECTED_EMBEDDED = {
    "Patient": 1,
    "ServiceRequest": 2,
    "Task": 2,
    "EpisodeOfCare": 2,
    "CarePlan": 1,
    "Appointment": 1,
    "Procedure": 2,
    # PHQ-9: referral baseline, assessment, reassessment after infusion 1 (issue 12: the
    # pain series waits for it), infusion 1, therapy; GAD-7: therapy.
    "QuestionnaireResponse": 6,
    # those six, pain NRS (baseline, assessment, reassessment, before infusion 1), pain
    # straight after infusion 1 (its own series), MME (assessment, reassessment), vitals
    "Observation": 14,
}


@pytest.fixture(scope="module")
def treated(embedded: Embedded) -> str:
    """A patient referred to both teams, with infusions and an attended CBT session."""
    patient_id = register(embedded, nhs_number=VALID_NHS[2])
    refer(embedded, patient_id, "ketamine-infusion")
    refer(embedded, patient_id, "psychology")
    infusions(embedded, patient_id)
    therapy(embedded, patient_id)

    def settled() -> bool:
        found = counts(fhir(embedded, patient_id))
        flags = found.pop("Flag", 0)
        return found == EXPECTED_EMBEDDED and flags >= 1

    eventually(settled, "every event to reach the coordinator")
    return patient_id


def test_the_mdt_exports_a_treated_patients_pathway_as_fhir(
    embedded: Embedded, treated: str
) -> None:
    response = fhir(embedded, treated)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    validated(bundle)
    pathway = call(
        embedded, "GET", f"/api/pathways/{treated}", Role.mdt
    )  # admins see no scores (issue 12)
    flags = len(pathway["alerts"])
    assert counts(response) == {**EXPECTED_EMBEDDED, "Flag": flags}
    assert when(bundle["timestamp"]) == when(pathway["last_event_at"])
    # Statuses as the pathway has them.
    streams = pathway["streams"]
    assert sorted(r["status"] for r in streams["referrals"]) == ["accepted", "accepted"]
    assert [r["status"] for r in of_type(bundle, "ServiceRequest")] == ["active", "active"]
    assert [t["status"] for t in of_type(bundle, "Task")] == ["accepted", "accepted"]
    course, episode = of_type(bundle, "EpisodeOfCare")
    assert course["status"] == streams["infusion_course"]["status"] == "active"
    assert episode["status"] == streams["therapy_episode"]["status"] == "active"
    (plan,) = of_type(bundle, "CarePlan")
    assert plan["status"] == "active" and pathway["stage"] in plan["title"]
    assert [a["status"] for a in of_type(bundle, "Appointment")] == ["fulfilled"]
    assert sorted(p["status"] for p in of_type(bundle, "Procedure")) == ["completed", "stopped"]
    totals = sorted(
        next(i for i in r["item"] if i["linkId"] == "total")["answer"][0]["valueInteger"]
        for r in of_type(bundle, "QuestionnaireResponse")
    )
    measures = pathway["measures"]
    questionnaires = measures["phq9"] + measures["phq9_after_infusion"] + measures["gad7"]
    assert totals == sorted(int(p["score"]) for p in questionnaires)
    assert 13 in totals and 7 in totals  # the therapy PHQ-9 and GAD-7


def test_the_export_names_nobody(embedded: Embedded, treated: str) -> None:
    text = fhir(embedded, treated).text
    for identifying in ("Ada", "Example", "1971-02-03", VALID_NHS[2], "birthDate", '"name"'):
        assert identifying not in text
    (patient,) = of_type(json.loads(text), "Patient")
    assert patient == {"resourceType": "Patient", "id": treated}


def test_the_export_is_audited_as_a_read_of_a_bundle(embedded: Embedded, treated: str) -> None:
    where = (AuditRecord.entity_type == "Bundle", AuditRecord.patient_id == UUID(treated))
    before = embedded.count("coordinator", AuditRecord, *where)
    assert fhir(embedded, treated, Role.infusion_clinician).status_code == 200
    assert embedded.count("coordinator", AuditRecord, *where, AuditRecord.action == "R") == (
        before + 1
    )


def test_a_referrer_may_not_export(embedded: Embedded, treated: str) -> None:
    assert_problem(fhir(embedded, treated, Role.referrer), 403)


def test_a_clinician_outside_the_pathways_teams_may_not_export(embedded: Embedded) -> None:
    patient_id = register(embedded)
    refer(embedded, patient_id, "ketamine-infusion")
    eventually(lambda: fhir(embedded, patient_id).status_code == 200, "the pathway")
    assert_problem(fhir(embedded, patient_id, Role.psychologist), 403)
    denied = embedded.count(
        "coordinator",
        AuditRecord,
        AuditRecord.patient_id == UUID(patient_id),
        AuditRecord.outcome == "4",
    )
    assert denied == 1


def test_an_unknown_patient_is_a_404(embedded: Embedded) -> None:
    assert_problem(fhir(embedded, str(uuid4())), 404)
