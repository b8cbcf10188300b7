"""Every service's API and worker as its own process, on PostgreSQL and Redis."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from services.coordinator.views import HEARTBEAT
from shared.auth import SESSION_COOKIE
from shared.client import ApiProblem, CarepathClient
from tests.support import (
    JWT_SECRET,
    REDIS_TEST_URL,
    SERVICES,
    LiveStream,
    Processes,
    carepath,
    free_port,
    patient_body,
    postgres_databases,
    referral_body,
    token,
    wait_for_http,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def distributed_env() -> Iterator[dict[str, str]]:
    namespace = f"cp-e2e-{uuid.uuid4().hex[:8]}"
    with postgres_databases("cp_e2e", SERVICES) as urls:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
        env.update(
            {
                "CAREPATH_ENV": "production",
                "CAREPATH_JWT_SECRET": JWT_SECRET,
                "CAREPATH_REDIS_URL": REDIS_TEST_URL,
                "CAREPATH_REDIS_NAMESPACE": namespace,
                "CAREPATH_RELAY_INTERVAL_S": "0.5",
            }
        )
        for service in SERVICES:
            env[f"CAREPATH_{service.upper()}_DATABASE_URL"] = urls[service]
            env[f"CAREPATH_{service.upper()}_URL"] = f"http://127.0.0.1:{free_port()}"
        yield env
    client = redis.Redis.from_url(REDIS_TEST_URL)
    keys = list(client.scan_iter(f"{namespace}*"))
    if keys:
        client.delete(*keys)


def test_each_service_as_its_own_processes_carries_the_slice(
    distributed_env: dict[str, str], processes: Processes
) -> None:
    env = distributed_env
    for service in SERVICES:
        migrated = subprocess.run(
            carepath("migrate", service),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
    for service in SERVICES:
        port = env[f"CAREPATH_{service.upper()}_URL"].rsplit(":", 1)[1]
        processes.start(f"{service}-api", carepath("serve", service, "--port", port), env)
        processes.start(f"{service}-worker", carepath("worker", service), env)
    for service in SERVICES:
        url = env[f"CAREPATH_{service.upper()}_URL"]
        wait_for_http(f"{url}/health")
        readiness = httpx.get(f"{url}/ready").json()
        assert readiness["checks"] == {
            f"{service}.database": "ok",
            "broker": "ok",
            f"{service}.feeds": "ok",
        }

    referrals_url = env["CAREPATH_REFERRALS_URL"]
    with CarepathClient(referrals_url, token("referrer")) as referrer:
        patient = referrer.register_patient(**patient_body())
        referral = referrer.create_referral(
            **referral_body(
                str(patient.id),
                target="psychology",
                prior_treatments=[],
                baseline={"phq9_items": [2, 2, 2, 2, 2, 2, 2, 2, 1]},
            )
        )
    assert referral.status == "received"

    with CarepathClient(env["CAREPATH_COORDINATOR_URL"], token("mdt")) as mdt:

        def pathway_with_referral() -> object:
            try:
                found = mdt.pathway(patient.id)
            except ApiProblem:
                return None
            return found if any(e.type == "referral.received" for e in found.timeline) else None

        pathway = wait_until(pathway_with_referral, timeout=30, what="the distributed pathway")
    assert pathway.stage == "referred"
    # PHQ-9 item 9 answered 1 at baseline: the urgent safety alert is on the pathway.
    assert [(a.kind, a.severity, a.status) for a in pathway.alerts] == [
        ("phq9-item9", "urgent", "open")
    ]

    # A wrong role is refused by the service that owns the route.
    with (
        CarepathClient(referrals_url, token("admin")) as admin,
        pytest.raises(ApiProblem) as denied,
    ):
        admin.create_referral(**referral_body(str(patient.id)))
    assert denied.value.status == 403
    # The referrals service's feed gives a consumer its events in order, over HTTP.
    with CarepathClient(referrals_url, token("service", "coordinator")) as feed:
        page = feed.events(after=0)
    assert [item["sequence"] for item in page.items] == [1, 1]
    assert [item["type"] for item in page.items] == ["patient.registered", "referral.received"]

    # The coordinator asks the referrals service, over HTTP and as the reader, for the
    # name; and an MDT decision to refer makes the referral there, as the reviewer.
    coordinator = env["CAREPATH_COORDINATOR_URL"]
    mdt_headers = {"Authorization": f"Bearer {token('mdt', 'dr-mdt-lead')}"}
    shown = httpx.get(f"{coordinator}/api/pathways/{patient.id}", headers=mdt_headers).json()
    assert (shown["patient_name"], shown["name_status"]) == ("Test Patient", "shown")
    review = httpx.post(
        f"{coordinator}/api/pathways/{patient.id}/reviews",
        headers=mdt_headers,
        json={
            "attendees": ["Dr Pain", "Dr Mood"],
            "decision": "refer-psychology",
            "referral": {"reason": "CBT alongside infusions", "conditions": ["depression"]},
        },
    )
    assert review.status_code == 201, review.text
    referral_id = review.json()["referral_id"]

    def pathway_with_the_mdt_referral() -> dict[str, object] | None:
        found = httpx.get(f"{coordinator}/api/pathways/{patient.id}", headers=mdt_headers)
        referrals = found.json()["streams"]["referrals"]
        return found.json() if any(r["id"] == referral_id for r in referrals) else None

    after = wait_until(pathway_with_the_mdt_referral, timeout=30, what="the MDT's referral")
    targets = [(r["id"], r["target"]) for r in after["streams"]["referrals"]]
    assert targets == [(str(referral.id), "psychology"), (referral_id, "psychology")]
    assert [r["decision"] for r in after["streams"]["mdt_reviews"]] == ["refer-psychology"]

    # The web service on its own (issue 13): pages only, no database; every page reads and
    # every form writes through the services' APIs as the signed-in person.
    web = f"http://127.0.0.1:{free_port()}"
    processes.start("web", carepath("serve", "web", "--port", web.rsplit(":", 1)[1]), env)
    wait_for_http(f"{web}/health")
    session = f"{SESSION_COOKIE}={token('mdt', 'dr-mdt-lead')}"
    with httpx.Client(base_url=web, timeout=30.0) as browser:
        page = browser.get(f"/patients/{patient.id}", headers={"Cookie": session})
        assert page.status_code == 200, page.text[:500]
        assert "Test Patient" in page.text and "phq9-item9" in page.text
        csrf = page.cookies["csrftoken"]  # Secure in production: sent by hand over http
        (alert,) = [a for a in after["alerts"] if a["kind"] == "phq9-item9"]  # type: ignore[index]
        acted = browser.post(
            f"/patients/{patient.id}/alerts/{alert['id']}",
            data={"action": "acknowledge", "note": "Called; safe.", "_csrf_token": csrf},
            headers={"Cookie": f"{session}; csrftoken={csrf}", "Origin": web},
        )
        assert acted.status_code == 303 and "done=" in acted.headers["location"], acted.text
        status = browser.get("/status", headers={"Cookie": session})
        assert status.status_code == 200 and 'data-stream="/live/pathways"' in status.text
        with browser.stream("GET", "/live/pathways", headers={"Cookie": session}) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
    acknowledged = httpx.get(f"{coordinator}/api/pathways/{patient.id}", headers=mdt_headers)
    assert [a["status"] for a in acknowledged.json()["alerts"] if a["id"] == alert["id"]] == [
        "acknowledged"
    ]

    # The production clock is the system's: `carepath clock` cannot move it (issue 12).
    moved = subprocess.run(
        carepath("clock", "advance", "3d"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert moved.returncode != 0
    assert "production" in moved.stderr
    shown_clock = subprocess.run(
        carepath("clock", "show"), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert shown_clock.returncode == 0, shown_clock.stderr
    assert "fixed: production" in shown_clock.stdout

    # The live stream is woken through Redis pub/sub by the worker, another process, that
    # folded the change: it arrives well before the stream's own look at its heartbeat.
    stream = LiveStream(f"{coordinator}/api/pathways/stream", token("admin"))
    stream.start()
    time.sleep(1.0)  # subscribed, and past its first look
    seconds = stream.seconds_to_see_a_referral(referrals_url, token("referrer"))
    assert seconds < HEARTBEAT.total_seconds() / 3


def test_a_moved_clock_moves_every_process_alike(
    distributed_env: dict[str, str], processes: Processes
) -> None:
    """Outside production the clock's offset lives in Redis: moved through the coordinator,
    it is the time the referrals service, another process, stamps a referral with."""
    env = {**distributed_env, "CAREPATH_ENV": "development"}
    for service in ("referrals", "coordinator"):
        migrated = subprocess.run(
            carepath("migrate", service), env=env, capture_output=True, text=True, timeout=120
        )
        assert migrated.returncode == 0, migrated.stderr
        port = env[f"CAREPATH_{service.upper()}_URL"].rsplit(":", 1)[1]
        processes.start(f"{service}-api", carepath("serve", service, "--port", port), env)
        wait_for_http(f"{env[f'CAREPATH_{service.upper()}_URL']}/health")

    moved = subprocess.run(
        carepath("clock", "advance", "3d"), env=env, capture_output=True, text=True, timeout=60
    )
    assert moved.returncode == 0, moved.stderr
    assert "(+3 days" in moved.stdout

    referrals_url = env["CAREPATH_REFERRALS_URL"]
    headers = {"Authorization": f"Bearer {token('referrer')}"}

    def received_at() -> datetime | None:
        with CarepathClient(referrals_url, token("referrer")) as referrer:
            patient = referrer.register_patient(**patient_body())
            referral = referrer.create_referral(**referral_body(str(patient.id)))
        read = httpx.get(f"{referrals_url}/api/referrals/{referral.id}", headers=headers)
        stamped = datetime.fromisoformat(read.json()["received_at"])
        return stamped if stamped - datetime.now(UTC) > timedelta(days=2, hours=23) else None

    # Another process reads the offset within its refresh (a second).
    stamped = wait_until(received_at, timeout=10, interval=0.5, what="a referral in moved time")
    assert stamped - datetime.now(UTC) < timedelta(days=3, minutes=1)
