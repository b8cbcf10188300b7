"""The errors every operation can answer, written into the OpenAPI schema.

Litestar documents a route's success and a 400 in its own exception shape, which is not
what carepath sends: every error here is problem+json (shared.errors.problem). A client
generator or a fuzzer checks error bodies against the schema, so each operation lists
the statuses it can give, each as a Problem.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

from shared.auth import PUBLIC_PATHS
from shared.errors import PROBLEM_JSON

_PUBLIC = [re.compile(pattern) for pattern in PUBLIC_PATHS]
_CHANGES = {"post", "put", "patch", "delete"}

PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "correlation_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            description="One entry a field: where it is and what is wrong with it",
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "message"],
                properties={
                    "field": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                    "choices": Schema(
                        type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)
                    ),
                },
            ),
        ),
    },
)

# Why each status is sent, as the schema's reader needs to know it.
_WHY = {
    400: "The request is malformed: a body that is not JSON of the expected shape, "
    "bytes that are not UTF-8, JSON nested too deep",
    401: "No valid token (or session) was given",
    403: "The caller's role or team may not do this, or may not see this patient",
    404: "Nothing with an id the request names, or nothing the caller may see",
    409: "The change conflicts with the current state: the status does not allow it, "
    "an open urgent alert holds it, or its Idempotency-Key is still in use",
    413: "The body is larger than the limit",
    415: "The body is not application/json",
    422: "A parameter or field is invalid: each one is named in `errors`",
    503: "A service this one needs did not answer; nothing was changed, try again later",
}


def error_statuses(path: str, method: str, operation: Operation) -> list[int]:
    """The error statuses one operation can answer."""
    statuses = [400, 422]
    if not is_public(path):
        # 404 also where the id is in the body or the query (a referral's patient); 503
        # where a service this one asks does not answer now.
        statuses += [401, 403, 404, 503]
    if method in _CHANGES:
        statuses.append(409)
    if operation.request_body is not None:
        statuses += [413, 415]
    return sorted(statuses)


def is_public(path: str) -> bool:
    return any(pattern.search(path) for pattern in _PUBLIC)


def document_problems(schema: OpenAPI) -> None:
    """Every operation's errors as problem+json; public routes without the token."""
    components = schema.components
    if not isinstance(components.schemas, dict):
        components.schemas = {}
    components.schemas["Problem"] = PROBLEM
    problem = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))
    for path, item in (schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            if is_public(path):
                operation.security = []
            responses: dict[str, Any] = dict(operation.responses or {})
            for status in error_statuses(path, method, operation):
                responses[str(status)] = OpenAPIResponse(
                    description=_WHY[status], content={PROBLEM_JSON: problem}
                )
            operation.responses = responses


def document_problems_on_start(app: Litestar) -> None:
    """Before the first request: Litestar builds the schema once and serves that copy."""
    if app.openapi_config is not None:
        document_problems(app.openapi_schema)
