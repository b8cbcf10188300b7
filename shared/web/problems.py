"""Errors as problem+json, with an audit row for every denied attempt; the domain's
broken rules and illegal transitions answered 422 and 409."""

from __future__ import annotations

from contextlib import suppress
from typing import Any
from uuid import UUID

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from shared.audit import AuditAction, AuditOutcome, record_access
from shared.auth import User
from shared.domain import IllegalTransition, RuleBroken
from shared.errors import Conflict, FieldProblem, http_problem, unexpected_problem
from shared.observability import get_logger
from shared.runtime import ServiceRuntime

log = get_logger(__name__)

_METHOD_ACTIONS = {
    "GET": AuditAction.read,
    "POST": AuditAction.create,
    "PUT": AuditAction.update,
    "PATCH": AuditAction.update,
    "DELETE": AuditAction.delete,
}


# --- errors, with an audit row for every denied attempt ------------------------------


def problem_with_audit(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code in (401, 403):
        _audit_attempt(request, AuditOutcome.denied, f"HTTP {exc.status_code}")
    if _is_page(request):
        return _page_problem(request, exc)
    return http_problem(request, exc)


def _is_page(request: Request[Any, Any, Any]) -> bool:
    handler = request.scope.get("route_handler")
    return handler is not None and bool(handler.opt.get("page"))


def _page_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A person at a page gets a page: the sign-in form when not signed in."""
    if exc.status_code == 401:
        return Redirect(path="/sign-in", status_code=303)
    user = request.scope.get("user")
    return Template(
        template_name="problem.html",
        context={
            "status": exc.status_code,
            "detail": str(exc.detail),
            "user": user if isinstance(user, User) else None,
        },
        status_code=exc.status_code,
    )


def broken_rule(request: Request[Any, Any, Any], exc: RuleBroken) -> Response[Any]:
    """A domain rule the input breaks: 422 naming the field to correct."""
    return problem_with_audit(request, FieldProblem(exc.field, exc.message))


def illegal_transition(request: Request[Any, Any, Any], exc: IllegalTransition) -> Response[Any]:
    """An action the aggregate's status does not allow: 409 naming that status."""
    conflict = Conflict(
        f"the {exc.thing} is {exc.current}; '{exc.action}' is not allowed from that status",
        current_status=exc.current,
    )
    return problem_with_audit(request, conflict)


def failure_with_audit(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    _audit_attempt(request, AuditOutcome.failed, "HTTP 500")
    return unexpected_problem(request, exc)


def _audit_attempt(request: Request[Any, Any, Any], outcome: AuditOutcome, detail: str) -> None:
    """Audit a refused or failed attempt in its own transaction (the request's rolled back)."""
    handler = request.scope.get("route_handler")
    service = handler.opt.get("service") if handler is not None else None
    runtimes: dict[str, ServiceRuntime] = request.app.state.runtimes
    if service not in runtimes:
        return
    user = request.scope.get("user")
    try:
        with runtimes[service].sessions() as session:
            record_access(
                session,
                user_id=user.id if isinstance(user, User) else "anonymous",
                role=user.role if isinstance(user, User) else "none",
                action=_METHOD_ACTIONS.get(request.method, AuditAction.execute),
                entity_type=handler.opt.get("resource", "api") if handler is not None else "api",
                entity_id=None,
                patient_id=_patient_id_in_path(request.scope.get("path_params") or {}),
                path=request.scope["path"],
                outcome=outcome,
                detail=detail,
            )
            session.commit()
    except Exception as error:  # a failing audit write must not hide the answer
        log.error("audit.write_failed", path=request.scope["path"], error=type(error).__name__)


def _patient_id_in_path(path_params: dict[str, Any]) -> UUID | None:
    value = path_params.get("patient_id")
    if isinstance(value, UUID):
        return value
    with suppress(ValueError, TypeError):
        return UUID(str(value))
    return None
