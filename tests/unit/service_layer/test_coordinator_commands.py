"""Coordinator commands through the service layer: a person's action on an alert or a
review is an event published and folded in one unit of work; a refused one writes
nothing; lists page by keyset without overlap."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID, uuid4

import msgspec
import pytest
from litestar.exceptions import PermissionDeniedException

from services.coordinator import services
from services.coordinator.handlers import handle_event
from services.coordinator.models import AlertAction, MdtReview, PathwayAlert
from services.coordinator.schemas import ReviewRequest
from shared.auth import Role
from shared.domain import RuleBroken
from shared.errors import Conflict
from shared.events import Actor, Envelope, Subject, new_event
from shared.events.catalogue import (
    Event,
    MdtReviewRecorded,
    PathwayAlertAcknowledged,
    PathwayAlertResolved,
    PathwayUrgentAlertOpened,
    ReferralCancelled,
    ReferralRejected,
)
from shared.tables import InboxEvent

from ..factories import T0, referral_received
from .conftest import Store, user

MDT = user(Role.mdt, "dr-mdt")
PSYCHOLOGIST = user(Role.psychologist, "psy-1")
CLINICIAN = user(Role.infusion_clinician, "nurse-1")


@pytest.fixture
def coordinator(store: Callable[[str], Store]) -> Store:
    return store("coordinator")


def _pathway_with_risk_alert(coordinator: Store, minutes: int = 0) -> tuple[UUID, PathwayAlert]:
    """A ketamine referral whose baseline PHQ-9 item 9 is answered: an urgent alert."""
    patient_id = uuid4()
    with coordinator.sessions() as session:
        handle_event(
            session,
            referral_received(
                patient_id, phq9_item9=2, occurred_at=T0 + timedelta(minutes=minutes)
            ),
        )
        session.commit()
    alerts = [a for a in coordinator.rows(PathwayAlert) if a.patient_id == patient_id]
    assert len(alerts) == 1, alerts
    return patient_id, alerts[0]


def published_by_people(coordinator: Store) -> list[Event]:
    """The events a command published: without the coordinator's own announcement of
    the urgent alert each test starts from."""
    return [e for e in coordinator.events() if not isinstance(e, PathwayUrgentAlertOpened)]


def test_acknowledging_an_alert_records_the_action_publishes_and_folds_it(
    coordinator: Store,
) -> None:
    _, alert = _pathway_with_risk_alert(coordinator)
    handled = services.handle_alert(
        alert.id, "acknowledged", "calling today", coordinator.uow(MDT), MDT
    )
    assert handled.status == "acknowledged"
    announced, event = coordinator.events()
    assert isinstance(announced, PathwayUrgentAlertOpened)  # when the alert appeared
    assert isinstance(event, PathwayAlertAcknowledged)
    assert (event.alert_id, event.by_user) == (alert.id, MDT.id)
    # Folded at once: its inbox row makes the copy coming back through the queue a no-op.
    assert len(coordinator.rows(InboxEvent)) == 2
    (action,) = coordinator.rows(AlertAction)
    assert (action.action, action.note) == ("acknowledged", "calling today")
    assert coordinator.audit()[-1] == ("U", "Flag", "acknowledged")


def test_an_urgent_alert_is_announced_once_to_the_services_that_discharge(
    coordinator: Store,
) -> None:
    """Issue 12: discharging or closing a course with an open urgent alert is refused; the
    services that do so learn of the alert from this one event."""
    patient_id, alert = _pathway_with_risk_alert(coordinator)
    (announced,) = coordinator.events()
    assert isinstance(announced, PathwayUrgentAlertOpened)
    assert (announced.alert_id, announced.kind, announced.owner_role) == (
        alert.id,
        "phq9-item9",
        "mdt",
    )
    with coordinator.sessions() as session:  # a later event re-folds the same alert
        handle_event(
            session,
            referral_received(patient_id, phq9_item9=0, occurred_at=T0 + timedelta(hours=1)),
        )
        session.commit()
    assert len(coordinator.events()) == 1


def test_the_same_action_twice_is_a_conflict_that_writes_nothing(coordinator: Store) -> None:
    _, alert = _pathway_with_risk_alert(coordinator)
    services.handle_alert(alert.id, "acknowledged", None, coordinator.uow(MDT), MDT)
    before = (
        len(coordinator.events()),
        len(coordinator.audit()),
        len(coordinator.rows(AlertAction)),
    )
    with pytest.raises(Conflict):
        services.handle_alert(alert.id, "acknowledged", None, coordinator.uow(MDT), MDT)
    after = (
        len(coordinator.events()),
        len(coordinator.audit()),
        len(coordinator.rows(AlertAction)),
    )
    assert after == before


def test_a_resolved_alert_takes_no_further_action(coordinator: Store) -> None:
    _, alert = _pathway_with_risk_alert(coordinator)
    services.handle_alert(alert.id, "resolved", "seen in clinic", coordinator.uow(MDT), MDT)
    assert isinstance(coordinator.events()[-1], PathwayAlertResolved)
    with pytest.raises(Conflict, match="already resolved"):
        services.handle_alert(alert.id, "acknowledged", None, coordinator.uow(MDT), MDT)


def test_a_psychologist_may_not_act_on_a_pathway_with_no_psychology_referral(
    coordinator: Store,
) -> None:
    _, alert = _pathway_with_risk_alert(coordinator)
    with pytest.raises(PermissionDeniedException):
        services.handle_alert(
            alert.id, "acknowledged", None, coordinator.uow(PSYCHOLOGIST), PSYCHOLOGIST
        )
    assert published_by_people(coordinator) == []
    assert coordinator.rows(AlertAction) == []


def test_a_review_is_published_and_folded_with_its_decision(coordinator: Store) -> None:
    patient_id, _ = _pathway_with_risk_alert(coordinator)
    request = ReviewRequest(attendees=["dr-mdt", "psy-1"], decision="continue", notes="doing well")
    review = services.record_review(patient_id, request, coordinator.uow(MDT), MDT)
    (event,) = published_by_people(coordinator)
    assert isinstance(event, MdtReviewRecorded)
    assert (event.review_id, event.decision, event.attendees) == (
        review.id,
        "continue",
        ["dr-mdt", "psy-1"],
    )
    assert [r.notes for r in coordinator.rows(MdtReview)] == ["doing well"]
    assert coordinator.audit()[-1] == ("C", "Encounter", "continue")


def test_pathway_pages_follow_on_without_overlap_or_gap(coordinator: Store) -> None:
    patients = {_pathway_with_risk_alert(coordinator, minutes)[0] for minutes in range(5)}
    seen: list[UUID] = []
    cursor = None
    while True:
        query = services.PathwayQuery(cursor=cursor, limit=2)
        rows, counts, cursor = services.list_pathways(query, coordinator.uow(MDT), MDT)
        seen += [row.patient_id for row in rows]
        assert all(counts[row.patient_id].by_severity == {"urgent": 1} for row in rows)
        assert all(counts[row.patient_id].kinds == {"phq9-item9"} for row in rows)
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == patients


# --- issue 12: resolving an urgent alert needs a note and the role that owns it ----------


@pytest.mark.parametrize("note", [None, "", "   "])
def test_resolving_an_urgent_alert_without_a_note_is_refused_naming_the_note(
    coordinator: Store, note: str | None
) -> None:
    """Issue 12 (CLINICAL.md: an alert says who should act): an urgent alert is resolved
    with a note of what was done; the refusal names the field and writes nothing."""
    _, alert = _pathway_with_risk_alert(coordinator)
    with pytest.raises(RuleBroken) as refused:
        services.handle_alert(alert.id, "resolved", note, coordinator.uow(MDT), MDT)
    assert refused.value.field == "note"
    assert "non-empty note" in refused.value.message
    assert (published_by_people(coordinator), coordinator.rows(AlertAction)) == ([], [])


def test_only_the_owning_role_resolves_an_urgent_alert_others_may_acknowledge(
    coordinator: Store,
) -> None:
    """Issue 12: the PHQ-9 item 9 alert is the MDT's (CLINICAL.md Measures: urgent safety
    alert); an infusion clinician on the pathway may acknowledge it, not resolve it."""
    _, alert = _pathway_with_risk_alert(coordinator)
    assert alert.owner_role == "mdt"
    with pytest.raises(RuleBroken) as refused:
        services.handle_alert(alert.id, "resolved", "done", coordinator.uow(CLINICIAN), CLINICIAN)
    assert refused.value.field == "role"
    assert "(mdt)" in refused.value.message
    assert published_by_people(coordinator) == []
    services.handle_alert(alert.id, "acknowledged", None, coordinator.uow(CLINICIAN), CLINICIAN)
    coordinator.end_requests()
    resolved = services.handle_alert(alert.id, "resolved", "called", coordinator.uow(MDT), MDT)
    assert resolved.status == "resolved"
    (_, action) = sorted(coordinator.rows(AlertAction), key=lambda a: a.at)
    assert (action.action, action.note, action.by_role) == ("resolved", "called", "mdt")


# --- issue 12: admins see stage, waits and alert kinds, never scores or item-9 words -------

ADMIN = user(Role.admin, "admin-1")


def test_an_admin_sees_stage_and_alert_kinds_but_no_scores_or_item9_wording(
    coordinator: Store,
) -> None:
    """DESIGN.md: admins watch pathway status (waits, breaches, alerts); issue 12: never
    scores, item-9 wording or clinical notes, in the pathway or the FHIR export."""
    patient_id, alert = _pathway_with_risk_alert(coordinator)
    clinical = json.loads(services.pathway_document(patient_id, coordinator.uow(MDT), MDT))
    assert clinical["measures"]["phq9"] and "item 9 answered 2" in clinical["alerts"][0]["reason"]
    coordinator.end_requests()
    seen = json.loads(services.pathway_document(patient_id, coordinator.uow(ADMIN), ADMIN))
    assert seen["stage"] == clinical["stage"] == "referred"
    (admin_alert,) = seen["alerts"]
    assert (admin_alert["id"], admin_alert["kind"], admin_alert["severity"]) == (
        alert.id,
        "phq9-item9",
        "urgent",
    )
    assert all(points == [] for points in seen["measures"].values())
    assert seen["outcomes"] == {}
    text = json.dumps(seen)
    for clinical_words in ("item 9 answered", "thoughts of self-harm", "PHQ-9 item 9 answered"):
        assert clinical_words not in text
    coordinator.end_requests()
    bundle = services.export_fhir(patient_id, coordinator.uow(ADMIN), ADMIN)
    kinds = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
    assert "Flag" in kinds and "ServiceRequest" in kinds
    assert not kinds & {"Observation", "QuestionnaireResponse"}
    assert "thoughts" not in json.dumps(bundle) and "answered" not in json.dumps(bundle)
    coordinator.end_requests()
    full = services.export_fhir(patient_id, coordinator.uow(MDT), MDT)
    assert "QuestionnaireResponse" in {e["resource"]["resourceType"] for e in full["entry"]}


# --- issue 12: access lasts while the team has an active part in the pathway --------------


def _store(coordinator: Store, *envelopes: Envelope) -> None:
    with coordinator.sessions() as session:
        for envelope in envelopes:
            handle_event(session, envelope)
        session.commit()


def _ended(patient_id: UUID, referral_id: UUID, event: Event, minutes: int) -> Envelope:
    envelope = new_event(
        data=event,
        producer="referrals",
        patient_id=patient_id,
        subject=Subject(type="referral", id=str(referral_id)),
        actor=Actor(user_id="psy-1", role="psychologist"),
        correlation_id="corr-access",
        occurred_at=T0 + timedelta(minutes=minutes),
    )
    return msgspec.structs.replace(envelope, sequence=2)


@pytest.mark.parametrize("ending", ["rejected", "cancelled"])
def test_a_rejected_or_withdrawn_referral_no_longer_grants_access(
    coordinator: Store, ending: str
) -> None:
    """Issue 12 (DESIGN.md Security: object-level checks): a team sees a pathway while
    it has an active part in it; a rejected or withdrawn referral does not grant access
    for ever."""
    patient_id, referral_id = uuid4(), uuid4()
    _store(
        coordinator,
        referral_received(patient_id, referral_id=referral_id, target="psychology", phq9_item9=0),
    )
    services.pathway_document(patient_id, coordinator.uow(PSYCHOLOGIST), PSYCHOLOGIST)
    coordinator.end_requests()
    at = T0 + timedelta(minutes=5)
    event: Event = (
        ReferralRejected(referral_id=referral_id, target="psychology", rejected_at=at)
        if ending == "rejected"
        else ReferralCancelled(
            referral_id=referral_id,
            target="psychology",
            previous_status="received",
            cancelled_at=at,
        )
    )
    _store(coordinator, _ended(patient_id, referral_id, event, 5))
    with pytest.raises(PermissionDeniedException):
        services.pathway_document(patient_id, coordinator.uow(PSYCHOLOGIST), PSYCHOLOGIST)
    coordinator.end_requests()
    # The MDT still sees it; a new psychology referral gives the team its part back.
    services.pathway_document(patient_id, coordinator.uow(MDT), MDT)
    coordinator.end_requests()
    _store(
        coordinator,
        referral_received(
            patient_id, target="psychology", phq9_item9=0, occurred_at=T0 + timedelta(days=1)
        ),
    )
    services.pathway_document(patient_id, coordinator.uow(PSYCHOLOGIST), PSYCHOLOGIST)


def test_the_teams_with_access_follow_the_referrals_state() -> None:
    """Issue 12: the pathway's teams are those with an active part, as the fold sees it
    (so a rebuild gives the same access)."""
    from services.coordinator.projection import active_teams, project

    patient_id, referral_id = uuid4(), uuid4()
    received = referral_received(
        patient_id, referral_id=referral_id, target="psychology", phq9_item9=0
    )
    at = T0 + timedelta(minutes=5)
    rejected = _ended(
        patient_id,
        referral_id,
        ReferralRejected(referral_id=referral_id, target="psychology", rejected_at=at),
        5,
    )
    assert active_teams(project(patient_id, [received])) == ["psychology"]
    assert active_teams(project(patient_id, [received, rejected])) == []
