"""Referral commands through the service layer: what each writes, publishes and
audits, and that a refused command writes nothing at all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from litestar.exceptions import PermissionDeniedException

from services.referrals import services
from services.referrals.models import Patient, Referral, ReferralTransition
from services.referrals.schemas import (
    Baseline,
    Cancellation,
    PatientCreate,
    PriorTreatment,
    ReferralCreate,
    Referrer,
    Triage,
)
from shared.auth import Role
from shared.domain import IllegalTransition, RuleBroken
from shared.errors import Conflict
from shared.events import Actor, Subject
from shared.events.catalogue import (
    PatientRegistered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralReceived,
)
from shared.uow import UnitOfWork

from .conftest import Store, user

REFERRER = user(Role.referrer, "gp-1")
INFUSION = user(Role.infusion_clinician, "ic-1")
PSYCHOLOGIST = user(Role.psychologist, "psy-1")
VALID_NHS_NUMBER = "9434765919"


@pytest.fixture
def referrals(store: Callable[[str], Store]) -> Store:
    return store("referrals")


def _patient(referrals: Store, nhs_number: str | None = None) -> Patient:
    data = PatientCreate(
        given_name="Ada",
        family_name="Test",
        birth_date=date(1970, 5, 1),
        sex="female",
        nhs_number=nhs_number,
    )
    return services.register_patient(data, referrals.uow(REFERRER), REFERRER)


def _referral(referrals: Store, target: str = "ketamine-infusion") -> Referral:
    patient = _patient(referrals)
    data = ReferralCreate(
        patient_id=patient.id,
        target=target,  # type: ignore[arg-type]
        priority="urgent",
        reason="refractory neuropathic pain with depression",
        conditions=["neuropathic-pain", "depression"],
        referrer=Referrer(name="Dr Who", role="GP", organisation="Surgery"),
        prior_treatments=[PriorTreatment(kind="medicine", name="amitriptyline")],
        baseline=Baseline(phq9_items=[2, 2, 2, 2, 2, 2, 2, 2, 1], pain_nrs=7),
    )
    return services.refer(data, referrals.uow(REFERRER), REFERRER)


def test_registering_a_patient_publishes_patient_registered_and_audits_the_create(
    referrals: Store,
) -> None:
    patient = _patient(referrals, VALID_NHS_NUMBER)
    assert referrals.events() == [PatientRegistered(patient_id=patient.id)]
    assert referrals.audit() == [("C", "Patient", None)]


def test_a_second_patient_with_one_nhs_number_is_a_conflict_that_writes_nothing(
    referrals: Store,
) -> None:
    _patient(referrals, VALID_NHS_NUMBER)
    with pytest.raises(Conflict):
        _patient(referrals, VALID_NHS_NUMBER)
    assert len(referrals.rows(Patient)) == 1
    assert len(referrals.events()) == 1
    assert len(referrals.audit()) == 1


def test_a_referral_is_received_with_its_history_its_event_and_scored_baseline(
    referrals: Store,
) -> None:
    referral = _referral(referrals)
    assert referral.status == "received"
    received = referrals.events()[-1]
    assert isinstance(received, ReferralReceived)
    assert received.referral_id == referral.id
    assert received.baseline is not None and received.baseline.phq9_total == 17
    assert received.baseline.phq9_item9 == 1
    history = referrals.rows(ReferralTransition)
    assert [(t.action, t.from_status, t.to_status) for t in history] == [
        ("refer", None, "received")
    ]


def test_accepting_publishes_referral_accepted_with_when_it_was_received(
    referrals: Store,
) -> None:
    referral = _referral(referrals)
    accepted = services.triage(
        referral.id, Triage(decision="accept"), referrals.uow(INFUSION), INFUSION
    )
    assert accepted.status == "accepted"
    event = referrals.events()[-1]
    assert isinstance(event, ReferralAccepted)
    assert event.priority == "urgent"
    assert event.received_at == referrals.rows(Referral)[0].received_at.replace(
        tzinfo=event.received_at.tzinfo
    )
    assert referrals.audit()[-1] == ("U", "ServiceRequest", "triage: accept")


def test_a_second_triage_is_an_illegal_transition_and_writes_nothing(referrals: Store) -> None:
    referral = _referral(referrals)
    services.triage(referral.id, Triage(decision="accept"), referrals.uow(INFUSION), INFUSION)
    before = (
        len(referrals.events()),
        len(referrals.audit()),
        len(referrals.rows(ReferralTransition)),
    )
    with pytest.raises(IllegalTransition) as raised:
        services.triage(
            referral.id, Triage(decision="reject", reason="no"), referrals.uow(INFUSION), INFUSION
        )
    assert raised.value.current == "accepted"
    after = (
        len(referrals.events()),
        len(referrals.audit()),
        len(referrals.rows(ReferralTransition)),
    )
    assert after == before
    assert referrals.rows(Referral)[0].status == "accepted"


def test_a_rejection_without_a_reason_breaks_a_rule_naming_the_field(referrals: Store) -> None:
    referral = _referral(referrals)
    with pytest.raises(RuleBroken) as raised:
        services.triage(referral.id, Triage(decision="reject"), referrals.uow(INFUSION), INFUSION)
    assert raised.value.field == "reason"
    assert referrals.rows(Referral)[0].status == "received"


def test_a_psychologist_may_not_triage_a_ketamine_referral(referrals: Store) -> None:
    referral = _referral(referrals, "ketamine-infusion")
    with pytest.raises(PermissionDeniedException):
        services.triage(
            referral.id, Triage(decision="accept"), referrals.uow(PSYCHOLOGIST), PSYCHOLOGIST
        )
    assert referrals.rows(Referral)[0].status == "received"
    assert not any(isinstance(e, ReferralAccepted) for e in referrals.events())


def test_cancelling_an_accepted_referral_says_what_it_was(referrals: Store) -> None:
    referral = _referral(referrals)
    services.triage(referral.id, Triage(decision="accept"), referrals.uow(INFUSION), INFUSION)
    services.cancel(
        referral.id, Cancellation(reason="moved away"), referrals.uow(REFERRER), REFERRER
    )
    event = referrals.events()[-1]
    assert isinstance(event, ReferralCancelled)
    assert event.previous_status == "accepted"


def _close(referrals: Store, referral: Referral) -> object:
    uow = referrals.uow(REFERRER)
    with uow:
        step = services.close(
            referral.id,
            "infusion.course.closed",
            "completed",
            Actor(user_id="infusions", role="service"),
            uow,
            causation_id="cause-1",
        )
        uow.commit()
    return step


def test_care_ended_closes_an_accepted_referral_once(referrals: Store) -> None:
    referral = _referral(referrals)
    services.triage(referral.id, Triage(decision="accept"), referrals.uow(INFUSION), INFUSION)
    assert _close(referrals, referral) is not None
    assert _close(referrals, referral) is None
    closed = [e for e in referrals.events() if isinstance(e, ReferralClosed)]
    assert len(closed) == 1
    assert closed[0].closed_by == "infusion.course.closed" and closed[0].outcome == "completed"
    last = referrals.rows(ReferralTransition)[-1]
    assert (last.action, last.by_user, last.by_role) == ("close", "infusions", "service")


def test_care_ended_leaves_a_cancelled_referral_cancelled(referrals: Store) -> None:
    referral = _referral(referrals)
    services.triage(referral.id, Triage(decision="accept"), referrals.uow(INFUSION), INFUSION)
    services.cancel(referral.id, Cancellation(reason="declined"), referrals.uow(REFERRER), REFERRER)
    assert _close(referrals, referral) is None
    assert referrals.rows(Referral)[0].status == "cancelled"


def test_a_unit_of_work_left_without_commit_writes_nothing(referrals: Store) -> None:
    patient = _patient(referrals)
    uow: UnitOfWork = referrals.uow(REFERRER)
    with uow:
        found = uow.session.get(Patient, patient.id)
        assert found is not None
        found.family_name = "Changed"
        uow.session.add(found)
        uow.publish(
            PatientRegistered(patient_id=patient.id),
            patient_id=patient.id,
            subject=Subject(type="patient", id=str(patient.id)),
        )
    # The same session sees the change undone, and the event was never kept.
    again = uow.session.get(Patient, patient.id)
    assert again is not None and again.family_name == "Test"
    assert uow.published == []
    uow.session.close()
    assert referrals.rows(Patient)[0].family_name == "Test"
    assert len(referrals.events()) == 1
