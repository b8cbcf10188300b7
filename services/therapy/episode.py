"""The therapy episode aggregate: opened from an accepted referral, assigned to a
psychologist, booked into, discharged with a reason.

Pure, as the appointment aggregate (appointment.py): a step takes the episode row, its
appointments where it needs them, the time and the policy, and returns the rows it
makes and the events it causes. The commands (services.py) and the event handler
(handlers.py) store them in their unit of work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from services.therapy import appointment, domain
from services.therapy.models import Appointment, TherapyEpisode
from shared.domain import IllegalTransition
from shared.events import Subject
from shared.events.catalogue import (
    AppointmentBooked,
    AppointmentKind,
    DischargeReason,
    Event,
    ReferralAccepted,
    TherapyEpisodeAssigned,
    TherapyEpisodeDischarged,
    TherapyEpisodeOpened,
)

WAITLIST, ACTIVE = "waitlist", "active"
Mode = Literal["video", "in-person"]


def subject(episode: TherapyEpisode) -> Subject:
    return Subject(type="therapy-episode", id=str(episode.id))


def open_from_referral(
    accepted: ReferralAccepted, patient_id: UUID, referred_at: datetime, now: datetime
) -> tuple[TherapyEpisode, TherapyEpisodeOpened]:
    """An accepted psychology referral puts the patient on the team's waiting list."""
    episode = TherapyEpisode.opened_from(
        accepted, patient_id, WAITLIST, referred_at=referred_at, opened_at=now
    )
    opened = TherapyEpisodeOpened(
        episode_id=episode.id,
        referral_id=accepted.referral_id,
        priority=accepted.priority,
        referred_at=referred_at,
        opened_at=now,
    )
    return episode, opened


def require_open(episode: TherapyEpisode, action: str) -> None:
    """A finished or cancelled episode takes no more bookings, changes or discharges."""
    if episode.status not in domain.EPISODE_OPEN:
        raise IllegalTransition("episode", episode.status, action)


def assign(episode: TherapyEpisode, clinician_id: str, now: datetime) -> TherapyEpisodeAssigned:
    require_open(episode, "assign")
    episode.clinician_id = clinician_id
    return TherapyEpisodeAssigned(episode_id=episode.id, clinician_id=clinician_id, assigned_at=now)


def book(
    episode: TherapyEpisode,
    kind: AppointmentKind,
    mode: Mode,
    location: str | None,
    start: datetime,
    booked_by: str,
    policy: domain.TherapyPolicy,
) -> tuple[Appointment, AppointmentBooked]:
    """Book an appointment with the episode's psychologist; the first one takes the
    patient off the waiting list. The command checks the slot against the diary."""
    require_open(episode, "book")
    if episode.clinician_id is None:
        raise domain.TherapyRuleBroken("clinician_id", "assign the episode to a psychologist first")
    if mode == "in-person" and not location:
        raise domain.TherapyRuleBroken("location", "an in-person appointment needs a location")
    booked = Appointment(
        episode_id=episode.id,
        patient_id=episode.patient_id,
        clinician_id=episode.clinician_id,
        kind=kind,
        mode=mode,
        location=location,
        start=start,
        end=appointment.end_of(start, policy),
        status=domain.BOOKED,
        booked_by=booked_by,
    )
    if episode.status == WAITLIST:
        episode.status = ACTIVE
    event = AppointmentBooked(
        **appointment.about(booked),
        kind=kind,
        mode=mode,
        clinician_id=episode.clinician_id,
        start=start,
        end=booked.end,
    )
    return booked, event


def discharge(
    episode: TherapyEpisode,
    appointments: list[Appointment],
    reason: DischargeReason,
    note: str | None,
    now: datetime,
    policy: domain.TherapyPolicy,
) -> list[Event]:
    """Discharge with a reason; appointments still booked will not happen now, so the
    clinic cancels them first."""
    require_open(episode, "discharge")
    status = domain.discharge_status(
        reason, note, appointment.attended_treatment(appointments), policy
    )
    events: list[Event] = []
    for booked in appointments:
        if booked.status in (domain.BOOKED, domain.ARRIVED):
            events += appointment.act(
                booked,
                appointments,
                "cancel",
                now,
                policy,
                cancelled_by="clinic",
                reason="episode discharged",
            )
    episode.status, episode.discharged_at = status, now
    episode.discharge_reason, episode.discharge_note = reason, note
    events.append(
        TherapyEpisodeDischarged(
            episode_id=episode.id,
            referral_id=episode.referral_id,
            reason=reason,
            discharged_at=now,
        )
    )
    return events
