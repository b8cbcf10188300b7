"""What a route can ask for: the runtime, a session, the caller, the audit trail, the
unit of work, and a client for another service that acts as the caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
from litestar import Request
from litestar.di import NamedDependency
from sqlmodel import Session

from shared.audit import AccessTrail
from shared.auth import SESSION_COOKIE, User
from shared.client import AsyncCarepathClient
from shared.events import Actor
from shared.observability import (
    current_correlation_id,
)
from shared.runtime import ServiceRuntime
from shared.uow import UnitOfWork

# What a route declares to be handed the request's unit of work and its caller (the
# parameter's name, ``uow`` or ``user``, is what Litestar injects by).
UowDep = NamedDependency[UnitOfWork]
UserDep = NamedDependency[User]

# --- dependencies -------------------------------------------------------------------


def provide_runtime(request: Request[Any, Any, Any]) -> ServiceRuntime:
    """The runtime of the service that owns the route (its router's ``opt``)."""
    runtimes: dict[str, ServiceRuntime] = request.app.state.runtimes
    runtime = runtimes[request.route_handler.opt["service"]]
    return runtime


async def provide_db(runtime: NamedDependency[ServiceRuntime]) -> AsyncGenerator[Session, None]:
    """A request's session; a handler commits what it means to keep.

    Async on purpose: Litestar runs a sync generator's cleanup in the same small thread
    pool as the sync handlers. A session still holding SQLite's write lock would then
    wait to be closed behind handlers that wait for that lock, and every request would
    hang until the busy timeout. Closing on the event loop never queues.
    """
    session = runtime.sessions()
    try:
        yield session
    finally:
        session.close()


def service_client(request: Request[Any, Any, Any], service: str) -> AsyncCarepathClient:
    """A client for another service that acts for the caller: their own token, so the
    other service decides (and audits) what this person may see or do.

    In the embedded app every service is in this process: the call goes straight to the
    app (no socket, no port to configure) but through its full middleware and guards.
    """
    authorization = request.headers.get("Authorization", "")
    token = authorization.removeprefix("Bearer ").strip() or request.cookies.get(SESSION_COOKIE)
    correlation_id = current_correlation_id()
    pool: httpx.AsyncClient = request.app.state.peer_pool
    if request.app.state.embedded:
        url = f"http://carepath.embedded/{service}"
    else:
        # The web service has no runtime: it knows each service's address (`peer_urls`).
        peer_urls: dict[str, str] = request.app.state.peer_urls
        url = peer_urls.get(service) or provide_runtime(request).settings.url_of(service)
    return AsyncCarepathClient(url, token, correlation_id=correlation_id, pool=pool)


def provide_user(request: Request[Any, Any, Any]) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def provide_audit(request: Request[Any, Any, Any], user: NamedDependency[User]) -> AccessTrail:
    return AccessTrail(user_id=user.id, role=user.role.value, path=request.url.path)


def provide_uow(
    db: NamedDependency[Session],
    user: NamedDependency[User],
    audit: NamedDependency[AccessTrail],
    runtime: NamedDependency[ServiceRuntime],
) -> UnitOfWork:
    """The request's unit of work: its session, the service, the caller and the trail."""
    actor = Actor(user_id=user.id, role=user.role.value)
    return UnitOfWork(db, service=runtime.name, actor=actor, trail=audit)
