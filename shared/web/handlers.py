"""How a service declares its routes: a ``query`` reads, a ``command`` changes something.

Both run a sync handler in a worker thread (the database session is synchronous) and,
when given roles, guard the route with them. A controller whose routes all allow the
same roles guards the controller instead. A query that awaits another service is async
and uses Litestar's own ``get``; a command that does is an async ``command``.

Every command accepts an ``Idempotency-Key`` header (shared.web.idempotency): a repeat
with the key gets the first answer back instead of a second change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

from litestar import route
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler

from shared.auth import Role, requires
from shared.web.idempotency import answer_once, provide_idempotency


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
    idempotent: bool = True,
    **options: Any,
) -> Callable[[Callable[..., Any]], HTTPRouteHandler]:
    """A route that changes something: 200 with what it changed, or 201 with what it
    created (``status_code=201``).

    It accepts an ``Idempotency-Key``, unless ``idempotent=False``: only for a route
    whose work commits in transactions of its own (the answer could not be stored in
    them) and that is safe to repeat anyway.
    """

    def declare(fn: Callable[..., Any]) -> HTTPRouteHandler:
        is_async = inspect.iscoroutinefunction(fn)
        dependencies = dict(options.pop("dependencies", None) or {})
        if idempotent:
            dependencies["idempotency"] = Provide(provide_idempotency)
            fn = answer_once(fn, status_code)
        handler = route(
            path,
            http_method=method,
            operation_id=operation_id,
            guards=_guards(roles),
            status_code=status_code,
            dependencies=dependencies or None,
            sync_to_thread=None if is_async else True,
            **options,
        )
        return handler(fn)

    return declare
