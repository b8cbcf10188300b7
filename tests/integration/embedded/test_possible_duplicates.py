"""Natural duplicates named (issue 16): a second open referral of a patient to the same
team within the policy's window (`requests.possible_duplicate_days`, 30) is taken, and the
inbox marks it as a possible duplicate of the first, with a link."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.auth import Role
from shared.clock import clinic_clock
from tests.embedded import Embedded, referral_body, register


def refer(embedded: Embedded, patient_id: str, target: str = "psychology") -> dict[str, Any]:
    body = referral_body(patient_id, target=target, conditions=["depression"])
    if target == "psychology":
        body["prior_treatments"] = []
    response = embedded.client.post(
        "/api/referrals", json=body, headers=embedded.headers(Role.referrer)
    )
    assert response.status_code == 201, response.text  # never refused
    created: dict[str, Any] = response.json()
    return created


def inbox(embedded: Embedded, role: Role = Role.psychologist) -> dict[str, dict[str, Any]]:
    response = embedded.client.get(
        "/api/referrals", params={"limit": 200}, headers=embedded.headers(role)
    )
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


def test_a_second_referral_to_the_same_team_is_taken_and_marked_with_a_link(
    embedded: Embedded,
) -> None:
    patient_id = register(embedded)
    first = refer(embedded, patient_id)
    second = refer(embedded, patient_id)
    assert "possible_duplicate_of" not in first
    assert second["possible_duplicate_of"]["id"] == first["id"]  # said at once, in the 201
    shown = inbox(embedded)
    assert "possible_duplicate_of" not in shown[first["id"]]
    link = shown[second["id"]]["possible_duplicate_of"]
    assert link["href"] == f"/api/referrals/{first['id']}"
    followed = embedded.client.get(link["href"], headers=embedded.headers(Role.psychologist))
    assert followed.status_code == 200 and followed.json()["id"] == first["id"]


def test_another_team_or_a_closed_first_referral_is_no_duplicate(embedded: Embedded) -> None:
    patient_id = register(embedded)
    first = refer(embedded, patient_id)
    other_team = refer(embedded, patient_id, "pain-mdt")
    assert "possible_duplicate_of" not in other_team
    second = refer(embedded, patient_id)
    assert inbox(embedded)[second["id"]]["possible_duplicate_of"]["id"] == first["id"]
    rejected = embedded.client.post(
        f"/api/referrals/{first['id']}/triage",
        json={"decision": "reject", "reason": "sent twice by mistake"},
        headers=embedded.headers(Role.psychologist),
    )
    assert rejected.status_code == 200, rejected.text
    assert "possible_duplicate_of" not in inbox(embedded)[second["id"]]


def test_a_referral_after_the_window_is_no_duplicate(embedded: Embedded) -> None:
    patient_id = register(embedded)
    refer(embedded, patient_id)
    try:
        clinic_clock().advance(timedelta(days=31))
        later = refer(embedded, patient_id)
    finally:
        clinic_clock().reset()
    assert "possible_duplicate_of" not in later
