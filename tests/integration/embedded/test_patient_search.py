"""Finding a patient by name or NHS number (issue 13): among the patients the caller may
see, every one shown audited, never the text searched for."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from sqlmodel import select

from shared.auth import Role
from shared.tables import AuditRecord
from tests.embedded import Embedded, assert_problem, embedded_app, patient_body
from tests.integration.embedded.test_dashboard import page, sign_in


def _register(app: Embedded, user: str, **names: str) -> str:
    response = app.client.post(
        "/api/patients", json=patient_body(**names), headers=app.headers(Role.referrer, user)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _search(app: Embedded, text: str, role: Role, user: str = "unit-user") -> list[str]:
    response = app.client.get("/api/patients", params={"q": text}, headers=app.headers(role, user))
    assert response.status_code == 200, response.text
    return [f"{p['given_name']} {p['family_name']}" for p in response.json()["items"]]


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Embedded:
    with embedded_app(tmp_path_factory.mktemp("search")) as app:
        _register(app, "dr-gp-one", given_name="Adaeze", family_name="Okonkwo")
        _register(
            app, "dr-gp-one", given_name="Brian", family_name="Adams", nhs_number="943 476 5919"
        )
        _register(app, "dr-gp-two", given_name="Ada", family_name="Lovelace")
        yield app


def test_the_mdt_finds_every_patient_whose_name_begins_so(clinic: Embedded) -> None:
    assert _search(clinic, "ad", Role.mdt) == ["Brian Adams", "Ada Lovelace", "Adaeze Okonkwo"]
    assert _search(clinic, "LOVE", Role.mdt) == ["Ada Lovelace"]
    assert _search(clinic, "zz", Role.mdt) == []


def test_an_nhs_number_finds_its_patient_with_or_without_spaces(clinic: Embedded) -> None:
    assert _search(clinic, "943 476 5919", Role.mdt) == ["Brian Adams"]
    assert _search(clinic, "9434765919", Role.mdt) == ["Brian Adams"]
    assert _search(clinic, "9434765910", Role.mdt) == []


def test_a_referrer_finds_only_the_patients_they_registered(clinic: Embedded) -> None:
    assert _search(clinic, "ad", Role.referrer, "dr-gp-one") == ["Brian Adams", "Adaeze Okonkwo"]
    assert _search(clinic, "ad", Role.referrer, "dr-gp-two") == ["Ada Lovelace"]
    assert _search(clinic, "943 476 5919", Role.referrer, "dr-gp-two") == []


def test_an_admin_cannot_search_and_the_text_must_say_enough(clinic: Embedded) -> None:
    refused = clinic.client.get(
        "/api/patients", params={"q": "ad"}, headers=clinic.headers(Role.admin)
    )
    assert_problem(refused, 403)
    short = clinic.client.get("/api/patients", params={"q": "a"}, headers=clinic.headers(Role.mdt))
    assert_problem(short, 422, "q")
    missing = clinic.client.get("/api/patients", headers=clinic.headers(Role.mdt))
    assert assert_problem(missing, 400, "q")["detail"] == "q is missing"
    for wildcard in ("%%", "__"):
        assert _search(clinic, wildcard, Role.mdt) == []


def test_every_patient_shown_is_audited_and_the_search_text_is_not(tmp_path: Path) -> None:
    with embedded_app(tmp_path) as app:
        first = _register(app, "dr-gp-one", given_name="Grace", family_name="Hopper")
        _register(app, "dr-gp-one", given_name="Grete", family_name="Hermann")
        assert _search(app, "gr", Role.mdt, "dr-mdt-lead") == ["Grete Hermann", "Grace Hopper"]
        with app.runtime("referrals").sessions() as session:
            mine = AuditRecord.agent_user == "dr-mdt-lead"
            rows = session.exec(select(AuditRecord).where(mine)).all()
        shown = [r.patient_id for r in rows if r.patient_id]
        assert len(set(shown)) == len(shown) == 2
        assert UUID(first) in shown
        assert all("gr" not in (r.detail or "").lower() for r in rows)


def test_the_find_a_patient_page_lists_and_links_the_matches(clinic: Embedded) -> None:
    sign_in(clinic, "dr-mdt-lead", Role.mdt)
    assert 'href="/patients">Find a patient' in page(clinic, "/status")
    found = page(clinic, "/patients?q=ad")
    assert "3 patients found" in found
    assert found.index("Adams, Brian") < found.index("Lovelace, Ada")
    assert 'href="/patients/' in found
    assert "Type at least two letters" in page(clinic, "/patients?q=a")
    sign_in(clinic, "psy-jones", Role.psychologist)
    assert "0 patients found" in page(clinic, "/patients?q=ad")  # none on her list yet
    sign_in(clinic, "admin-kim", Role.admin)
    page(clinic, "/patients?q=ad", status=403)


def _names(app: Embedded, ids: list[str], role: Role, user: str = "unit-user") -> list[str]:
    response = app.client.get(
        "/api/patients/names", params={"id": ids}, headers=app.headers(role, user)
    )
    assert response.status_code == 200, response.text
    return sorted(f"{p['given_name']} {p['family_name']}" for p in response.json()["items"])


def test_a_page_of_names_comes_in_one_call_with_only_the_patients_the_caller_may_see(
    tmp_path: Path,
) -> None:
    with embedded_app(tmp_path) as app:
        hopper = _register(app, "dr-gp-one", given_name="Grace", family_name="Hopper")
        hermann = _register(app, "dr-gp-two", given_name="Grete", family_name="Hermann")
        unknown = "00000000-0000-4000-8000-000000000000"
        both = [hopper, hermann, unknown]
        assert _names(app, both, Role.mdt, "dr-mdt-lead") == ["Grace Hopper", "Grete Hermann"]
        assert _names(app, both, Role.referrer, "dr-gp-one") == ["Grace Hopper"]
        assert _names(app, both, Role.psychologist, "psy-jones") == []
        response = app.client.get(
            "/api/patients/names", params={"id": [hopper]}, headers=app.headers(Role.mdt)
        )
        assert set(response.json()["items"][0]) == {"id", "given_name", "family_name"}
        with app.runtime("referrals").sessions() as session:
            rows = session.exec(select(AuditRecord).where(AuditRecord.detail == "names")).all()
        # Each patient shown once to the MDT, once to their referrer; nobody else.
        assert sorted((r.agent_user, str(r.patient_id)) for r in rows) == sorted(
            [
                ("dr-mdt-lead", hopper),
                ("dr-mdt-lead", hermann),
                ("dr-gp-one", hopper),
                ("unit-user", hopper),
            ]
        )


def test_names_are_asked_for_by_valid_ids_and_at_most_a_page_at_once(clinic: Embedded) -> None:
    headers = clinic.headers(Role.mdt)
    none = clinic.client.get("/api/patients/names", headers=headers)
    assert_problem(none, 400, "id")
    bad = clinic.client.get("/api/patients/names", params={"id": ["not-a-uuid"]}, headers=headers)
    assert_problem(bad, 422, "id")
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(201)]
    too_many = clinic.client.get("/api/patients/names", params={"id": ids}, headers=headers)
    assert_problem(too_many, 422, "id")
    assert_problem(
        clinic.client.get(
            "/api/patients/names", params={"id": ids[:1]}, headers=clinic.headers(Role.admin)
        ),
        403,
    )
