"""Every error is RFC 9457 problem+json; validation errors name the fields."""

from __future__ import annotations

import re
import traceback
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
)

from shared.observability import current_correlation_id, get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


# Where RFC 9110 renamed a phrase Python's http module still spells the old way.
RFC_9110_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def title_of(status: int) -> str:
    """The status's reason phrase, as RFC 9110 words it."""
    if status in RFC_9110_TITLES:
        return RFC_9110_TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class FieldProblem(HTTPException):
    """Input that parsed but breaks a rule: 422 naming the field."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, field: str, message: str) -> None:
        super().__init__(detail=f"{field}: {message}")
        self.errors = [{"field": field, "message": message}]


class Conflict(HTTPException):
    """The request clashes with the current state (a duplicate, an illegal transition)."""

    status_code = HTTP_409_CONFLICT

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail=detail)
        self.problem_extra = extra
        if field is not None:
            self.errors = [{"field": field, "message": detail}]


class UpstreamProblem(HTTPException):
    """Another service refused a call made for this request: its answer, passed on, with
    its field names placed under the field of ours that carried them."""

    def __init__(
        self, status: int, detail: str, *, under: str, errors: list[dict[str, str]] | None
    ) -> None:
        super().__init__(status_code=status, detail=detail)
        self.errors = [
            {"field": f"{under}.{error.get('field', '')}".rstrip("."), "message": error["message"]}
            for error in errors or []
            if isinstance(error, dict) and "message" in error
        ] or None


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title_of(status),
        "status": status,
        "detail": detail,
        "correlation_id": current_correlation_id(),
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# msgspec names a missing or unknown field in its message and the enclosing object in
# the key ("data" for the body itself): put the field's own path in "field".
_NAMED_IN_MESSAGE = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")


def _keyed(extra: Any) -> list[dict[str, Any]]:
    """The validation errors that name where they are (a key)."""
    if not isinstance(extra, list):
        return []
    return [item for item in extra if isinstance(item, dict) and item.get("key")]


def _field_errors(extra: Any) -> list[dict[str, str]]:
    errors = []
    for item in _keyed(extra):
        key, message = str(item["key"]), str(item.get("message", ""))
        named = _NAMED_IN_MESSAGE.match(message)
        if named:
            key = named.group(1) if key == "data" else f"{key}.{named.group(1)}"
        errors.append({"field": key, "message": message})
    return errors


def _named_fields(extra: Any) -> list[dict[str, str]]:
    if not isinstance(extra, list):
        return []
    return [
        {"field": str(item["field"]), "message": str(item.get("message", ""))}
        for item in extra
        if isinstance(item, dict) and item.get("field")
    ]


# Litestar's words for a required query, path or header parameter that was not sent.
_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']+)'")
# A value outside an enum or Literal: msgspec names the value, not the choices.
_NOT_A_CHOICE = "Invalid enum value"
_PATH_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


def _with_choices(request: Request[Any, Any, Any], error: dict[str, str], source: Any) -> None:
    """Add the allowed values to the message of a value that is not one of them."""
    if not error["message"].startswith(_NOT_A_CHOICE):
        return
    parameters = request.route_handler.parsed_fn_signature.parameters
    parts = _PATH_PART.findall(error["field"])
    if source != "body":  # a query, path or header parameter: the first part is its name
        parameter, parts = parameters.get(parts[0]), parts[1:]
    else:
        parameter = parameters.get("data")
    if parameter is None:
        return
    choices = _choices(msgspec.inspect.type_info(parameter.annotation), parts)
    if choices:
        error["message"] += " (allowed: " + ", ".join(choices) + ")"


def _choices(info: msgspec.inspect.Type, parts: list[str]) -> list[str]:
    """The allowed values of the enum or Literal at this path in a type, if it is one."""
    if isinstance(info, msgspec.inspect.UnionType):
        return next((found for t in info.types if (found := _choices(t, parts))), [])
    if not parts:
        if isinstance(info, msgspec.inspect.LiteralType):
            return [str(value) for value in info.values]
        if isinstance(info, msgspec.inspect.EnumType):
            return [str(member.value) for member in info.cls]
        return []
    part, rest = parts[0], parts[1:]
    if isinstance(info, msgspec.inspect.StructType):
        field = next((f for f in info.fields if f.encode_name == part), None)
        return _choices(field.type, rest) if field is not None else []
    if part.startswith("[") and isinstance(info, msgspec.inspect.CollectionType):
        return _choices(info.item_type, rest)
    return []


def validation_problem(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = _field_errors(exc.extra)
    for error, item in zip(errors, _keyed(exc.extra), strict=True):
        _with_choices(request, error, item.get("source"))
    if errors:
        fields = ", ".join(error["field"] for error in errors)
        return problem(HTTP_422_UNPROCESSABLE_ENTITY, f"invalid fields: {fields}", errors=errors)
    missing = _MISSING_PARAMETER.match(str(exc.detail))
    if missing:
        where, name = missing.groups()
        required = [{"field": name, "message": f"a required {where} parameter"}]
        return problem(HTTP_400_BAD_REQUEST, f"{name} is missing", errors=required)
    # No field named: the body did not parse at all.
    return problem(HTTP_400_BAD_REQUEST, "the request body is not valid JSON of the expected shape")


def http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return validation_problem(request, exc)
    errors = getattr(exc, "errors", None) or _named_fields(exc.extra)
    extra = getattr(exc, "problem_extra", {})
    # The exception's headers are part of the answer (405's Allow, 401's WWW-Authenticate).
    headers = dict(exc.headers) if exc.headers else None
    return problem(exc.status_code, str(exc.detail), errors=errors, headers=headers, **extra)


def unexpected_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The exception's text may quote input values (a database error names the row), so
    # log its type and where it was raised, never its message.
    log.error(
        "request.failed",
        path=request.scope["path"],
        error=type(exc).__name__,
        frames=traceback.format_tb(exc.__traceback__)[-3:],
    )
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "the server could not complete the request")
