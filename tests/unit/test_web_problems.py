"""A value outside a typed enum is a 422 whose problem names the field and the values
it may take, in a query parameter and anywhere in a body."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

import msgspec
from litestar import get, post
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, JSONBody
from litestar.testing import create_test_client

from shared.errors import http_problem

Status = Literal["received", "accepted", "rejected"]


class Target(StrEnum):
    psychology = "psychology"
    pain_mdt = "pain-mdt"


class Referrer(msgspec.Struct, kw_only=True):
    kind: Literal["gp", "consultant"]


class Referral(msgspec.Struct, kw_only=True):
    target: Target
    conditions: list[Literal["crps", "depression"]]
    referrer: Referrer | None = None


@get("/referrals", sync_to_thread=False)
def inbox(status: FromQuery[Status | None] = None) -> list[str]:
    return []


@post("/referrals", sync_to_thread=False)
def refer(data: JSONBody[Referral]) -> dict[str, str]:
    return {}


def _problem(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    with create_test_client(
        [inbox, refer], exception_handlers={HTTPException: http_problem}
    ) as client:
        response = client.request(method, path, **kwargs)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_a_query_parameter_outside_its_literal_names_the_allowed_values() -> None:
    body = _problem("GET", "/referrals?status=bogus")
    assert body["detail"] == "invalid fields: status"
    assert body["errors"] == [
        {
            "field": "status",
            "message": "Invalid enum value 'bogus' (allowed: accepted, received, rejected)",
        }
    ]


def test_a_body_field_outside_its_enum_names_the_allowed_values() -> None:
    body = _problem("POST", "/referrals", json={"target": "acupuncture", "conditions": []})
    [error] = body["errors"]
    assert error["field"] == "target"
    assert error["message"].endswith("(allowed: psychology, pain-mdt)")


def test_a_value_in_a_list_or_a_nested_object_names_the_allowed_values() -> None:
    in_list = _problem("POST", "/referrals", json={"target": "psychology", "conditions": ["x"]})
    assert in_list["errors"][0]["field"] == "conditions[0]"
    assert in_list["errors"][0]["message"].endswith("(allowed: crps, depression)")
    nested = {"target": "psychology", "conditions": [], "referrer": {"kind": "nurse"}}
    in_object = _problem("POST", "/referrals", json=nested)
    assert in_object["errors"][0]["field"] == "referrer.kind"
    assert in_object["errors"][0]["message"].endswith("(allowed: consultant, gp)")


def test_other_validation_errors_are_left_as_they_are() -> None:
    body = _problem("POST", "/referrals", json={"target": "psychology", "conditions": [1]})
    assert body["errors"][0]["message"] == "Expected `str`, got `int`"
