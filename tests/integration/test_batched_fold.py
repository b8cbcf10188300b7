"""Issue 15, on PostgreSQL: several patients' events consumed in one transaction (as the
coordinator's worker gathers them from a deep queue) give every pathway and alert row
the whole history's fold gives, and a batch takes its patients' locks in one order, so
two transactions that share patients never wait on each other in a circle."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from uuid import UUID, uuid4

import msgspec
import pytest
from sqlmodel import select

from services.coordinator.handlers import FOLDS, handle_events, rebuild_pathways
from services.coordinator.models import PathwayAlert, PathwayRow
from services.coordinator.projection import project
from shared.db import lock_for_transaction
from shared.events import Envelope
from shared.messaging import consume_together
from shared.runtime import ServiceRuntime
from tests.unit.factories import patient_registered
from tests.unit.test_projection_properties import history

from .conftest import Stack

SERVICE = "coordinator"


@pytest.fixture
def coordinator(stack: Stack) -> Iterator[ServiceRuntime]:
    FOLDS.clear()
    runtime = stack.runtime(SERVICE)
    yield runtime
    runtime.close()
    FOLDS.clear()


def history_of(patient_id: UUID) -> list[Envelope]:
    """The property tests' journey (referral, infusions, therapy, alerts), as this patient's."""
    first, *rest = history()
    assert first.type == "patient.registered"
    return [
        patient_registered(patient_id, occurred_at=first.occurred_at),
        *(msgspec.structs.replace(e, patient_id=patient_id, event_id=uuid4()) for e in rest),
    ]


def batches(envelopes: list[Envelope], size: int) -> list[list[Envelope]]:
    return [envelopes[start : start + size] for start in range(0, len(envelopes), size)]


def test_patients_folded_together_equal_their_histories_folded_alone(
    coordinator: ServiceRuntime,
) -> None:
    histories = {patient_id: history_of(patient_id) for patient_id in [uuid4() for _ in range(5)]}
    # Interleaved as a clinic's are, each batch a mix of patients; one event of each
    # patient arrives late, after the events that came after it.
    queue = [e for events in zip(*histories.values(), strict=True) for e in events]
    late = [events[3] for events in histories.values()]
    queue = [e for e in queue if e not in late] + late
    head = queue[:20]
    random.Random(7).shuffle(head)
    queue[:20] = head

    for batch in batches(queue, 7):
        assert all(consume_together(SERVICE, coordinator.sessions, handle_events, batch))
    # A redelivered batch is a no-op.
    assert not any(consume_together(SERVICE, coordinator.sessions, handle_events, queue[:7]))

    with coordinator.sessions() as session:
        assert rebuild_pathways(session, repair=False) == []
        for patient_id, events in histories.items():
            expected = project(patient_id, events)
            row = session.get(PathwayRow, patient_id)
            assert row is not None
            assert row.document == msgspec.to_builtins(expected)
            assert row.event_count == len(events)
            alert_rows = session.exec(
                select(PathwayAlert).where(PathwayAlert.patient_id == patient_id)
            ).all()
            assert {(a.id, a.status) for a in alert_rows} == {
                (a.id, a.status) for a in expected.alerts
            }
            assert expected.alerts  # the journey raises alerts: the rows are compared


def test_two_workers_batches_that_share_patients_both_commit(
    coordinator: ServiceRuntime,
) -> None:
    patients = [uuid4() for _ in range(6)]
    histories = {p: history_of(p) for p in patients}
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    length = len(histories[patients[0]])

    def worker(order: list[UUID], step: int) -> None:
        try:
            for index in range(step, length - length % 2, 2):
                batch = [histories[p][index] for p in order]
                start.wait(10)
                consume_together(SERVICE, coordinator.sessions, handle_events, batch)
        except BaseException as error:  # a deadlock shows here as psycopg's error
            failures.append(error)
            start.abort()

    # The same patients at once, named in opposite orders: every pathway still ends as
    # the fold of its whole history.
    threads = [
        threading.Thread(target=worker, args=(patients, 0)),
        threading.Thread(target=worker, args=(patients[::-1], 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    if length % 2:
        last = [histories[p][-1] for p in patients]
        consume_together(SERVICE, coordinator.sessions, handle_events, last)
    with coordinator.sessions() as session:
        assert rebuild_pathways(session, repair=False) == []
        counts = {row.patient_id: row.event_count for row in session.exec(select(PathwayRow))}
    assert counts == {p: len(events) for p, events in histories.items()}


def test_a_batch_takes_its_patients_locks_in_one_order(coordinator: ServiceRuntime) -> None:
    first, second = sorted(
        (uuid4() for _ in range(2)), key=lambda p: int.from_bytes(p.bytes[:8], "big", signed=True)
    )
    failures: list[BaseException] = []
    locked = threading.Event()

    def batch_naming_the_second_first() -> None:
        try:
            with coordinator.sessions() as session:
                lock_for_transaction(session, second, first)
                locked.set()
                session.commit()
        except BaseException as error:
            failures.append(error)

    with coordinator.sessions() as session:
        lock_for_transaction(session, first)
        other = threading.Thread(target=batch_naming_the_second_first)
        other.start()
        time.sleep(0.3)  # the batch waits for the first patient, holding nothing
        assert not locked.is_set()
        # Had it taken the second patient first, this would close the circle, and
        # PostgreSQL would end one of the two with a deadlock error after a second.
        lock_for_transaction(session, second)
        session.commit()
    other.join(10)
    assert failures == []
    assert locked.is_set()
