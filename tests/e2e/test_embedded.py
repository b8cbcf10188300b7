"""`carepath up` as a subprocess, driven over HTTP with the typed httpx client."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from services.coordinator.views import HEARTBEAT
from shared.client import ApiProblem, CarepathClient
from tests.support import (
    JWT_SECRET,
    LiveStream,
    Processes,
    carepath,
    free_port,
    patient_body,
    referral_body,
    token,
    wait_for_http,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]


def _embedded_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
    env["CAREPATH_JWT_SECRET"] = JWT_SECRET
    return env


def _count(database: Path, query: str) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute(query).fetchone()[0])


def test_carepath_up_carries_a_referral_to_the_pathway_and_stops_cleanly(
    tmp_path: Path, processes: Processes
) -> None:
    port = free_port()
    data_dir = tmp_path / "clinic-data"
    up = processes.start(
        "up", carepath("up", "--port", str(port), "--data-dir", str(data_dir)), _embedded_env()
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health")
    assert httpx.get(f"{base}/ready").json()["status"] == "ready"
    assert httpx.get(f"{base}/schema/openapi.json").status_code == 200

    with CarepathClient(base, token("referrer"), correlation_id="e2e-embedded") as referrer:
        patient = referrer.register_patient(**patient_body(nhs_number="943 476 5919"))
        referral = referrer.create_referral(**referral_body(str(patient.id)))
    assert referral.status == "received" and referral.patient_id == patient.id

    with CarepathClient(base, token("mdt")) as mdt:
        pathway = wait_until(
            lambda: _pathway_if_complete(mdt, patient.id), timeout=20, what="the pathway"
        )
    assert pathway.stage == "referred"
    assert [alert.kind for alert in pathway.alerts] == []  # baseline item 9 was 0

    # The live stream, over real HTTP: the change just made is in it (it looks back a few
    # seconds), as a summary without the name. It stays open through Ctrl-C below.
    stream = LiveStream(f"{base}/api/pathways/stream", token("admin"))
    stream.start()
    wait_until(lambda: stream.saw(str(patient.id), "referred"), timeout=20, what="the stream")
    assert "Test" not in stream.text
    # A change made now is woken into the open stream by the worker thread that folded
    # it, well before the stream's own look at its next heartbeat.
    seconds = stream.seconds_to_see_a_referral(base, token("referrer"))
    assert seconds < HEARTBEAT.total_seconds() / 3

    # SQLite is written by the API and the worker threads at once: concurrent referrals
    # must all succeed (WAL, a busy timeout, BEGIN IMMEDIATE), none with a 500.
    def refer_once(_: int) -> int:
        with CarepathClient(base, token("referrer")) as client:
            client.create_referral(**referral_body(str(patient.id), target="pain-mdt"))
        return 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(refer_once, range(24))) == 24
    with CarepathClient(base, token("mdt")) as mdt:
        wait_until(
            lambda: len(mdt.pathway(str(patient.id)).timeline) == 26,
            timeout=30,
            what="all 24 concurrent referrals on the pathway",
        )

    # Bad input is a problem+json that names the field, and writes nothing.
    with CarepathClient(base, token("referrer")) as referrer:
        with pytest.raises(ApiProblem) as invalid:
            referrer.register_patient(**patient_body(nhs_number="9434765918"))
        with pytest.raises(ApiProblem) as duplicate:
            referrer.register_patient(**patient_body(nhs_number="9434765919"))
    assert invalid.value.status == 422
    assert invalid.value.body["errors"][0]["field"] == "nhs_number"
    assert duplicate.value.status == 409
    assert duplicate.value.body["existing_patient_id"] == str(patient.id)
    with CarepathClient(base) as anonymous, pytest.raises(ApiProblem) as unauthenticated:
        anonymous.pathway(patient.id)
    assert unauthenticated.value.status == 401

    # The service's own feed answers below its base URL.
    with CarepathClient(f"{base}/referrals", token("service", "coordinator")) as feed:
        page = feed.events(after=0)
    assert [item["type"] for item in page.items][:2] == ["patient.registered", "referral.received"]
    assert len(page.items) == 26 + 2  # the first patient's events and the newcomer's two

    # Ctrl-C: the process ends by itself, leaving no unsent outbox row behind.
    assert stream.is_alive(), "the stream should still be open when the stop begins"
    up.send_signal(signal.SIGINT)
    assert up.wait(20) == 0
    stream.join(5)
    referrals_db = data_dir / "referrals.sqlite3"
    assert (
        _count(referrals_db, "SELECT count(*) FROM patient") == 2
    )  # and the newcomer the live stream saw
    assert _count(referrals_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
    assert _count(referrals_db, "SELECT count(*) FROM audit_log WHERE outcome = '0'") >= 2
    coordinator_db = data_dir / "coordinator.sqlite3"
    assert _count(coordinator_db, "SELECT count(*) FROM audit_log WHERE outcome = '4'") == 1
    assert "Test" not in processes.log("up"), "a patient's name reached the log"


def _pathway_if_complete(client: CarepathClient, patient_id: object) -> object:
    try:
        pathway = client.pathway(str(patient_id))
    except ApiProblem:
        return None
    if {"patient.registered", "referral.received"} <= {item.type for item in pathway.timeline}:
        return pathway
    return None


def test_carepath_clock_moves_the_running_system_and_says_what_it_raised(
    tmp_path: Path, processes: Processes
) -> None:
    """A trainer's clock (issue 12): `carepath clock` talks to the running system, which
    moves as one; the coordinator's time rules run at once."""
    port = free_port()
    env = _embedded_env()
    processes.start(
        "up", carepath("up", "--port", str(port), "--data-dir", str(tmp_path / "data")), env
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health")
    with CarepathClient(base, token("referrer")) as referrer:
        patient = referrer.register_patient(**patient_body())
        referrer.create_referral(**referral_body(str(patient.id), priority="urgent"))
    with CarepathClient(base, token("mdt")) as mdt:
        # The registration makes the pathway first: wait for the referral on it, or the
        # clock would be moved before there is a triage to be overdue.
        wait_until(lambda: _referral_folded(mdt, str(patient.id)), what="the referral")

    def clock(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            carepath("clock", *args),
            env={**env, "CAREPATH_BASE_URL": base},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    shown = clock("show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("clinic time ") and "from the system clock" not in shown.stdout

    advanced = clock("advance", "1w")
    assert advanced.returncode == 0, advanced.stderr
    assert "(+7 days, 0:00:00" in advanced.stdout
    assert "alert(s) raised" in advanced.stdout
    with CarepathClient(base, token("mdt")) as mdt:
        kinds = {alert.kind for alert in mdt.pathway(patient.id).alerts}
    assert "triage-overdue" in kinds

    refused = clock("advance", "soon")
    assert refused.returncode != 0
    assert "not a duration" in refused.stderr


def _referral_folded(client: CarepathClient, patient_id: str) -> bool:
    try:
        pathway = client.pathway(patient_id)
    except ApiProblem:
        return False
    return "referral.received" in {item.type for item in pathway.timeline}
