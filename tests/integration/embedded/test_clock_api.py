"""The clinic clock over HTTP (issue 12, "A clock you can move"): an admin moves it for the
whole running system outside production, and the coordinator's time rules run at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.auth import Role
from shared.clock import clinic_clock, configure_clock
from shared.settings import PlatformSettings, RunMode
from tests.embedded import Embedded, assert_problem, referral_body, register


@pytest.fixture(autouse=True)
def system_time_after() -> Iterator[None]:
    yield
    configure_clock(PlatformSettings())  # the next test starts on the system's clock


def move(embedded: Embedded, action: str, role: Role = Role.admin, **body: Any) -> Any:
    return embedded.client.post(
        f"/api/clock/{action}", json=body or None, headers=embedded.headers(role)
    )


def test_anyone_signed_in_reads_the_clock_on_the_system_time(embedded: Embedded) -> None:
    response = embedded.client.get("/api/clock", headers=embedded.headers(Role.psychologist))
    assert response.status_code == 200, response.text
    reading = response.json()
    assert reading["movable"] is True
    assert reading["offset_seconds"] == 0
    moment = datetime.fromisoformat(reading["now"])
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)
    assert embedded.client.get("/api/clock").status_code == 401


def test_an_admin_advances_and_sets_the_clock_and_every_service_reads_it(
    embedded: Embedded,
) -> None:
    advanced = move(embedded, "advance", by="3d")
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["offset_seconds"] == pytest.approx(3 * 86400, abs=2)
    assert clinic_clock().now() - datetime.now(UTC) > timedelta(days=2, hours=23)

    target = "2031-01-06T09:30:00+00:00"
    assert move(embedded, "set", at=target).status_code == 200
    assert abs(clinic_clock().now() - datetime.fromisoformat(target)) < timedelta(seconds=5)

    assert move(embedded, "reset").json()["offset_seconds"] == pytest.approx(0, abs=1)


@pytest.mark.parametrize("role", [Role.mdt, Role.psychologist, Role.referrer])
def test_only_an_admin_moves_the_clock(embedded: Embedded, role: Role) -> None:
    assert_problem(move(embedded, "advance", role=role, by="1d"), 403)
    assert clinic_clock().offset == timedelta(0)


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("advance", {"by": "three days"}, "by"),
        ("advance", {"by": "-2d"}, "by"),
        ("set", {"at": "2031-01-06T09:30:00"}, "at"),
    ],
)
def test_a_move_it_cannot_make_names_the_field(
    embedded: Embedded, action: str, body: dict[str, str], field: str
) -> None:
    assert_problem(move(embedded, action, **body), 422, field)
    assert clinic_clock().offset == timedelta(0)


def test_a_production_clock_refuses_every_move(embedded: Embedded) -> None:
    configure_clock(PlatformSettings(env=RunMode.production, jwt_secret="p" * 40))
    body = assert_problem(move(embedded, "advance", by="1d"), 403)
    assert "production" in body["detail"]
    reading = embedded.client.get("/api/clock", headers=embedded.headers(Role.admin)).json()
    assert (reading["movable"], reading["offset_seconds"]) == (False, 0)


def test_the_time_rules_run_at_once_after_a_move(embedded: Embedded) -> None:
    """CLINICAL.md, Waiting times: urgent referrals are triaged within 2 working days. A
    trainer who moves the clock a week on sees the overdue triage without waiting."""
    patient_id = register(embedded)
    created = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, priority="urgent"),
        headers=embedded.headers(Role.referrer),
    )
    assert created.status_code == 201, created.text
    # The patient's registration makes the pathway first: wait for the referral on it.
    assert _alert_kinds(embedded, patient_id, until_folded="referral.received") == set()

    reading = move(embedded, "advance", by="7d").json()
    assert reading["alerts_raised"] >= 1
    assert "triage-overdue" in _alert_kinds(embedded, patient_id)


def _alert_kinds(embedded: Embedded, patient_id: str, until_folded: str | None = None) -> set[str]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = embedded.client.get(
            f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt)
        )
        folded = response.status_code == 200 and (
            until_folded is None
            or until_folded in {entry["type"] for entry in response.json()["timeline"]}
        )
        if folded:
            return {alert["kind"] for alert in response.json()["alerts"]}
        time.sleep(0.05)
    raise AssertionError(f"the pathway never showed {until_folded or 'at all'}")


def test_a_move_sent_with_an_idempotency_key_runs_the_rules_without_waiting(
    embedded: Embedded,
) -> None:
    """A client that sends a key with every POST (schemathesis does) must not hold the
    coordinator's database while the time rules write to it (it waited 30 s, then 500)."""
    patient_id = register(embedded)
    embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, priority="urgent"),
        headers=embedded.headers(Role.referrer),
    )
    _alert_kinds(embedded, patient_id, until_folded="referral.received")
    headers = {**embedded.headers(Role.admin), "Idempotency-Key": "move-1"}
    started = time.monotonic()
    moved = embedded.client.post("/api/clock/advance", json={"by": "7d"}, headers=headers)
    assert moved.status_code == 200, moved.text
    assert time.monotonic() - started < 10
    assert "triage-overdue" in _alert_kinds(embedded, patient_id)
    reset = embedded.client.post("/api/clock/reset", headers=headers)
    assert reset.status_code == 200, reset.text
