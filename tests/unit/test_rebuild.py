"""`carepath coordinator rebuild`: re-folding the store equals the live projection."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

from services.coordinator.app import SPEC
from services.coordinator.handlers import handle_event, rebuild_pathways
from services.coordinator.models import PathwayRow
from shared.db import make_engine, make_session_factory
from shared.migrations import upgrade

from .factories import T0, patient_registered, referral_received


def test_rebuild_finds_and_repairs_only_a_tampered_pathway(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.sqlite3'}"
    upgrade(SPEC.migrations_dir, url)
    sessions = make_session_factory(make_engine(url))
    patients = [uuid4() for _ in range(3)]
    for patient in patients:
        for event in (
            patient_registered(patient),
            referral_received(patient, occurred_at=T0 + timedelta(hours=1), phq9_item9=1),
        ):
            with sessions() as session:
                handle_event(session, event)
                session.commit()

    with sessions() as session:
        assert rebuild_pathways(session, repair=False) == []  # live equals rebuilt
        row = session.get(PathwayRow, patients[1])
        assert row is not None
        row.document = {**row.document, "stage": "discharged"}
        session.add(row)
        session.commit()

    with sessions() as session:
        assert rebuild_pathways(session, repair=False) == [patients[1]]
        assert rebuild_pathways(session) == [patients[1]]
    with sessions() as session:
        assert rebuild_pathways(session, repair=False) == []
        repaired = session.get(PathwayRow, patients[1])
        assert repaired is not None and repaired.document["stage"] == "referred"

    env = {"CAREPATH_COORDINATOR_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "services.cli", "coordinator", "rebuild", "--check"]
    checked = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("0 pathway(s) differ")
