"""Benchmark the coordinator clock's scan of open pathways at 10k and 100k patients.

For each size N it makes a throwaway PostgreSQL database migrated with `carepath migrate
coordinator`, folds one real pathway (a psychology referral waiting for triage) and
copies its row N times under new patient ids, straight into the table. A tenth of the
copies are due now (their next-due time has passed), the rest later. Then it times one
`services.coordinator.clock._due_patients` scan, which is what each clock tick reads:

- "every open pathway": next_due NULL on every row, the clock's only choice before the
  next_due column (and for rows written before it): every document is read and checked;
- "next_due": the rows as the fold writes them: only the due tenth is read.

Usage: .venv/bin/python benchmarks/clock_scan.py [--patients 10000 100000]
"""

from __future__ import annotations

import argparse
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
from harness import PG_BASE, create_databases, drop_databases, machine, write_results
from psycopg.types.json import Jsonb

from services.coordinator.app import SPEC
from services.coordinator.clock import _due_patients
from services.coordinator.handlers import handle_event
from services.coordinator.models import PathwayRow
from shared.messaging import make_broker
from shared.runtime import ServiceRuntime
from shared.settings import BrokerKind, PlatformSettings, RunMode, load_service_settings
from tests.unit.factories import patient_registered, referral_received

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def _runtime(database: str) -> ServiceRuntime:
    platform = PlatformSettings(env=RunMode.development, broker=BrokerKind.memory)
    url = f"{PG_BASE}/{database}"
    settings = load_service_settings(
        "coordinator", platform, {"CAREPATH_COORDINATOR_DATABASE_URL": url}
    )
    runtime = ServiceRuntime(SPEC, settings, make_broker(platform))
    runtime.migrate()
    return runtime


def _one_pathway(runtime: ServiceRuntime, received: datetime) -> PathwayRow:
    """A patient referred to psychology at `received`, still waiting for triage."""
    patient = uuid4()
    events = [
        patient_registered(patient, occurred_at=received - timedelta(hours=1)),
        referral_received(patient, occurred_at=received, target="psychology"),
    ]
    with runtime.sessions() as session:
        for envelope in events:
            handle_event(session, envelope)
            session.commit()
        row = session.get(PathwayRow, patient)
        assert row is not None and row.next_due is not None
        return row


def _copy(
    database: str, due: PathwayRow, later: PathwayRow, patients: int, with_next_due: bool
) -> None:
    """The two pathways' rows under new ids: a tenth the one due now, the rest the other."""
    columns = (
        "patient_id, stage, stage_since, open_alerts, teams, event_count, document, "
        "updated_at, next_due"
    )
    url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("DELETE FROM pathway")
        with cursor.copy(f"COPY pathway ({columns}) FROM STDIN") as copy:
            for number in range(patients):
                template = due if number % 10 == 0 else later
                copy.write_row(
                    (
                        uuid4(),
                        template.stage,
                        template.stage_since,
                        0,
                        template.teams,
                        template.event_count,
                        Jsonb(template.document),
                        NOW,
                        template.next_due if with_next_due else None,
                    )
                )
        cursor.execute("ANALYZE pathway")


def _scan(runtime: ServiceRuntime) -> dict[str, Any]:
    began = time.perf_counter()
    due = sum(1 for _ in _due_patients(runtime, NOW))
    return {"seconds": round(time.perf_counter() - began, 3), "due": due}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    database = f"carepath_bench_{secrets.token_hex(4)}_coordinator"
    figures: dict[str, Any] = {}
    create_databases([database])
    try:
        runtime = _runtime(database)
        due = _one_pathway(runtime, NOW - timedelta(days=30))  # triage overdue
        later = _one_pathway(runtime, NOW - timedelta(hours=2))  # triage due in days
        for patients in args.patients:
            row: dict[str, Any] = {}
            for label, with_next_due in (("every open pathway", False), ("next_due", True)):
                _copy(database, due, later, patients, with_next_due)
                row[label] = _scan(runtime)
            figures[str(patients)] = row
        runtime.close()
    finally:
        drop_databases([database])

    print(f"\nOne clock scan (_due_patients) over N open pathways, a tenth due, at {NOW:%F}")
    print(f"{'N':>8}  {'every open pathway':>22}  {'next_due':>18}")
    for patients, row in figures.items():
        every, kept = row["every open pathway"], row["next_due"]
        print(
            f"{patients:>8}  {every['seconds']:>9.3f} s ({every['due']:>6} due)"
            f"  {kept['seconds']:>7.3f} s ({kept['due']:>6} due)"
        )
    path = write_results("clock_scan", {"machine": machine(), "figures": figures})
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
