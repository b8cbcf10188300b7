"""Finding a registered patient as PDS does (issue 14): an NHS number alone reveals nothing.

The hole this closes: a referrer who knew only an NHS number registered it again, read
the existing patient's id from the 409, referred that patient and then read their name,
birth date and NHS number.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col

from shared.auth import Role
from shared.tables import AuditRecord
from tests.embedded import Embedded, assert_problem, patient_body


def nhs_number(seed: int) -> str:
    """A valid NHS number (modulus 11 check digit) of its own for each test: the embedded
    app is shared by the module's tests."""
    while True:
        digits = [int(d) for d in f"{seed:09d}"]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            return "".join(map(str, digits)) + str(check)
        seed += 1


NUMBERS = iter(nhs_number(412_000_000 + n * 7) for n in range(1000))


@pytest.fixture
def nhs() -> str:
    return next(NUMBERS)


def registered(embedded: Embedded, nhs: str) -> str:
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number=nhs, family_name="Okafor", birth_date="1968-05-01"),
        headers=embedded.headers(Role.referrer, user="dr-first"),
    )
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


def trace(embedded: Embedded, nhs: str, user: str = "dr-second", **details: str) -> Any:
    body = {"nhs_number": nhs, "birth_date": "1968-05-01", "family_name": "Okafor", **details}
    return embedded.client.post(
        "/api/patients/trace", json=body, headers=embedded.headers(Role.referrer, user=user)
    )


def test_registering_a_known_number_with_other_details_names_no_patient(
    embedded: Embedded,
    nhs: str,
) -> None:
    patient_id = registered(embedded, nhs)
    again = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number=nhs, family_name="Smith"),
        headers=embedded.headers(Role.referrer, user="dr-second"),
    )
    body = assert_problem(again, 409, "nhs_number")
    assert patient_id not in again.text
    assert "existing_patient_id" not in body


def test_registering_it_with_the_same_details_names_the_patient_already_there(
    embedded: Embedded,
    nhs: str,
) -> None:
    patient_id = registered(embedded, nhs)
    again = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number=nhs, family_name="okafor ", birth_date="1968-05-01"),
        headers=embedded.headers(Role.referrer, user="dr-second"),
    )
    assert assert_problem(again, 409)["existing_patient_id"] == patient_id


def test_a_trace_with_matching_details_finds_the_patient(embedded: Embedded, nhs: str) -> None:
    patient_id = registered(embedded, nhs)
    found = trace(embedded, nhs, family_name="OKAFOR")
    assert found.status_code == 200, found.text
    assert found.json() == {"id": patient_id}


def test_a_wrong_detail_and_an_unknown_number_get_the_same_answer(
    embedded: Embedded, nhs: str
) -> None:
    registered(embedded, nhs)
    wrong_birth = assert_problem(trace(embedded, nhs, birth_date="1968-05-02"), 404)
    wrong_name = assert_problem(trace(embedded, nhs, family_name="Okafur"), 404)
    unknown = assert_problem(trace(embedded, nhs, nhs_number=next(NUMBERS)), 404)
    assert wrong_birth["detail"] == wrong_name["detail"] == unknown["detail"]
    assert "Okafor" not in str(wrong_name) and nhs not in str(unknown)


def test_every_trace_is_audited_with_its_outcome_and_no_details(
    embedded: Embedded, nhs: str
) -> None:
    patient_id = registered(embedded, nhs)
    trace(embedded, nhs, user="dr-tracer")
    trace(embedded, nhs, user="dr-tracer", family_name="Nobody")
    records = embedded.audit(
        col(AuditRecord.agent_user) == "dr-tracer", col(AuditRecord.detail).contains("trace")
    )
    assert [r.detail.rsplit(": ", 1)[1] for r in records if r.detail] == ["matched", "no match"]
    assert str(records[0].patient_id) == patient_id and records[1].patient_id is None
    assert all("Okafor" not in (r.detail or "") and nhs not in (r.detail or "") for r in records)


def test_a_referrer_who_knows_only_the_number_cannot_reach_the_demographics(
    embedded: Embedded,
    nhs: str,
) -> None:
    patient_id = registered(embedded, nhs)
    stranger = embedded.headers(Role.referrer, user="dr-stranger")
    guess = embedded.client.post(
        "/api/patients", json=patient_body(nhs_number=nhs), headers=stranger
    )
    assert patient_id not in guess.text
    assert_problem(embedded.client.get(f"/api/patients/{patient_id}", headers=stranger), 403)
