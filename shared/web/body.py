"""What an API request body must be before any handler sees it.

An API body is JSON sent as `application/json` (a form or `text/plain` post from another
site cannot drive the API with a session cookie: browsers only send those cross-site
without a preflight), UTF-8, nested no deeper than a clinical record ever is, and its
strings carry no control characters (PostgreSQL refuses a NUL later, and a stored
escape can corrupt what a person reads). Its size is bounded by the app
(`request_max_body_size`, a 413). A refusal here is a problem+json naming what to change,
never a 500 from deep inside a decoder.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from functools import cache
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import (
    ClientException,
    HTTPException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers import BaseRouteHandler
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.typing import FieldDefinition

from shared.auth import SESSION_COOKIE
from shared.errors import FieldProblem

MAX_BODY_BYTES = 1_048_576
# Where the API answers: at /api/... and, embedded, at /<service>/api/...; and the
# platform's machine routes. Pages (forms) are everything else and carry CSRF tokens.
API_PATHS = [r"^/api/", r"^/[a-z]+/api/", r"^/schema", r"^/health$", r"^/ready$", r"^/metrics"]
# A referral, the deepest body, nests four levels; 32 leaves room and stops a bomb.
MAX_DEPTH = 32
CHANGING = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPES = frozenset({"application/json", "application/problem+json"})
# JSON escapes of C0 controls and DEL, other than tab, line feed and carriage return,
# which free text (a clinical note) may hold.
_CONTROL_ESCAPE = re.compile(r"\\u(?:00[01][0-8bcefBCEF]|001[0-9a-fA-F]|007[fF])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class UnsupportedMediaType(HTTPException):
    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


async def check_api_request(request: Request[Any, Any, Any]) -> None:
    """Litestar `before_request` hook for every API route."""
    if "/api/" not in request.url.path:
        return
    _check_query_times(request)
    if request.method not in CHANGING:
        return
    _check_origin(request)
    await _check_body(request)


def _check_origin(request: Request[Any, Any, Any]) -> None:
    """A call that rides on the session cookie (no bearer token) must come from a page of
    this origin: a browser names the page's origin on every cross-site POST."""
    if "authorization" in request.headers or SESSION_COOKIE not in request.cookies:
        return
    origin = request.headers.get("origin")
    ours = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != ours:
        raise PermissionDeniedException(
            detail="a cookie-authenticated call must come from this site's own pages"
        )


async def _check_body(request: Request[Any, Any, Any]) -> None:
    body = await request.body()
    if not body.strip():
        return  # an action without a body (reset, acknowledge without a note)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            detail=f"an API body must be sent as application/json, not {media_type or 'untyped'}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientException(detail="the body is not UTF-8 text") from None
    if _depth(text) > MAX_DEPTH:
        raise ClientException(detail=f"the body nests deeper than {MAX_DEPTH} levels")
    if _CONTROL_ESCAPE.search(text) or _CONTROL.search(text):
        field = _field_with_control(text)
        raise FieldProblem(
            field, "contains a control character (such as NUL); remove it and send again"
        )
    _check_types(request, body)


# msgspec's own words for where a value is wrong: "... - at `$.baseline.pain_nrs`".
_WHERE = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<key>[^`]*)`)?$")


def _check_types(request: Request[Any, Any, Any], body: bytes) -> None:
    """The body as the route declares it, read strictly: Litestar converts a body
    leniently (the number 0 becomes 1970-01-01, the string "5" a count), so a value of
    the wrong JSON type would pass where the schema says it must not. A refusal is the
    validation problem Litestar's own would be (shared.errors names the field)."""
    declared = request.route_handler.parsed_fn_signature.parameters.get("data")
    if declared is None:
        return
    try:
        msgspec.json.decode(body, type=declared.annotation, strict=True)
    except msgspec.ValidationError as error:
        where = _WHERE.match(str(error))
        key = (where and where.group("key")) or "data"
        message = where.group("message") if where else str(error)
        raise ValidationException(
            detail=message, extra=[{"key": key, "message": message, "source": "body"}]
        ) from None
    except (msgspec.DecodeError, TypeError):
        return  # not JSON, or a type msgspec cannot read strictly: Litestar's decoder answers


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, outside strings."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _field_with_control(text: str) -> str:
    """The path of the first string holding a control character, as `a.b[2].c`."""
    try:
        document = json.loads(text)
    except ValueError:
        return "body"  # not JSON at all: the decoder's own refusal names it next
    return _find(document, "") or "body"


def _find(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if _CONTROL.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find(key, path) or _find(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


_TIMES = (datetime, date, time)


def _check_query_times(request: Request[Any, Any, Any]) -> None:
    """A date or time in the query is RFC 3339 text, as the schema says: Litestar's
    lenient reading would take `due_before=0.5` as half a second after 1970."""
    for name, kind in _query_times(request.route_handler):
        value = request.query_params.get(name)
        if value is None:
            continue
        try:
            msgspec.convert(value, kind, strict=True)
        except msgspec.ValidationError as error:
            message = str(error)
            raise ValidationException(
                detail=message, extra=[{"key": name, "message": message, "source": "query"}]
            ) from None


@cache
def _query_times(handler: BaseRouteHandler) -> tuple[tuple[str, type], ...]:
    """A route's date and time parameters, by their query name: read once a route, not on
    every request."""
    found = []
    for field in handler.parsed_fn_signature.parameters.values():
        kind = next((k for k in _TIMES if _holds(field, k)), None)
        if kind is not None:
            found.append((getattr(field.kwarg_definition, "query", None) or field.name, kind))
    return tuple(found)


def _holds(field: FieldDefinition, kind: type) -> bool:
    return field.is_subclass_of(kind) or field.has_inner_subclass_of(kind)
