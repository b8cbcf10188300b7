"""Therapy commands through the service layer: what each writes, publishes and audits,
when the DNA threshold event is published, and that a refused command writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from uuid import UUID, uuid4

import pytest
from litestar.exceptions import PermissionDeniedException

from services.therapy import services
from services.therapy.handlers import handle_event
from services.therapy.models import Appointment, SessionMeasure, TherapyEpisode
from services.therapy.schemas import (
    AppointmentCreate,
    Assignment,
    ClinicianCreate,
    Correction,
    Discharge,
    HoursBlock,
    MeasureCreate,
    Reschedule,
    WorkingHoursSet,
)
from shared.auth import Role
from shared.clock import clinic_clock
from shared.domain import IllegalTransition, RuleBroken
from shared.errors import Conflict
from shared.events import Actor, Subject, new_event
from shared.events.catalogue import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCorrected,
    AppointmentMissed,
    Event,
    MeasureRecorded,
    MeasureRiskFlagged,
    PathwayAlertResolved,
    PathwayUrgentAlertOpened,
    ReferralAccepted,
    TherapyDnaThresholdReached,
    TherapyEpisodeDischarged,
    TherapyEpisodeOpened,
)
from shared.policy import clinical_policy
from shared.tables import utcnow

from .conftest import Store, user

PSY = user(Role.psychologist, "psy-1")
OTHER_PSY = user(Role.psychologist, "psy-2")
PHQ9_ITEM9_ONE = [1, 1, 1, 1, 1, 1, 1, 1, 1]


@pytest.fixture
def therapy(store: Callable[[str], Store]) -> Store:
    clinic = store("therapy")
    services.add_clinician(ClinicianCreate(id=PSY.id, display_name="Dr One"), clinic.uow(PSY), PSY)
    every_day = [HoursBlock(weekday=day, start=time(9), end=time(17)) for day in range(7)]
    services.set_working_hours(PSY.id, WorkingHoursSet(hours=every_day), clinic.uow(PSY), PSY)
    return clinic


def _accepted(received_at: datetime | None = None) -> ReferralAccepted:
    return ReferralAccepted(
        referral_id=uuid4(),
        target="psychology",
        priority="routine",
        conditions=["depression"],
        accepted_at=utcnow(),
        received_at=received_at,
    )


def _open(therapy: Store, accepted: ReferralAccepted) -> TherapyEpisode | None:
    """As the handler does: in the consuming transaction, committed by the caller."""
    uow = therapy.uow(PSY)
    with uow:
        opened = services.open_episode(
            accepted, uuid4(), accepted.received_at or utcnow(), uow, causation_id="event-1"
        )
        uow.commit()
    return opened


def _episode(therapy: Store, *, assigned: bool = True) -> TherapyEpisode:
    opened = _open(therapy, _accepted())
    assert opened is not None
    if not assigned:
        return opened
    return services.assign(opened.id, Assignment(clinician_id=PSY.id), therapy.uow(PSY), PSY)


def _slots(therapy: Store) -> list[datetime]:
    tomorrow = utcnow().date() + timedelta(days=1)
    free = services.free_slots(PSY.id, tomorrow, 2, therapy.uow(PSY))
    therapy.end_requests()  # a read ends with its request, releasing SQLite's lock
    return free


def _book(therapy: Store, episode: TherapyEpisode, start: datetime) -> Appointment:
    data = AppointmentCreate(kind="cbt", start=start, mode="video")
    return services.book(episode.id, data, therapy.uow(PSY), PSY)


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    yield
    clinic_clock().reset()


def _on_its_day(therapy: Store, booked: Appointment, action: str) -> Appointment:
    """Issue 12: an appointment is attended or missed on its day, not before: the
    clinic clock moves to it."""
    clinic_clock().set(booked.start)
    try:
        return services.act(booked.id, action, therapy.uow(PSY), PSY)
    finally:
        clinic_clock().reset()


def _written(therapy: Store) -> tuple[int, int, int, int]:
    return (
        len(therapy.events()),
        len(therapy.audit()),
        len(therapy.rows(Appointment)),
        len(therapy.rows(SessionMeasure)),
    )


def test_an_accepted_referral_opens_one_episode_waiting_since_it_was_received(
    therapy: Store,
) -> None:
    received = utcnow() - timedelta(days=30)
    accepted = _accepted(received)
    opened = _open(therapy, accepted)
    assert opened is not None and opened.status == "waitlist"
    assert _open(therapy, accepted) is None  # a replay opens nothing more
    (event,) = therapy.events()
    assert isinstance(event, TherapyEpisodeOpened)
    assert (event.episode_id, event.referral_id) == (opened.id, accepted.referral_id)
    assert event.referred_at == received
    assert len(therapy.rows(TherapyEpisode)) == 1


def test_booking_takes_the_patient_off_the_waiting_list_and_publishes_the_booking(
    therapy: Store,
) -> None:
    episode = _episode(therapy)
    start = _slots(therapy)[0]
    booked = _book(therapy, episode, start)
    event = therapy.events()[-1]
    assert event == AppointmentBooked(
        episode_id=episode.id,
        appointment_id=booked.id,
        kind="cbt",
        mode="video",
        clinician_id=PSY.id,
        start=start,
        end=start + timedelta(hours=1),
    )
    assert therapy.rows(TherapyEpisode)[0].status == "active"
    assert therapy.audit()[-1] == ("C", "Appointment", None)


def test_booking_an_unassigned_episode_breaks_a_rule_and_writes_nothing(therapy: Store) -> None:
    episode = _episode(therapy, assigned=False)
    start = _slots(therapy)[0]
    before = _written(therapy)
    with pytest.raises(RuleBroken) as raised:
        _book(therapy, episode, start)
    assert raised.value.field == "clinician_id"
    assert _written(therapy) == before
    assert therapy.rows(TherapyEpisode)[0].status == "waitlist"


def test_another_psychologists_caseload_is_refused_and_nothing_is_written(
    therapy: Store,
) -> None:
    episode = _episode(therapy)
    before = _written(therapy)
    data = AppointmentCreate(kind="cbt", start=_slots(therapy)[0], mode="video")
    with pytest.raises(PermissionDeniedException):
        services.book(episode.id, data, therapy.uow(OTHER_PSY), OTHER_PSY)
    assert _written(therapy) == before


def test_the_dna_threshold_event_is_published_once_as_the_count_reaches_it(
    therapy: Store,
) -> None:
    episode = _episode(therapy)
    threshold = clinical_policy().therapy.dna_threshold
    appointments = [_book(therapy, episode, s) for s in _slots(therapy)[: threshold + 1]]
    reached_after: list[int] = []
    for count, missed in enumerate(appointments, start=1):
        _on_its_day(therapy, missed, "miss")
        events = therapy.events()
        reached = [e for e in events if isinstance(e, TherapyDnaThresholdReached)]
        reached_after.append(len(reached))
        last_missed = [e for e in events if isinstance(e, AppointmentMissed)][-1]
        assert (last_missed.appointment_id, last_missed.dna_count) == (missed.id, count)
        if count == threshold:
            # Published with the miss that reached it, right after it.
            assert events[-1] == reached[0]
            assert (reached[0].dna_count, reached[0].threshold) == (threshold, threshold)
    assert reached_after == [0] * (threshold - 1) + [1, 1]
    assert therapy.audit()[-1] == ("U", "Appointment", "miss")


def test_a_noshow_corrected_to_attended_counts_as_treatment_not_as_a_dna(
    therapy: Store,
) -> None:
    episode = _episode(therapy)
    booked = _book(therapy, episode, _slots(therapy)[0])
    _on_its_day(therapy, booked, "miss")
    correction = Correction(status="fulfilled", reason="arrived late")
    services.correct(booked.id, correction, therapy.uow(PSY), PSY)
    event = therapy.events()[-1]
    assert isinstance(event, AppointmentCorrected)
    assert (event.previous_status, event.status) == ("noshow", "fulfilled")
    assert (event.dna_count, event.attended_treatment) == (0, 1)
    assert therapy.audit()[-1] == ("U", "Appointment", "corrected to fulfilled")


def test_an_illegal_move_and_an_illegal_correction_write_nothing(therapy: Store) -> None:
    episode = _episode(therapy)
    booked = _book(therapy, episode, _slots(therapy)[0])
    _on_its_day(therapy, booked, "attend")
    before = _written(therapy)
    with pytest.raises(IllegalTransition) as raised:
        _on_its_day(therapy, booked, "check-in")
    assert (raised.value.thing, raised.value.current) == ("appointment", "fulfilled")
    with pytest.raises(Conflict) as refused:
        services.correct(booked.id, Correction(status="booked", reason="no"), therapy.uow(PSY), PSY)
    assert refused.value.detail == "an appointment that is fulfilled cannot be corrected to booked"
    assert _written(therapy) == before
    assert therapy.rows(Appointment)[0].status == "fulfilled"


def test_rescheduling_onto_the_clinicians_other_booking_is_a_conflict_that_moves_nothing(
    therapy: Store,
) -> None:
    first, second = _episode(therapy), _episode(therapy)
    taken, free = _slots(therapy)[:2]
    _book(therapy, first, taken)
    moving = _book(therapy, second, free)
    before = _written(therapy)
    with pytest.raises(Conflict) as refused:
        services.reschedule(moving.id, Reschedule(start=taken), therapy.uow(PSY), PSY)
    assert refused.value.detail == "the clinician is already booked at that time"
    assert _written(therapy) == before
    (kept,) = [a for a in therapy.rows(Appointment) if a.id == moving.id]
    assert kept.start == free


def test_a_phq9_with_item9_above_0_is_recorded_and_flagged(therapy: Store) -> None:
    episode = _episode(therapy)
    booked = _book(therapy, episode, _slots(therapy)[0])
    _on_its_day(therapy, booked, "attend")
    data = MeasureCreate(instrument="PHQ-9", items=PHQ9_ITEM9_ONE)
    measure = services.record_measure(booked.id, data, therapy.uow(PSY), PSY)
    recorded, flagged = therapy.events()[-2:]
    assert isinstance(recorded, MeasureRecorded) and isinstance(flagged, MeasureRiskFlagged)
    assert (recorded.total, recorded.item9) == (9, 1)
    assert (flagged.appointment_id, flagged.item9) == (booked.id, 1)
    assert [m.id for m in therapy.rows(SessionMeasure)] == [measure.id]
    assert therapy.audit()[-1] == ("C", "QuestionnaireResponse", "PHQ-9")


def test_a_measure_at_a_booked_appointment_is_refused_and_writes_nothing(therapy: Store) -> None:
    episode = _episode(therapy)
    booked = _book(therapy, episode, _slots(therapy)[0])
    before = _written(therapy)
    data = MeasureCreate(instrument="PHQ-9", items=PHQ9_ITEM9_ONE)
    with pytest.raises(Conflict) as refused:
        services.record_measure(booked.id, data, therapy.uow(PSY), PSY)
    assert refused.value.problem_extra == {"current_status": "booked"}
    assert _written(therapy) == before


def test_discharge_cancels_what_is_still_booked_then_closes_the_episode(therapy: Store) -> None:
    episode = _episode(therapy)
    booked = _book(therapy, episode, _slots(therapy)[0])
    discharge = Discharge(reason="moved-away")
    services.discharge(episode.id, discharge, therapy.uow(PSY), PSY)
    cancelled, discharged = therapy.events()[-2:]
    assert isinstance(cancelled, AppointmentCancelled)
    assert (cancelled.appointment_id, cancelled.cancelled_by) == (booked.id, "clinic")
    assert discharged == TherapyEpisodeDischarged(
        episode_id=episode.id,
        referral_id=episode.referral_id,
        reason="moved-away",
        discharged_at=therapy.rows(TherapyEpisode)[0].discharged_at,
    )
    assert therapy.rows(TherapyEpisode)[0].status == "finished"
    assert therapy.audit()[-1] == ("U", "EpisodeOfCare", "discharged: moved-away")

    # A finished episode takes no more bookings.
    before = _written(therapy)
    with pytest.raises(IllegalTransition) as raised:
        _book(therapy, episode, _slots(therapy)[1])
    assert (raised.value.thing, raised.value.current) == ("episode", "finished")
    assert _written(therapy) == before


def test_a_completed_discharge_without_a_finished_course_writes_nothing(therapy: Store) -> None:
    episode = _episode(therapy)
    _book(therapy, episode, _slots(therapy)[0])
    before = _written(therapy)
    with pytest.raises(RuleBroken) as raised:
        services.discharge(episode.id, Discharge(reason="completed"), therapy.uow(PSY), PSY)
    assert raised.value.field == "reason"
    assert _written(therapy) == before
    assert therapy.rows(TherapyEpisode)[0].status == "active"
    assert {a.status for a in therapy.rows(Appointment)} == {"booked"}


# --- issue 12: an open urgent alert stops a discharge ---------------------------------------


def _from_coordinator(therapy: Store, patient_id: UUID, event: Event) -> None:
    """As the worker does: the therapy handler consumes the coordinator's event."""
    envelope = new_event(
        data=event,
        producer="coordinator",
        patient_id=patient_id,
        subject=Subject(type="urgent-alert", id="a-1"),
        actor=Actor(user_id="coordinator", role="service"),
        correlation_id="c-1",
    )
    with therapy.sessions() as session:
        handle_event(session, envelope)
        session.commit()


def _urgent_opened() -> PathwayUrgentAlertOpened:
    now = utcnow()
    return PathwayUrgentAlertOpened(
        alert_id="a-1", kind="phq9-item9", owner_role="mdt", raised_at=now, due=now
    )


def _resolved() -> PathwayAlertResolved:
    return PathwayAlertResolved(
        alert_id="a-1", kind="phq9-item9", by_user="dr-mdt", by_role="mdt", handled_at=utcnow()
    )


def test_a_discharge_with_an_open_urgent_alert_is_refused_until_it_is_resolved(
    therapy: Store,
) -> None:
    """Issue 12: "Discharging a patient ... with an open urgent alert is refused unless the
    alert is resolved first"; the refusal names the alert and writes nothing."""
    episode = _episode(therapy)
    _from_coordinator(therapy, episode.patient_id, _urgent_opened())
    before = _written(therapy)
    status = therapy.rows(TherapyEpisode)[0].status
    with pytest.raises(Conflict) as refused:
        services.discharge(episode.id, Discharge(reason="moved-away"), therapy.uow(PSY), PSY)
    assert refused.value.errors == [{"field": "alerts", "message": refused.value.detail}]
    assert "phq9-item9 (for the mdt)" in refused.value.detail
    assert refused.value.problem_extra["open_urgent_alerts"] == [
        {"id": "a-1", "kind": "phq9-item9"}
    ]
    assert _written(therapy) == before
    assert therapy.rows(TherapyEpisode)[0].status == status != "finished"

    _from_coordinator(therapy, episode.patient_id, _resolved())
    services.discharge(episode.id, Discharge(reason="moved-away"), therapy.uow(PSY), PSY)
    assert therapy.rows(TherapyEpisode)[0].status == "finished"


def test_a_resolution_that_overtakes_its_alert_keeps_it_resolved(therapy: Store) -> None:
    """Events from one producer on different subjects may arrive in either order."""
    episode = _episode(therapy)
    _from_coordinator(therapy, episode.patient_id, _resolved())
    _from_coordinator(therapy, episode.patient_id, _urgent_opened())
    services.discharge(episode.id, Discharge(reason="moved-away"), therapy.uow(PSY), PSY)
    assert therapy.rows(TherapyEpisode)[0].status == "finished"


def test_another_patients_urgent_alert_does_not_stop_a_discharge(therapy: Store) -> None:
    episode = _episode(therapy)
    _from_coordinator(therapy, uuid4(), _urgent_opened())
    services.discharge(episode.id, Discharge(reason="moved-away"), therapy.uow(PSY), PSY)
    assert therapy.rows(TherapyEpisode)[0].status == "finished"
