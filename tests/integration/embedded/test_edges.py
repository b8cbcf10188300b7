"""The edges an attacker or a fuzzer reaches first (issue 14): no input makes a 500, API
bodies are JSON only, and every response carries the browser's safety headers."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from services.referrals.models import Patient
from shared.auth import Role
from tests.embedded import Embedded, assert_problem, embedded_app, patient_body, referral_body


def patients(embedded: Embedded) -> int:
    return embedded.count("referrals", Patient)


def post_patient(embedded: Embedded, content: bytes | str, content_type: str) -> object:
    headers = {**embedded.headers(Role.referrer), "content-type": content_type}
    return embedded.client.post("/api/patients", content=content, headers=headers)


@pytest.mark.parametrize(
    "path", ["/api/pathways", "/api/alerts", "/api/mdt/worklist", "/api/patients", "/api/clock"]
)
def test_options_answers_which_methods_exist_without_a_token(embedded: Embedded, path: str) -> None:
    response = embedded.client.options(path)
    assert response.status_code == 204, response.text
    assert "OPTIONS" in response.headers["allow"]


def test_cors_is_off_unless_origins_are_configured(embedded: Embedded, tmp_path: Path) -> None:
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    refused = embedded.client.options("/api/patients", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers

    with embedded_app(tmp_path / "cors", cors_origins=["https://ehr.clinic.example"]) as allowed:
        ours = {**preflight, "Origin": "https://ehr.clinic.example"}
        response = allowed.client.options("/api/patients", headers=ours)
        assert response.headers["access-control-allow-origin"] == "https://ehr.clinic.example"
        foreign = allowed.client.options("/api/patients", headers=preflight)
        assert "access-control-allow-origin" not in foreign.headers


def test_a_number_past_any_wait_is_refused_naming_the_parameter(embedded: Embedded) -> None:
    response = embedded.client.get(
        "/api/pathways?waiting_over_days=99999999999999", headers=embedded.headers(Role.mdt)
    )
    assert_problem(response, 422, "waiting_over_days")


def test_a_json_body_sent_as_text_or_a_form_is_refused_and_nothing_is_written(
    embedded: Embedded,
) -> None:
    before = patients(embedded)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = post_patient(embedded, json.dumps(patient_body()), content_type)
        body = assert_problem(response, 415)
        assert "application/json" in body["detail"]
    assert patients(embedded) == before


def test_a_body_nested_ten_thousand_deep_is_a_400_not_a_crash(embedded: Embedded) -> None:
    body = assert_problem(
        post_patient(embedded, "[" * 10_000 + "]" * 10_000, "application/json"), 400
    )
    assert "deeper than" in body["detail"]


def test_bytes_that_are_not_utf8_are_a_400(embedded: Embedded) -> None:
    response = post_patient(embedded, b'{"given_name": "\xff\xfe"}', "application/json")
    assert "UTF-8" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize("value", ["Ann\u0000", "A\u0007nn", "Ann\u001b[31m", "Ann\u007f"])
def test_a_control_character_in_a_name_is_refused_naming_the_field(
    embedded: Embedded, value: str
) -> None:
    before = patients(embedded)
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(family_name=value),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 422, "family_name")
    assert patients(embedded) == before


def test_line_breaks_and_tabs_in_free_text_are_kept(embedded: Embedded) -> None:
    """A referral reason is free text: a clinician's line breaks are not control characters."""
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(given_name="Ann"),
        headers=embedded.headers(Role.referrer),
    )
    assert response.status_code == 201, response.text
    reason = "CRPS of the right hand.\n\tLow mood\r\nfor a year."
    referral = embedded.client.post(
        "/api/referrals",
        json=referral_body(response.json()["id"], reason=reason),
        headers=embedded.headers(Role.referrer),
    )
    assert referral.status_code == 201, referral.text


def test_a_body_past_the_size_limit_is_a_413(embedded: Embedded) -> None:
    huge = b'{"given_name": "' + b"a" * 2_000_000 + b'"}'
    assert_problem(post_patient(embedded, huge, "application/json"), 413)


@pytest.mark.parametrize("path", ["/", "/api/policy", "/api/patients/not-a-uuid", "/health"])
def test_every_response_carries_the_safety_headers(embedded: Embedded, path: str) -> None:
    response = embedded.client.get(path, headers=embedded.headers(Role.admin))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy


# --- the schema documents the errors it sends -------------------------------------------


def test_every_operation_documents_its_errors_as_problem_json(embedded: Embedded) -> None:
    schema = embedded.client.get("/schema/openapi.json").json()
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = operation["responses"]
            expected = {"400", "422"}
            if path not in {"/health", "/ready"}:
                expected |= {"401", "403", "404"}
            if method in {"post", "put", "patch"}:
                expected.add("409")
            assert expected <= set(documented), (method, path, sorted(documented))
            for status in expected:
                content = documented[status]["content"]
                assert content == {"application/problem+json": {"schema": problem}}
    assert schema["paths"]["/health"]["get"]["security"] == []


def test_the_errors_sent_match_the_documented_problem(embedded: Embedded) -> None:
    schema = embedded.client.get("/schema/openapi.json").json()
    validator = jsonschema.Draft202012Validator(schema["components"]["schemas"]["Problem"])
    unknown = "/api/referrals/00000000-0000-0000-0000-000000000000"
    answers = {
        401: embedded.client.get("/api/referrals"),
        403: embedded.client.post(
            "/api/patients", json=patient_body(), headers=embedded.headers(Role.admin)
        ),
        404: embedded.client.get(unknown, headers=embedded.headers(Role.mdt)),
        415: post_patient(embedded, json.dumps(patient_body()), "text/plain"),
        422: embedded.client.get(
            "/api/referrals?status=lost", headers=embedded.headers(Role.psychologist)
        ),
    }
    for status, response in answers.items():
        body = assert_problem(response, status)
        assert not list(validator.iter_errors(body)), (status, body)
    assert answers[422].json()["errors"][0]["field"] == "status"


def test_a_method_the_route_lacks_is_405_with_the_allowed_ones(embedded: Embedded) -> None:
    response = embedded.client.request(
        "TRACE", "/api/alerts/a1/acknowledge", headers=embedded.headers(Role.mdt)
    )
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/referrals", "GET, OPTIONS, POST"),
        ("/api/patients/e3e70682-c209-1cac-a29f-6fbed82c07cd", "GET, OPTIONS, PATCH"),
    ],
)
def test_options_lists_every_method_of_the_path(
    embedded: Embedded, path: str, methods: str
) -> None:
    response = embedded.client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == methods


@pytest.mark.parametrize(
    ("body", "field"),
    [({"at": 0}, "at"), ({"at": True}, "at"), ({"at": ["2027-01-04T09:00:00Z"]}, "at")],
)
def test_a_body_value_of_the_wrong_json_type_is_refused_not_converted(
    embedded: Embedded, body: dict[str, object], field: str
) -> None:
    """Litestar reads bodies leniently: `{"at": 0}` set the clinic clock to 1970."""
    response = embedded.client.post(
        "/api/clock/set", json=body, headers=embedded.headers(Role.admin)
    )
    assert_problem(response, 422, field)
    assert embedded.client.get("/api/clock", headers=embedded.headers(Role.admin)).json()[
        "offset_seconds"
    ] == pytest.approx(0, abs=1)


def test_a_count_sent_as_text_is_refused_naming_its_path(embedded: Embedded) -> None:
    patient = embedded.client.post(
        "/api/patients", json=patient_body(), headers=embedded.headers(Role.referrer)
    ).json()
    body = referral_body(patient["id"])
    body["baseline"] = {"phq9_items": ["1"] * 9, "pain_nrs": 5}
    response = embedded.client.post(
        "/api/referrals", json=body, headers=embedded.headers(Role.referrer)
    )
    assert_problem(response, 422, "baseline.phq9_items[0]")


@pytest.mark.parametrize("value", ["0.5", "1700000000", "tomorrow"])
def test_a_time_in_the_query_must_be_rfc_3339(embedded: Embedded, value: str) -> None:
    response = embedded.client.get(
        f"/api/infusion-courses?due_before={value}", headers=embedded.headers(Role.mdt)
    )
    assert_problem(response, 422, "due_before")
    fine = embedded.client.get(
        "/api/infusion-courses?due_before=2027-01-04T09:00:00Z", headers=embedded.headers(Role.mdt)
    )
    assert fine.status_code == 200, fine.text


def test_a_row_id_larger_than_the_database_keeps_is_refused(embedded: Embedded) -> None:
    """schemathesis found a 500: an id past BIGINT overflowed the database driver."""
    response = embedded.client.post(
        "/referrals/api/dead-letters/8347996654170878511153152/replay",
        headers=embedded.headers(Role.admin),
    )
    assert_problem(response, 422, "dead_letter_id")
    missing = embedded.client.post(
        "/referrals/api/dead-letters/9223372036854775807/replay",
        headers=embedded.headers(Role.admin),
    )
    assert_problem(missing, 404)
