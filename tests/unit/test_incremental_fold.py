"""Issue 15: an event that comes after a patient's others is applied to the fold of the
events before it; a late one, or a fold another process has moved on from, folds the
whole history again. Either way the pathway is the fold of every stored event."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.coordinator import handlers
from services.coordinator.app import SPEC
from services.coordinator.handlers import FOLDS, FoldCache, handle_event, rebuild_pathways
from services.coordinator.models import PathwayAlert, PathwayRow
from services.coordinator.projection import Fold, finish, fold_history, project
from shared.db import make_engine, make_session_factory
from shared.events import Envelope
from shared.migrations import upgrade
from shared.policy import clinical_policy

from .factories import T0, patient_registered, referral_received
from .test_projection_properties import EVENTS, PATIENT, generated_history

Sessions = Callable[[], Session]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated coordinator database, copied for each test (and each example)."""
    path = tmp_path_factory.mktemp("coordinator") / "template.sqlite3"
    upgrade(SPEC.migrations_dir, f"sqlite:///{path}")
    return path


def fresh_database(template: Path, folder: Path) -> tuple[Engine, Sessions]:
    path = folder / f"{uuid4().hex}.sqlite3"
    shutil.copy(template, path)
    engine = make_engine(f"sqlite:///{path}")
    return engine, make_session_factory(engine)


@pytest.fixture
def database(template: Path, tmp_path: Path) -> Iterator[tuple[Engine, Sessions]]:
    FOLDS.clear()
    engine, sessions = fresh_database(template, tmp_path)
    yield engine, sessions
    engine.dispose()
    FOLDS.clear()


@pytest.fixture
def history_reads(monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """The patients whose whole stored history the handler read, one entry a read."""
    reads: list[UUID] = []
    original = handlers.stored_events

    def counted(session: Session, patient_id: UUID) -> list[Envelope]:
        reads.append(patient_id)
        return original(session, patient_id)

    monkeypatch.setattr(handlers, "stored_events", counted)
    return reads


def consume(sessions: Sessions, envelope: Envelope) -> None:
    with sessions() as session:
        handle_event(session, envelope)
        session.commit()


def stored_document(sessions: Sessions, patient_id: UUID) -> dict[str, Any]:
    with sessions() as session:
        row = session.get(PathwayRow, patient_id)
        assert row is not None
        return row.document


def expected_document(patient_id: UUID, events: list[Envelope]) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(project(patient_id, events))
    return document


def encoded(fold: Fold) -> bytes:
    return msgspec.json.encode(finish(fold))


@st.composite
def arrivals(draw: st.DrawFn, history: list[Envelope]) -> list[Envelope]:
    """The history as the broker might deliver it: shuffled, or in order but for a few
    events that come late."""
    if draw(st.booleans()):
        return list(draw(st.permutations(history)))
    delivered = sorted(history, key=lambda e: (e.occurred_at, e.sequence, str(e.event_id)))
    for _ in range(draw(st.integers(0, 3))):
        late = delivered.pop(draw(st.integers(0, len(delivered) - 1)))
        delivered.insert(draw(st.integers(0, len(delivered))), late)
    return delivered


# --- the fold alone ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_applying_events_one_at_a_time_equals_folding_them_all(data: st.DataObject) -> None:
    """Each arrival in order is applied; a late one re-folds what has arrived. After
    every arrival the pathway is the fold of everything so far, and applying never
    changes a pathway already finished."""
    history = data.draw(generated_history())
    received: list[Envelope] = []
    fold: Fold | None = None
    for envelope in data.draw(arrivals(history)):
        received.append(envelope)
        if fold is not None and fold.follows(envelope):
            before = finish(fold)
            frozen = msgspec.json.encode(before)
            fold.apply(envelope)
            assert msgspec.json.encode(before) == frozen
        else:
            fold = fold_history(PATIENT, received)
        assert encoded(fold) == msgspec.json.encode(project(PATIENT, received))


def test_an_event_at_or_before_the_last_folded_does_not_follow() -> None:
    fold = fold_history(PATIENT, EVENTS[:5])
    assert fold.event_count == 5
    assert fold.follows(EVENTS[5])
    assert not fold.follows(EVENTS[4])  # the same event again
    assert not fold.follows(EVENTS[2])
    same_time = msgspec.structs.replace(EVENTS[5], occurred_at=EVENTS[4].occurred_at, sequence=0)
    assert not fold.follows(same_time)  # same moment, a lower sequence: sorts before it


# --- through the consumer ---------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_consuming_in_any_order_stores_the_fold_of_every_event(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    history = data.draw(generated_history())
    engine, sessions = fresh_database(template, tmp_path_factory.mktemp("example"))
    try:
        received: list[Envelope] = []
        for envelope in data.draw(arrivals(history)):
            consume(sessions, envelope)
            received.append(envelope)
            assert stored_document(sessions, PATIENT) == expected_document(PATIENT, received)
        with sessions() as session:
            assert rebuild_pathways(session, repair=False) == []
            alerts = session.exec(select(PathwayAlert).where(PathwayAlert.patient_id == PATIENT))
            rows = {row.id: (row.kind, row.status, row.due) for row in alerts}
        folded = project(PATIENT, history).alerts
        assert rows == {alert.id: (alert.kind, alert.status, alert.due) for alert in folded}
    finally:
        engine.dispose()


def journey(patient: UUID) -> list[Envelope]:
    """Registered, then three referrals an hour apart (the last asks about item 9)."""
    return [
        patient_registered(patient),
        *(
            referral_received(
                patient, occurred_at=T0 + timedelta(hours=hours), phq9_item9=int(hours == 3)
            )
            for hours in (1, 2, 3)
        ),
    ]


def test_an_event_in_order_reads_no_history_and_a_late_one_reads_it_all(
    database: tuple[Engine, Sessions], history_reads: list[UUID]
) -> None:
    engine, sessions = database
    patient = uuid4()
    registered, first, second, third = events = journey(patient)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    consume(sessions, registered)
    assert history_reads == [patient]  # nothing kept yet: the store is read
    statements.clear()
    consume(sessions, first)
    consume(sessions, third)
    assert history_reads == [patient]  # both came after the others: applied
    assert not [s for s in statements if "stored_event.envelope" in s]

    consume(sessions, second)  # earlier than the third: folded again from the store
    assert history_reads == [patient, patient]
    assert stored_document(sessions, patient) == expected_document(patient, events)


def test_an_unchanged_alert_row_is_not_written_again(
    database: tuple[Engine, Sessions],
) -> None:
    engine, sessions = database
    patient = uuid4()
    registered, first, second, third = journey(patient)
    for envelope in (registered, first, second, third):
        consume(sessions, envelope)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    later = referral_received(patient, occurred_at=T0 + timedelta(hours=4))
    consume(sessions, later)
    writes = [s.split()[:3] for s in statements if s.startswith(("INSERT", "UPDATE", "DELETE"))]
    assert not [w for w in writes if "pathway_alert" in w]
    assert [w for w in writes if "pathway" in w] == [["UPDATE", "pathway", "SET"]]


def test_a_fold_another_process_moved_on_from_is_folded_again(
    database: tuple[Engine, Sessions], history_reads: list[UUID]
) -> None:
    """Two workers: this one kept the fold of the first two events; the other folded
    the third. The fourth comes after all of them, but this worker's fold lacks the
    third: the stored pathway's fold id says so, and the whole history is read."""
    _, sessions = database
    patient = uuid4()
    registered, first, second, third = events = journey(patient)
    consume(sessions, registered)
    consume(sessions, first)
    ours = FOLDS.take(patient)
    assert ours is not None
    consume(sessions, second)  # the other worker (it keeps nothing of ours)
    FOLDS.keep(patient, ours.fold_id, ours.fold)
    history_reads.clear()

    consume(sessions, third)
    assert history_reads == [patient]
    assert stored_document(sessions, patient) == expected_document(patient, events)


def test_a_fold_whose_transaction_rolled_back_is_folded_again(
    database: tuple[Engine, Sessions], history_reads: list[UUID]
) -> None:
    _, sessions = database
    patient = uuid4()
    registered, first, second, _ = journey(patient)
    consume(sessions, registered)
    with sessions() as session:
        handle_event(session, first)
        session.rollback()  # the fold of `first` is kept, its write is not
    history_reads.clear()
    consume(sessions, second)
    assert history_reads == [patient]
    assert stored_document(sessions, patient) == expected_document(patient, [registered, second])


def test_a_rebuild_makes_the_next_event_fold_again(
    database: tuple[Engine, Sessions], history_reads: list[UUID]
) -> None:
    _, sessions = database
    patient = uuid4()
    registered, first, second, third = events = journey(patient)
    for envelope in (registered, first, second):
        consume(sessions, envelope)
    kept = FOLDS.take(patient)
    assert kept is not None
    with sessions() as session:
        row = session.get(PathwayRow, patient)
        assert row is not None
        row.document = {**row.document, "stage": "discharged"}  # tampered
        session.add(row)
        session.commit()
    with sessions() as session:
        assert rebuild_pathways(session) == [patient]  # another process: a new fold id
    FOLDS.keep(patient, kept.fold_id, kept.fold)
    history_reads.clear()
    consume(sessions, third)
    assert history_reads == [patient]
    assert stored_document(sessions, patient) == expected_document(patient, events)


def test_a_fold_made_under_another_policy_is_folded_again(
    database: tuple[Engine, Sessions], history_reads: list[UUID]
) -> None:
    """A policy read again (its thresholds may have changed) may raise other alerts."""
    _, sessions = database
    patient = uuid4()
    registered, first, second, _ = journey(patient)
    consume(sessions, registered)
    consume(sessions, first)
    history_reads.clear()
    clinical_policy.cache_clear()
    consume(sessions, second)
    assert history_reads == [patient]


def test_the_cache_keeps_the_most_recently_written_folds_up_to_its_events() -> None:
    cache = FoldCache(max_events=10)
    folds = {n: fold_history(PATIENT, EVENTS[:n]) for n in (4, 5, 6, 11)}
    first, second, third = uuid4(), uuid4(), uuid4()
    cache.keep(first, uuid4(), folds[4])
    cache.keep(second, uuid4(), folds[5])
    assert len(cache) == 2
    cache.keep(third, uuid4(), folds[6])  # 15 events: the least recently kept goes
    assert cache.take(first) is None
    assert cache.take(second) is None  # 11 events: still one too many
    kept = cache.take(third)
    assert kept is not None and kept.fold is folds[6]
    assert cache.take(third) is None  # taken out while it is carried on
    cache.keep(first, uuid4(), folds[11])  # longer than the whole cache holds
    assert len(cache) == 0
