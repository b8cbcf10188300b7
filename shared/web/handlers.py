"""How a service declares its routes: a ``query`` reads, a ``command`` changes something.

Both run the handler in a worker thread (the database session is synchronous) and,
when given roles, guard the route with them. A controller whose routes all allow the
same roles guards the controller instead. A route that awaits another service is async
and uses Litestar's own ``get`` or ``post``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from litestar import route
from litestar.handlers import HTTPRouteHandler

from shared.auth import Role, requires


def _guards(roles: Sequence[Role]) -> list[Any] | None:
    return [requires(*roles)] if roles else None


def query(
    path: str | None = None,
    *,
    operation_id: str,
    roles: Sequence[Role] = (),
    **options: Any,
) -> HTTPRouteHandler:
    """A GET route."""
    return route(
        path,
        http_method="GET",
        operation_id=operation_id,
        guards=_guards(roles),
        sync_to_thread=True,
        **options,
    )


def command(
    path: str | None = None,
    *,
    operation_id: str,
    roles: Sequence[Role] = (),
    status_code: int = 200,
    method: Literal["POST", "PUT", "PATCH"] = "POST",
    **options: Any,
) -> HTTPRouteHandler:
    """A route that changes something: 200 with what it changed, or 201 with what it
    created (``status_code=201``)."""
    return route(
        path,
        http_method=method,
        operation_id=operation_id,
        guards=_guards(roles),
        status_code=status_code,
        sync_to_thread=True,
        **options,
    )
