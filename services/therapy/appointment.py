"""The appointment aggregate: each step of an appointment's life, decided here.

Pure: a step takes the appointment row, the episode's other appointments where the
step counts them (DNAs, attended treatment), the time and the policy; it moves the
status through the appointment state machine (domain.APPOINTMENT) and returns the
events the step causes. The commands (services.py) load, lock, check the diary and
store what a step returns; none of them decides an appointment's status itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal, TypedDict
from uuid import UUID

from services.therapy import domain
from services.therapy.models import Appointment, SessionMeasure
from shared.calendar import working_calendar
from shared.domain import IllegalTransition, as_declared
from shared.events.catalogue import (
    AppointmentAttended,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentCorrected,
    AppointmentKind,
    AppointmentMissed,
    AppointmentRescheduled,
    AppointmentStatusChanged,
    Event,
    MeasureRecorded,
    MeasureRiskFlagged,
    TherapyDnaThresholdReached,
)
from shared.measures import INSTRUMENTS, InvalidItems, peg_mean, score

# Appointments that count as treatment towards a finished course (assessments do not).
TREATMENT_KINDS = ("cbt", "review")
Instrument = Literal["PHQ-9", "GAD-7", "PEG"]
CancelledBy = Literal["patient", "clinic"]

# The event each action publishes: one shape, told apart by its type.
EVENT_OF_ACTION: dict[str, type[AppointmentStatusChanged]] = {
    "check-in": AppointmentCheckedIn,
    "attend": AppointmentAttended,
    "miss": AppointmentMissed,
    "cancel": AppointmentCancelled,
}


# The steps that happen on the appointment's day or after, never before it.
ON_THE_DAY = frozenset({"check-in", "attend", "miss"})


def require_its_day(appointment: Appointment, action: str, now: datetime) -> None:
    """The appointment's day in the clinic's calendar (its time zone), not the UTC date:
    a 09:00 appointment may be checked in at 08:00 the same morning."""
    calendar = working_calendar()
    its_day, today = calendar.day_of(appointment.start), calendar.day_of(now)
    if today < its_day:
        raise domain.TherapyRuleBroken(
            "start",
            f"the appointment is on {its_day.isoformat()}: it can be marked {action} on "
            f"that day or after, not before (today is {today.isoformat()} in the clinic)",
        )


class AboutAppointment(TypedDict):
    """What every appointment event says first (the catalogue's AppointmentEvent)."""

    episode_id: UUID
    appointment_id: UUID


def about(appointment: Appointment) -> AboutAppointment:
    return {"episode_id": appointment.episode_id, "appointment_id": appointment.id}


def end_of(start: datetime, policy: domain.TherapyPolicy) -> datetime:
    return start + timedelta(minutes=policy.slot_minutes)


def reschedule(
    appointment: Appointment, start: datetime, policy: domain.TherapyPolicy
) -> AppointmentRescheduled:
    """Move a booked appointment to another slot (the command has checked the slot)."""
    domain.APPOINTMENT.next_status(appointment.status, "reschedule")
    previous = appointment.start
    appointment.start, appointment.end = start, end_of(start, policy)
    return AppointmentRescheduled(
        **about(appointment), previous_start=previous, start=start, end=appointment.end
    )


def act(
    appointment: Appointment,
    appointments: Iterable[Appointment],
    action: str,
    now: datetime,
    policy: domain.TherapyPolicy,
    *,
    cancelled_by: CancelledBy | None = None,
    reason: str | None = None,
) -> list[Event]:
    """Check in, attend, miss or cancel: the status change, and the DNA threshold
    event when this miss is the one that reaches it. Nobody arrives at, attends or misses
    an appointment before its day (issue 12); cancelling ahead is what cancelling is."""
    status = domain.APPOINTMENT.next_status(appointment.status, action)
    if action in ON_THE_DAY:
        require_its_day(appointment, action, now)
    return _change(
        appointment,
        appointments,
        status,
        EVENT_OF_ACTION[action],
        now,
        policy,
        cancelled_by=cancelled_by,
        reason=reason,
    )


def correct(
    appointment: Appointment,
    appointments: Iterable[Appointment],
    wanted: str,
    reason: str,
    now: datetime,
    policy: domain.TherapyPolicy,
) -> list[Event]:
    """Put a mistaken status right (a noshow who did attend, a booking in error)."""
    status = domain.corrected_status(appointment.status, wanted)
    return _change(
        appointment, appointments, status, AppointmentCorrected, now, policy, reason=reason
    )


def record_measure(
    appointment: Appointment,
    instrument: Instrument,
    items: list[int],
    by_user: str,
    now: datetime,
) -> tuple[SessionMeasure, list[Event]]:
    """Score a questionnaire at an attended appointment; PHQ-9 item 9 above 0 is flagged."""
    try:
        result = score(INSTRUMENTS[instrument], items, "items")
    except InvalidItems as error:
        raise domain.TherapyRuleBroken(error.field, error.message) from None
    if appointment.status not in (domain.ARRIVED, domain.FULFILLED):
        raise IllegalTransition("appointment", appointment.status, "record measures")
    measure = SessionMeasure(
        appointment_id=appointment.id,
        episode_id=appointment.episode_id,
        instrument=instrument,
        items=list(result.items),
        total=result.total,
        band=result.band,
        recorded_by=by_user,
        recorded_at=now,
    )
    item9 = result.items[ITEM9] if instrument == "PHQ-9" else None
    events: list[Event] = [
        MeasureRecorded(
            **about(appointment),
            instrument=instrument,
            total=result.total,
            band=result.band,
            item9=item9,
            recorded_at=now,
            mean=peg_mean(result) if instrument == "PEG" else None,
        )
    ]
    if flags_risk(instrument, result.items):
        events.append(
            MeasureRiskFlagged(**about(appointment), item9=result.items[ITEM9], recorded_at=now)
        )
    return measure, events


ITEM9 = 8


def flags_risk(instrument: str, items: Sequence[int]) -> bool:
    """CLINICAL.md: a PHQ-9 item 9 answered above 0 → urgent safety alert, same working day."""
    return instrument == "PHQ-9" and len(items) > ITEM9 and items[ITEM9] > 0


def dna_count(appointments: Iterable[Appointment]) -> int:
    return domain.dna_count(a.status for a in appointments)


def attended_treatment(appointments: Iterable[Appointment]) -> int:
    return sum(
        1 for a in appointments if a.status == domain.FULFILLED and a.kind in TREATMENT_KINDS
    )


def takes_a_slot_back(previous: str, status: str) -> bool:
    """A correction back onto a slot, which someone may have taken since."""
    return status in domain.HOLDS_SLOT and previous not in domain.HOLDS_SLOT


def _change(
    appointment: Appointment,
    appointments: Iterable[Appointment],
    status: str,
    published_as: type[AppointmentStatusChanged],
    now: datetime,
    policy: domain.TherapyPolicy,
    *,
    cancelled_by: CancelledBy | None = None,
    reason: str | None = None,
) -> list[Event]:
    """Set the status; the event carries the episode's counts after the change."""
    others = [a for a in appointments if a.id != appointment.id]
    dnas_before = dna_count([*others, appointment])
    previous = appointment.status
    appointment.status = status
    if cancelled_by is not None:
        appointment.cancelled_by = cancelled_by
    if reason is not None:
        appointment.status_reason = reason
    after = [*others, appointment]
    dnas_after = dna_count(after)
    events: list[Event] = [
        published_as(
            **about(appointment),
            kind=as_declared(AppointmentKind, appointment.kind),
            start=appointment.start,
            previous_status=previous,
            status=status,
            attended_treatment=attended_treatment(after),
            dna_count=dnas_after,
            cancelled_by=cancelled_by,
        )
    ]
    if domain.dna_threshold_reached(dnas_before, dnas_after, policy):
        # A review, not a discharge: discharge after DNA is a person's decision.
        events.append(
            TherapyDnaThresholdReached(
                episode_id=appointment.episode_id,
                dna_count=dnas_after,
                threshold=policy.dna_threshold,
                reached_at=now,
            )
        )
    return events
