"""A patient's pathway as a FHIR R4 Bundle (CLINICAL.md, "Standards to map to").

Pure: the pathway and the patient's stored events in, a ``collection`` Bundle (as JSON-
ready dicts) out. Every entry's fullUrl is ``urn:uuid:<id>`` and every reference points
at an entry of the bundle, so the bundle stands alone. Resource ids are uuid5 names of
what they describe (stable from one export to the next); the carepath ids they come
from are kept as identifiers.

The coordinator holds no demographics, so the Patient is an id and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import msgspec

from services.coordinator.domain import (
    Alert,
    InfusionCourseStream,
    MeasurePoint,
    Pathway,
    ReferralStream,
    TherapyEpisodeStream,
)
from services.coordinator.projection import TEAM_OF_TARGET, ReferralEvent, known_event, ordered
from shared.events import Envelope
from shared.events.catalogue import (
    AppointmentAttended,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentMissed,
    AppointmentRescheduled,
    AppointmentStatusChanged,
    Event,
    InfusionAssessmentRecorded,
    InfusionCourseClosed,
    InfusionCourseOpened,
    InfusionCourseStatusChanged,
    InfusionSessionAbandoned,
    InfusionSessionCompleted,
    InfusionVitalsOutOfRange,
    MeasureRecorded,
    ReferralReceived,
    TherapyEpisodeDischarged,
    TherapyEpisodeOpened,
)
from shared.tables import as_utc

Resource = dict[str, Any]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
URI_IDENTIFIER = "urn:ietf:rfc:3986"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# --- status maps (FHIR R4 value sets, CLINICAL.md "Standards to map to") -----------------

# ServiceRequest.status: draft | active | on-hold | revoked | completed | entered-in-error
# | unknown.
SERVICE_REQUEST_STATUS = {
    "received": "active",
    "info-requested": "on-hold",
    "accepted": "active",
    "rejected": "revoked",
    "cancelled": "revoked",
    "closed": "completed",
}
# Task.status, for the referral's workflow: the business status the ServiceRequest's
# coarser set cannot say (a question to the referrer, a refusal, a cancellation).
TASK_STATUS = {
    "received": "received",
    "info-requested": "on-hold",
    "accepted": "accepted",
    "rejected": "rejected",
    "cancelled": "cancelled",
    "closed": "completed",
}
# EpisodeOfCare.status: planned | waitlist | active | onhold | finished | cancelled |
# entered-in-error. The streams already use these codes; the aliases catch spellings a
# later producer might use.
EPISODE_STATUSES = (
    "planned",
    "waitlist",
    "active",
    "onhold",
    "finished",
    "cancelled",
    "entered-in-error",
)
EPISODE_STATUS_ALIASES = {
    "on-hold": "onhold",
    "completed": "finished",
    "stopped": "finished",
    "closed": "finished",
    "declined": "cancelled",
}
# CarePlan.activity.detail.status for an episode in each EpisodeOfCare status.
ACTIVITY_STATUS = {
    "planned": "not-started",
    "waitlist": "not-started",
    "active": "in-progress",
    "onhold": "on-hold",
    "finished": "completed",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
}
# Appointment.status: the therapy service already speaks FHIR's codes; the event type
# says it when a payload does not.
APPOINTMENT_STATUSES = (
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
)
AppointmentEvent = AppointmentBooked | AppointmentRescheduled | AppointmentStatusChanged
APPOINTMENT_STATUS_OF_EVENT: dict[type[AppointmentEvent], str] = {
    AppointmentBooked: "booked",
    AppointmentRescheduled: "booked",
    AppointmentCheckedIn: "arrived",
    AppointmentAttended: "fulfilled",
    AppointmentMissed: "noshow",
    AppointmentCancelled: "cancelled",
}
# Flag.status: active | inactive | entered-in-error.
FLAG_STATUS = {"open": "active", "acknowledged": "active", "resolved": "inactive"}
REQUEST_PRIORITIES = ("routine", "urgent", "asap", "stat")
# An episode in these statuses has ended, so its period has an end.
ENDED = ("finished", "cancelled")

# --- what each measure series is ----------------------------------------------------------


class _Measure(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    loinc: tuple[str, str] | None = None  # (code, display), only where certain
    unit: tuple[str, str] | None = None  # (UCUM code, human unit): a quantity, not a score
    category: str | None = "survey"
    instrument: str | None = None  # a questionnaire: one QuestionnaireResponse a score


MEASURES: dict[str, _Measure] = {
    "phq9": _Measure(
        text="PHQ-9 total score",
        loinc=("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
        instrument="PHQ-9",
    ),
    "gad7": _Measure(
        text="GAD-7 total score",
        loinc=("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"),
        instrument="GAD-7",
    ),
    "pain_nrs": _Measure(
        text="Pain severity, 0-10 numeric rating scale",
        loinc=("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
    ),
    "pain_after_infusion": _Measure(
        text="Pain severity, 0-10 numeric rating scale, straight after an infusion "
        "(not a durable measure of response)",
        loinc=("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
    ),
    "phq9_after_infusion": _Measure(
        text="PHQ-9 total score straight after an infusion (asks about two weeks: never "
        "used for caseness, reliable change or response)",
        loinc=("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
        instrument="PHQ-9",
    ),
    "peg": _Measure(text="PEG (pain, enjoyment, general activity) score"),
    "opioid_mme": _Measure(
        text="Opioid use, morphine milligram equivalents per day",
        unit=("mg/d", "mg/day"),
        category=None,
    ),
}
VITALS: tuple[tuple[str, str, str, str, str], ...] = (
    # (LOINC, display, UCUM code, unit, how `crossed` names it), in the order of
    # _readings: systolic, diastolic, heart rate, SpO2
    ("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg", "systolic"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg", "diastolic"),
    ("8867-4", "Heart rate", "/min", "beats/minute", "heart rate"),
    ("59408-5", "Oxygen saturation by pulse oximetry", "%", "%", "spo2"),
)
INFUSION = "intravenous ketamine infusion"


def pathway_bundle(pathway: Pathway, events: Iterable[Envelope]) -> Resource:
    """The pathway as a FHIR R4 ``collection`` Bundle, stamped with its last event's time."""
    return _Export(pathway, ordered(events)).bundle()


class _Export:
    def __init__(self, pathway: Pathway, history: Sequence[Envelope]) -> None:
        self.pathway = pathway
        # What each event the catalogue knows says, with when it happened and its id.
        self.events: list[tuple[datetime, UUID, Event]] = []
        for envelope in history:
            event = known_event(envelope)
            if event is not None:
                self.events.append((envelope.occurred_at, envelope.event_id, event))
        self.patient = _reference(str(pathway.patient_id))
        self.entries: list[Resource] = []
        # referral id → its ServiceRequest's reference, for the resources that follow it
        self.requests: dict[str, Resource] = {}

    def id_of(self, kind: str, source: str) -> str:
        return str(uuid5(self.pathway.patient_id, f"{kind}/{source}"))

    def add(self, resource: Resource) -> Resource:
        self.entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
        return _reference(resource["id"])

    def bundle(self) -> Resource:
        self.add({"resourceType": "Patient", "id": str(self.pathway.patient_id)})
        streams = self.pathway.streams
        for referral in streams.referrals:
            self.referral(referral)
        activities: list[Resource] = [{"reference": self.requests[r.id]} for r in streams.referrals]
        sessions = self.infusion_sessions()
        if streams.infusion_course is not None:
            activities.append(self.course(streams.infusion_course, sessions))
        appointments = self.appointments()
        if streams.therapy_episode is not None:
            activities.append(self.therapy(streams.therapy_episode, appointments))
        self.care_plan(activities)
        self.measures()
        self.vitals(sessions)
        for alert in self.pathway.alerts:
            self.flag(alert)
        last = self.pathway.last_event_at
        return {
            "resourceType": "Bundle",
            "id": self.id_of("Bundle", f"{last.isoformat()}/{self.pathway.event_count}"),
            "type": "collection",
            "timestamp": _instant(last),
            "entry": self.entries,
        }

    # --- referrals --------------------------------------------------------------------

    def referral(self, referral: ReferralStream) -> None:
        team = TEAM_OF_TARGET.get(referral.target, referral.target)
        received = next(
            (
                event
                for _, _, event in self.events
                if isinstance(event, ReferralReceived) and str(event.referral_id) == referral.id
            ),
            None,
        )
        request: Resource = {
            "resourceType": "ServiceRequest",
            "id": self.id_of("ServiceRequest", referral.id),
            "identifier": [_uuid_identifier(referral.id)],
            "status": SERVICE_REQUEST_STATUS.get(referral.status, "unknown"),
            "intent": "order",
            "category": [{"text": referral.target}],
            "code": {"text": f"referral to the {team}"},
            "performerType": {"text": team},
            "subject": self.patient,
            "authoredOn": _instant(referral.received_at),
            "note": [{"text": f"referral status: {referral.status}"}],
        }
        if referral.priority in REQUEST_PRIORITIES:
            request["priority"] = referral.priority
        if received is not None and received.conditions:
            request["reasonCode"] = [{"text": c} for c in received.conditions]
        reference = self.add(request)
        self.requests[referral.id] = reference
        task: Resource = {
            "resourceType": "Task",
            "id": self.id_of("Task", referral.id),
            "identifier": [_uuid_identifier(referral.id)],
            "status": TASK_STATUS.get(referral.status, "received"),
            "businessStatus": {"text": referral.status},
            "intent": "order",
            "code": {"text": "triage and treat the referral"},
            "description": f"the {team}'s referral workflow",
            "basedOn": [reference],
            "focus": reference,
            "for": self.patient,
            "authoredOn": _instant(referral.received_at),
            "performerType": [{"text": team}],
        }
        changed = self.last_change(referral.id)
        if changed is not None:
            task["lastModified"] = _instant(changed)
        if referral.priority in REQUEST_PRIORITIES:
            task["priority"] = referral.priority
        self.add(task)

    def last_change(self, referral_id: str) -> datetime | None:
        times = [
            at
            for at, _, event in self.events
            if isinstance(event, ReferralEvent) and str(event.referral_id) == referral_id
        ]
        return times[-1] if times else None

    def request_for(self, referral_id: str | None, target: str) -> Resource | None:
        """The ServiceRequest an episode answers: its own referral, else its team's."""
        if referral_id is not None and referral_id in self.requests:
            return self.requests[referral_id]
        for referral in self.pathway.streams.referrals:
            if referral.target == target:
                return self.requests[referral.id]
        return None

    # --- the infusion course ------------------------------------------------------------

    def infusion_sessions(self) -> dict[str, Resource]:
        """Completed sessions as Procedures (completed), abandoned ones stopped."""
        found: dict[str, Resource] = {}
        course = self.pathway.streams.infusion_course
        referral = self.referral_of(course.id) if course else None
        based_on = self.request_for(referral, "ketamine-infusion")
        for _, _, event in self.events:
            if not isinstance(event, InfusionSessionCompleted | InfusionSessionAbandoned):
                continue
            session_id = str(event.session_id)
            procedure: Resource = {
                "resourceType": "Procedure",
                "id": self.id_of("Procedure", session_id),
                "identifier": [_uuid_identifier(session_id)],
                "subject": self.patient,
                "code": {"text": INFUSION},
                "usedCode": [{"text": "ketamine"}],
            }
            if based_on is not None:
                procedure["basedOn"] = [based_on]
            if isinstance(event, InfusionSessionCompleted):
                procedure["status"] = "completed"
                procedure["performedDateTime"] = _instant(event.completed_at)
                notes = [f"{event.kind} infusion {event.number}"]
                if event.given_mg is not None:
                    notes.append(f"dose given: {_number(event.given_mg)} mg")
                procedure["note"] = [{"text": text} for text in notes]
                procedure["outcome"] = {
                    "text": "met a response threshold"
                    if event.response.responded
                    else "did not meet a response threshold"
                }
            else:
                procedure["status"] = "stopped"
                procedure["statusReason"] = {"text": "abandoned"}
                procedure["performedDateTime"] = _instant(event.ended_at)
                procedure["note"] = [{"text": f"infusion {event.number}, abandoned"}]
            found[session_id] = procedure
        return {key: self.add(procedure) for key, procedure in found.items()}

    def referral_of(self, stream_id: str) -> str | None:
        """The referral a course or an episode answers, as its opening or closing names it."""
        for _, _, event in self.events:
            match event:
                case (
                    InfusionCourseOpened(course_id=opened, referral_id=referral)
                    | InfusionCourseClosed(course_id=opened, referral_id=referral)
                    | TherapyEpisodeOpened(episode_id=opened, referral_id=referral)
                    | TherapyEpisodeDischarged(episode_id=opened, referral_id=referral)
                ) if str(opened) == stream_id:
                    return str(referral)
        return None

    def course(self, course: InfusionCourseStream, sessions: dict[str, Resource]) -> Resource:
        status = _episode_status(course.status)
        end = self.ended_at(course.id) if status in ENDED else None
        episode = self.episode_of_care(
            course.id,
            status,
            "ketamine infusion course",
            course.opened_at,
            end,
            self.request_for(self.referral_of(course.id), "ketamine-infusion"),
        )
        return _activity(
            episode,
            status,
            "ketamine infusion course",
            f"{course.sessions_completed} infusion(s) completed",
            list(sessions.values()),
        )

    # --- the therapy episode -------------------------------------------------------------

    def therapy(self, therapy: TherapyEpisodeStream, appointments: list[Resource]) -> Resource:
        status = _episode_status(therapy.status)
        start = next(
            (
                event.opened_at
                for _, _, event in self.events
                if isinstance(event, TherapyEpisodeOpened) and str(event.episode_id) == therapy.id
            ),
            therapy.referred_at,
        )
        end = self.ended_at(therapy.id) if status in ENDED else None
        episode = self.episode_of_care(
            therapy.id,
            status,
            "psychological therapy episode",
            start,
            end,
            self.request_for(self.referral_of(therapy.id), "psychology"),
        )
        description = f"{therapy.attended_treatment} treatment appointment(s) attended"
        if therapy.discharge_reason:
            description += f"; discharged: {therapy.discharge_reason}"
        return _activity(
            episode, status, "psychological therapy episode", description, appointments
        )

    def appointments(self) -> list[Resource]:
        """Each therapy appointment at its latest status."""
        found: dict[str, Resource] = {}
        episode = self.pathway.streams.therapy_episode
        based_on = self.request_for(self.referral_of(episode.id), "psychology") if episode else None
        for _, _, event in self.events:
            if not isinstance(event, AppointmentEvent):
                continue
            key = str(event.appointment_id)
            appointment = found.setdefault(
                key,
                {
                    "resourceType": "Appointment",
                    "id": self.id_of("Appointment", key),
                    "identifier": [_uuid_identifier(key)],
                    "serviceType": [{"text": "psychological therapy"}],
                    "participant": [{"actor": self.patient, "status": "accepted"}],
                },
            )
            if based_on is not None:
                appointment["basedOn"] = [based_on]
            status = event.status if isinstance(event, AppointmentStatusChanged) else None
            if status not in APPOINTMENT_STATUSES:
                status = APPOINTMENT_STATUS_OF_EVENT.get(type(event), appointment.get("status"))
            appointment["status"] = status or "booked"
            if not isinstance(event, AppointmentRescheduled):  # a new time, the same kind
                appointment["appointmentType"] = {"text": event.kind}
            appointment["start"] = _instant(event.start)
            if not isinstance(event, AppointmentStatusChanged):
                appointment["end"] = _instant(event.end)
            if isinstance(event, AppointmentBooked):
                appointment["description"] = f"{event.kind} appointment, {event.mode}"
            if isinstance(event, AppointmentCancelled) and event.cancelled_by:
                appointment["cancelationReason"] = {"text": f"by the {event.cancelled_by}"}
            elif appointment["status"] != "cancelled":
                appointment.pop("cancelationReason", None)
        references = []
        for appointment in found.values():
            if "end" not in appointment:  # FHIR app-2: a start with no end says neither
                appointment.pop("start", None)
            references.append(self.add(appointment))
        return references

    # --- shared by both episodes ---------------------------------------------------------

    def episode_of_care(
        self,
        source: str,
        status: str,
        text: str,
        start: datetime,
        end: datetime | None,
        request: Resource | None,
    ) -> Resource:
        period = {"start": _instant(start)}
        if end is not None:
            period["end"] = _instant(end)
        resource: Resource = {
            "resourceType": "EpisodeOfCare",
            "id": self.id_of("EpisodeOfCare", source),
            "identifier": [_uuid_identifier(source)],
            "status": status,
            "type": [{"text": text}],
            "patient": self.patient,
            "period": period,
        }
        if request is not None:
            resource["referralRequest"] = [request]
        return self.add(resource)

    def ended_at(self, stream_id: str) -> datetime | None:
        """When a course or an episode ended: its last closing, discharge, or change of
        status to finished or cancelled."""
        end = None
        for _, _, event in self.events:
            match event:
                case (
                    InfusionCourseClosed(course_id=ended, closed_at=at)
                    | InfusionCourseStatusChanged(
                        course_id=ended, changed_at=at, status="finished" | "cancelled"
                    )
                    | TherapyEpisodeDischarged(episode_id=ended, discharged_at=at)
                ) if str(ended) == stream_id:
                    end = at
        return end

    # --- the care plan -------------------------------------------------------------------

    def care_plan(self, activities: list[Resource]) -> None:
        pathway = self.pathway
        discharged = pathway.stage == "discharged"
        started = pathway.timeline[0].occurred_at if pathway.timeline else pathway.stage_since
        period = {"start": _instant(started)}
        if discharged:
            period["end"] = _instant(pathway.stage_since)
        plan: Resource = {
            "resourceType": "CarePlan",
            "id": self.id_of("CarePlan", "pathway"),
            "status": "completed" if discharged else "active",
            "intent": "plan",
            "title": f"Pain and mood pathway: {pathway.stage}",
            "description": (
                f"stage {pathway.stage} since {_instant(pathway.stage_since)}; "
                f"{len(pathway.streams.referrals)} referral(s), "
                f"{len(pathway.streams.mdt_reviews)} MDT review(s)"
            ),
            "subject": self.patient,
            "period": period,
            "created": _instant(started),
        }
        if pathway.next_actions:
            plan["note"] = [
                {"text": f"next: {a.action} ({a.owner_role}, due {_instant(a.due)})"}
                for a in pathway.next_actions
            ]
        if activities:
            plan["activity"] = activities
        self.add(plan)

    # --- scores, questionnaires and vitals ----------------------------------------------

    def measures(self) -> None:
        item9 = self.item9_answers()
        for name, points in self.pathway.measures.items():
            measure = MEASURES.get(name) or _Measure(text=name, category=None)
            for index, point in enumerate(points):
                source = f"{name}/{index}/{point.at.isoformat()}"
                derived: Resource | None = None
                if measure.instrument is not None:
                    derived = self.questionnaire(
                        measure.instrument, source, point, item9.get((name, point.at))
                    )
                self.observation(measure, source, point, derived)

    def item9_answers(self) -> dict[tuple[str, datetime], int]:
        """PHQ-9 item 9 as each event gave it, by the time of the score it came with."""
        answers: dict[tuple[str, datetime], int] = {}
        for at, _, event in self.events:
            answer, series = None, "phq9"
            if isinstance(event, ReferralReceived) and event.baseline is not None:
                answer = event.baseline.phq9_item9
            elif isinstance(event, InfusionAssessmentRecorded):
                answer = event.phq9_item9
            elif isinstance(event, InfusionSessionCompleted):
                answer, series = event.phq9_item9, "phq9_after_infusion"
            elif isinstance(event, MeasureRecorded) and event.instrument == "PHQ-9":
                answer = event.item9
            if answer is not None:
                answers[(series, at)] = answer
        return answers

    def questionnaire(
        self, instrument: str, source: str, point: MeasurePoint, item9: int | None
    ) -> Resource:
        items: list[Resource] = [
            {
                "linkId": "total",
                "text": f"{instrument} total score",
                "answer": [_answer(point.score)],
            }
        ]
        if item9 is not None:
            items.append(
                {
                    "linkId": "item9",
                    "text": "PHQ-9 item 9: thoughts of being better off dead or of self-harm",
                    "answer": [{"valueInteger": item9}],
                }
            )
        return self.add(
            {
                "resourceType": "QuestionnaireResponse",
                "id": self.id_of("QuestionnaireResponse", source),
                "status": "completed",
                "subject": self.patient,
                "authored": _instant(point.at),
                "item": items,
            }
        )

    def observation(
        self, measure: _Measure, source: str, point: MeasurePoint, derived: Resource | None
    ) -> None:
        code: Resource = {"text": measure.text}
        if measure.loinc is not None:
            code["coding"] = [
                {"system": LOINC, "code": measure.loinc[0], "display": measure.loinc[1]}
            ]
        resource: Resource = {
            "resourceType": "Observation",
            "id": self.id_of("Observation", source),
            "status": "final",
            "code": code,
            "subject": self.patient,
            "effectiveDateTime": _instant(point.at),
            "note": [{"text": point.source}],
        }
        if measure.category is not None:
            resource["category"] = [_category(measure.category)]
        if measure.unit is not None:
            resource["valueQuantity"] = {
                "value": _number(point.score),
                "unit": measure.unit[1],
                "system": UCUM,
                "code": measure.unit[0],
            }
        elif float(point.score).is_integer():
            resource["valueInteger"] = int(point.score)
        else:
            resource["valueQuantity"] = {"value": point.score}
        if derived is not None:
            resource["derivedFrom"] = [derived]
        self.add(resource)

    def vitals(self, sessions: dict[str, Resource]) -> None:
        """Each out-of-range reading: one Observation, the vitals as its components."""
        for _, event_id, event in self.events:
            if not isinstance(event, InfusionVitalsOutOfRange):
                continue
            crossed = [str(text) for text in event.crossed]
            components = []
            for value, (loinc, display, unit_code, unit, named) in zip(
                _readings(event), VITALS, strict=True
            ):
                component: Resource = {
                    "code": {
                        "coding": [{"system": LOINC, "code": loinc, "display": display}],
                        "text": display,
                    },
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": UCUM,
                        "code": unit_code,
                    },
                }
                if any(text.lower().startswith(named) for text in crossed):
                    component["interpretation"] = [_interpretation("A", "Abnormal")]
                components.append(component)
            resource: Resource = {
                "resourceType": "Observation",
                "id": self.id_of("Observation", f"vitals/{event_id}"),
                "status": "final",
                "category": [_category("vital-signs")],
                "code": {"text": f"vital signs out of range, {event.phase} the infusion"},
                "subject": self.patient,
                "effectiveDateTime": _instant(event.measured_at),
                "interpretation": [_interpretation("A", "Abnormal")],
                "component": components,
            }
            if crossed:
                resource["note"] = [{"text": "; ".join(crossed)}]
            session = sessions.get(str(event.session_id))
            if session is not None:
                resource["partOf"] = [session]
            self.add(resource)

    def flag(self, alert: Alert) -> None:
        period = {"start": _instant(alert.raised_at)}
        if alert.cleared_at is not None:
            period["end"] = _instant(alert.cleared_at)
        self.add(
            {
                "resourceType": "Flag",
                "id": self.id_of("Flag", alert.id or f"{alert.kind}/{alert.raised_at}"),
                "status": FLAG_STATUS.get(alert.status, "active"),
                "category": [{"text": f"{alert.severity}: {alert.kind}"}],
                "code": {"text": alert.reason},
                "subject": self.patient,
                "period": period,
            }
        )


def _episode_status(status: str) -> str:
    if status in EPISODE_STATUSES:
        return status
    # No "unknown" in EpisodeOfCare's set: a stream in a state we cannot name is still
    # under way.
    return EPISODE_STATUS_ALIASES.get(status, "active")


def _activity(
    episode: Resource, status: str, text: str, description: str, outcomes: list[Resource]
) -> Resource:
    return {
        "outcomeReference": [episode, *outcomes],
        "detail": {
            "code": {"text": text},
            "status": ACTIVITY_STATUS[status],
            "description": description,
        },
    }


def _reference(resource_id: str) -> Resource:
    return {"reference": f"urn:uuid:{resource_id}"}


def _uuid_identifier(value: str) -> Resource:
    try:
        return {"system": URI_IDENTIFIER, "value": f"urn:uuid:{UUID(value)}"}
    except ValueError:
        return {"value": value}


def _category(code: str) -> Resource:
    return {"coding": [{"system": OBSERVATION_CATEGORY, "code": code}]}


def _interpretation(code: str, display: str) -> Resource:
    return {"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}


def _answer(score: float) -> Resource:
    if float(score).is_integer():
        return {"valueInteger": int(score)}
    return {"valueDecimal": score}


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _readings(event: InfusionVitalsOutOfRange) -> tuple[int, int, int, int]:
    return event.systolic, event.diastolic, event.heart_rate, event.spo2


def _instant(moment: datetime) -> str:
    """FHIR wants a time zone on every time. The times here come from events, in the
    offset their producer used, so they are put in UTC."""
    return as_utc(moment).isoformat()
