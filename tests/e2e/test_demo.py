"""`carepath up --demo`: a synthetic cohort, seeded through the APIs, once per data folder."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    JWT_SECRET,
    Processes,
    carepath,
    free_port,
    token,
    wait_for_http,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

READY = re.compile(r"demo cohort ready: (\d+) patients in (\d+)s")
NOT_AGAIN = "demo cohort not seeded again"
# Seeding takes about 20 s on a 2-core laptop; CI machines can be several times slower.
SEEDING_TIMEOUT = 90.0
ALERT_KINDS = {
    "phq9-item9",
    "no-response",
    "dna-threshold",
    "vitals-out-of-range",
    "serious-adverse-event",
}


def _embedded_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
    env["CAREPATH_JWT_SECRET"] = JWT_SECRET
    return env


def _get(base: str, path: str, role: str, user: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{base}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token(role, user)}"},
        timeout=10.0,
    )
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:200]}"
    body: dict[str, Any] = response.json()
    return body


def _all(base: str, path: str, role: str, user: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a cursor-paged list."""
    items: list[dict[str, Any]] = []
    params["limit"] = 200
    while True:
        page = _get(base, path, role, user, **params)
        items += page["items"]
        if not page["next_cursor"]:
            return items
        params["cursor"] = page["next_cursor"]


def _pathways(base: str) -> list[dict[str, Any]]:
    return _all(base, "/api/pathways", "mdt", "dr-mdt-lead")


def _open_alert_kinds(base: str) -> set[str]:
    return {alert["kind"] for alert in _all(base, "/api/alerts", "mdt", "dr-mdt-lead")}


def _alert_kinds_if_at_least(base: str, count: int) -> set[str] | None:
    kinds = _open_alert_kinds(base) & ALERT_KINDS
    return kinds if len(kinds) >= count else None


def _patients(data_dir: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(data_dir / "referrals.sqlite3") as connection:
        rows = connection.execute("SELECT given_name, family_name, nhs_number FROM patient")
        return [(str(given), str(family), nhs) for given, family, nhs in rows.fetchall()]


def _start(processes: Processes, name: str, port: int, data_dir: Path) -> str:
    command = carepath("up", "--port", str(port), "--data-dir", str(data_dir), "--demo")
    processes.start(name, command, _embedded_env())
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health", timeout=60)
    return base


def test_carepath_up_demo_seeds_a_living_clinic_once(tmp_path: Path, processes: Processes) -> None:
    data_dir = tmp_path / "demo-data"
    base = _start(processes, "up", free_port(), data_dir)
    up_at = time.monotonic()

    ready = wait_until(
        lambda: (
            READY.search(processes.log("up")) or "demo cohort not seeded" in processes.log("up")
        ),
        timeout=SEEDING_TIMEOUT,
        interval=0.25,
        what="the demo cohort",
    )
    assert isinstance(ready, re.Match), processes.log("up")[-2000:]
    seconds_reported, seconds_seen = int(ready.group(2)), time.monotonic() - up_at
    print(f"\ndemo seeding: {ready.group(0)} (seen by the test after {seconds_seen:.1f}s)")
    assert int(ready.group(1)) == 50
    assert "failed part-way" not in processes.log("up")
    assert seconds_reported < SEEDING_TIMEOUT

    # The coordinator folds the last events a moment after the seeding ends.
    wait_until(lambda: len(_pathways(base)) >= 50, timeout=30, interval=0.5, what="50 pathways")
    kinds = wait_until(
        lambda: _alert_kinds_if_at_least(base, 3),
        timeout=30,
        interval=0.5,
        what="open alerts of three kinds",
    )
    pathways = _pathways(base)
    stages = {pathway["stage"] for pathway in pathways}
    print(f"demo pathways: {len(pathways)}, stages {sorted(stages)}, alerts {sorted(kinds)}")
    assert len(pathways) >= 45
    assert len(stages) >= 5, stages
    assert len(kinds) >= 3, kinds

    # Six months in: waits have passed their due times, so the time rules have spoken,
    # and the waits report goes back months.
    open_kinds = _open_alert_kinds(base)
    assert {"triage-overdue", "waiting-time", "maintenance-overdue"} <= open_kinds, open_kinds
    weeks = _get(base, "/api/reports/waits", "admin", "admin-kim", weeks=30)["weeks"]
    referred_weeks = sorted({week["week_starting"] for week in weeks if week["referred"]})
    first_week = datetime.fromisoformat(referred_weeks[0]).replace(tzinfo=UTC)
    assert datetime.now(UTC) - first_week > timedelta(weeks=16), referred_weeks
    # ... and the clinic clock is back on the system's time.
    clock = _get(base, "/api/clock", "admin", "admin-kim")
    assert abs(clock["offset_seconds"]) < 1, clock

    # The psychologist's inbox has referrals to triage, and a waiting list.
    inbox = _get(
        base, "/api/referrals", "psychologist", "psy-jones", target="psychology", status="received"
    )["items"]
    assert inbox and all(item["target"] == "psychology" for item in inbox)
    waiting = _get(base, "/api/therapy-episodes", "psychologist", "psy-jones", status="waitlist")
    assert waiting["items"]

    # The infusion clinic has given infusions, and some courses are into maintenance.
    courses = _get(base, "/api/infusion-courses", "infusion-clinician", "nurse-okafor")["items"]
    assert any(course["completed_sessions"] >= 1 for course in courses)
    assert any(course.get("maintenance_due_at") for course in courses)

    # Nobody's name or NHS number reached the log.
    patients = _patients(data_dir)
    assert len(patients) == 50
    log = processes.log("up")
    for given, family, nhs_number in patients:
        assert not re.search(rf"\b{re.escape(family)}\b", log), "a family name reached the log"
        assert f"{given} {family}" not in log, "a name reached the log"
        assert nhs_number is None or nhs_number not in log, "an NHS number reached the log"

    # Started again with --demo on the same data: nobody is added.
    processes.stop("up", signal.SIGINT, timeout=20)
    base = _start(processes, "up-again", free_port(), data_dir)
    wait_until(
        lambda: NOT_AGAIN in processes.log("up-again"), timeout=60, interval=0.25, what="the skip"
    )
    assert "demo cohort ready" not in processes.log("up-again")
    assert len(_pathways(base)) == len(pathways)
    assert len(_patients(data_dir)) == 50
