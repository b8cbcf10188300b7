"""The HTTP side of the platform: app assembly, health, feed, dead letters, errors.

One function builds every app: a single service (``carepath serve``) or all four on
one port (``carepath up``). In the embedded app each service's resources answer at
``/api/...`` and the whole service again below ``/<service>``, which is that
service's base URL (its event feed is ``/<service>/api/events``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, cast
from uuid import UUID

import httpx
import msgspec
import structlog
from dramatiq import Broker, Message
from dramatiq.brokers.stub import StubBroker
from litestar import Controller, Litestar, Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from litestar.template import TemplateConfig
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.types import Message as AsgiMessage
from sqlmodel import Session, col, func, select

from shared.audit import AccessTrail, AuditAction, AuditOutcome, record_access
from shared.auth import SESSION_COOKIE, Role, User, make_jwt_auth, requires
from shared.catchup import FeedLag, FeedReport, feed_in_process, feed_lags
from shared.client import AsyncCarepathClient
from shared.domain import IllegalTransition, RuleBroken
from shared.errors import Conflict, FieldProblem, http_problem, problem, unexpected_problem
from shared.events import Actor
from shared.feed import CURSOR_PATTERN, FeedCursor, read_feed
from shared.messaging import InProcessWorkers, queue_depth
from shared.observability import (
    CORRELATION_HEADER,
    bind_correlation_id,
    current_correlation_id,
    get_logger,
    new_correlation_id,
)
from shared.policy import PolicySetting, clinical_policy, described
from shared.runtime import ServiceRuntime, check_broker
from shared.settings import PlatformSettings
from shared.tables import DeadLetter, OutboxEvent, as_utc
from shared.uow import UnitOfWork

log = get_logger(__name__)

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_METHOD_ACTIONS = {
    "GET": AuditAction.read,
    "POST": AuditAction.create,
    "PUT": AuditAction.update,
    "PATCH": AuditAction.update,
    "DELETE": AuditAction.delete,
}


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
    if request.app.state.embedded:
        transport = httpx.ASGITransport(app=cast(Any, request.app))
        return AsyncCarepathClient(
            f"http://carepath.embedded/{service}",
            token,
            correlation_id=correlation_id,
            transport=transport,
        )
    runtime = provide_runtime(request)
    return AsyncCarepathClient(
        runtime.settings.url_of(service), token, correlation_id=correlation_id
    )


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


def service_router(
    runtime: NamedDependency[ServiceRuntime],
    route_handlers: Sequence[Any],
    path: str = "/",
    *,
    include_in_schema: bool = True,
) -> Router:
    # Routers are copied when registered, so they name their service instead of
    # holding its runtime (which owns threads and connections).
    return Router(
        path=path,
        route_handlers=list(route_handlers),
        opt={"service": runtime.name},
        tags=[runtime.name],
        include_in_schema=include_in_schema,
    )


# --- platform routes every service has -----------------------------------------------


class FeedPage(msgspec.Struct, kw_only=True):
    items: list[dict[str, Any]]
    # The cursor to ask with next; opaque ("txid.position").
    next_after: str
    # Events (of the asked types) after next_after that are ready to read now.
    remaining: int


class EventFeedController(Controller):
    path = "/api/events"
    guards = [requires(Role.service, Role.admin)]

    @get(
        operation_id="readEventFeed",
        summary="This service's events in commit order, after a cursor",
        sync_to_thread=True,
    )
    def read(
        self,
        db: NamedDependency[Session],
        audit: NamedDependency[AccessTrail],
        after: Annotated[
            str, QueryParameter(pattern=CURSOR_PATTERN, description="next_after of the last page")
        ] = "0",
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        event_type: Annotated[
            list[str] | None,
            QueryParameter(name="type", max_items=50, description="only these event types"),
        ] = None,
    ) -> FeedPage:
        types = frozenset(event_type) if event_type else None
        feed = read_feed(db, FeedCursor.parse(after), limit, types)
        audit.record(
            db,
            AuditAction.read,
            "EventFeed",
            None,
            None,
            detail=f"after={after} count={len(feed.rows)}",
        )
        db.commit()
        items = [{"position": row.position, "txid": row.txid, **row.envelope} for row in feed.rows]
        return FeedPage(items=items, next_after=str(feed.next_after), remaining=feed.remaining)


class DeadLetterView(msgspec.Struct, kw_only=True):
    id: int
    message_id: str
    queue_name: str
    event_id: str | None
    event_type: str | None
    error: str
    failed_at: datetime
    replayed_at: datetime | None
    replay_count: int


class DeadLetterController(Controller):
    path = "/api/dead-letters"
    guards = [requires(Role.admin, Role.service)]

    @get(operation_id="listDeadLetters", sync_to_thread=True)
    def list_dead_letters(
        self, db: NamedDependency[Session], include_replayed: FromQuery[bool] = False
    ) -> list[DeadLetterView]:
        statement = select(DeadLetter).order_by(col(DeadLetter.id))
        if not include_replayed:
            statement = statement.where(col(DeadLetter.replayed_at).is_(None))
        return [_dead_letter_view(row) for row in db.exec(statement).all()]

    @post(
        "/{dead_letter_id:int}/replay",
        operation_id="replayDeadLetter",
        sync_to_thread=True,
        status_code=200,
    )
    def replay(
        self,
        db: NamedDependency[Session],
        runtime: NamedDependency[ServiceRuntime],
        dead_letter_id: FromPath[int],
    ) -> DeadLetterView:
        row = db.get(DeadLetter, dead_letter_id)
        if row is None:
            raise NotFoundException(f"no dead letter {dead_letter_id}")
        original = row.message
        # A fresh message id and no retry count: the replay gets its own full set of
        # retries, and a second failure is recorded as its own dead letter.
        runtime.broker.enqueue(
            Message(
                queue_name=original["queue_name"],
                actor_name=original["actor_name"],
                args=tuple(original["args"]),
                kwargs=original.get("kwargs") or {},
                options={},
            )
        )
        row.replayed_at = datetime.now(UTC)
        row.replay_count += 1
        db.add(row)
        db.commit()
        log.info("dead_letter.replayed", queue=row.queue_name, dead_letter_id=row.id)
        return _dead_letter_view(row)


def _dead_letter_view(row: DeadLetter) -> DeadLetterView:
    assert row.id is not None
    return DeadLetterView(
        id=row.id,
        message_id=row.message_id,
        queue_name=row.queue_name,
        event_id=row.event_id,
        event_type=row.event_type,
        error=row.error,
        failed_at=as_utc(row.failed_at),
        replayed_at=as_utc(row.replayed_at) if row.replayed_at else None,
        replay_count=row.replay_count,
    )


class ReconcileRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    repair: bool = False


class ReconcileView(msgspec.Struct, kw_only=True):
    consumer: str
    feeds: list[FeedReport]
    # Missing events left after this call (after repair, those that still failed).
    unresolved: int


class FeedController(Controller):
    """A consumer's position in each feed it subscribes to, and reconciliation."""

    path = "/api/feeds"
    guards = [requires(Role.admin, Role.service)]

    @get(operation_id="listFeedPositions", sync_to_thread=True)
    def positions(self, db: NamedDependency[Session]) -> list[FeedLag]:
        return feed_lags(db)

    @post(
        "/reconcile",
        operation_id="reconcileFeeds",
        sync_to_thread=True,
        status_code=200,
        summary="Compare every producer feed with this consumer's inbox; repair consumes "
        "what is missing",
    )
    def reconcile(
        self, runtime: NamedDependency[ServiceRuntime], data: JSONBody[ReconcileRequest]
    ) -> ReconcileView:
        if not runtime.consumes:
            return ReconcileView(consumer=runtime.name, feeds=[], unresolved=0)
        reports = runtime.follower().reconcile_all(repair=data.repair)
        unresolved = sum(report.unresolved for report in reports)
        log.info(
            "feed.reconciled",
            consumer=runtime.name,
            repair=data.repair,
            missing=sum(sum(report.missing.values()) for report in reports),
            unresolved=unresolved,
        )
        return ReconcileView(consumer=runtime.name, feeds=reports, unresolved=unresolved)


class OperationsView(msgspec.Struct, kw_only=True):
    service: str
    outbox_unsent: int
    outbox_lag_seconds: float
    dead_letters_waiting: int
    queue_depth: int
    feeds: list[FeedLag]


@get(
    "/api/operations",
    operation_id="operations",
    guards=[requires(Role.admin, Role.service)],
    sync_to_thread=True,
    summary="This service's pipeline: unsent outbox rows, dead letters, queue depth",
)
def operations(
    runtime: NamedDependency[ServiceRuntime], db: NamedDependency[Session]
) -> OperationsView:
    oldest = db.exec(
        select(func.min(OutboxEvent.occurred_at)).where(col(OutboxEvent.sent_at).is_(None))
    ).one()
    unsent = db.exec(
        select(func.count()).select_from(OutboxEvent).where(col(OutboxEvent.sent_at).is_(None))
    ).one()
    waiting = db.exec(
        select(func.count()).select_from(DeadLetter).where(col(DeadLetter.replayed_at).is_(None))
    ).one()
    lag = (datetime.now(UTC) - as_utc(oldest)).total_seconds() if oldest else 0.0
    return OperationsView(
        service=runtime.name,
        outbox_unsent=int(unsent),
        outbox_lag_seconds=round(max(lag, 0.0), 1),
        dead_letters_waiting=int(waiting),
        queue_depth=queue_depth(runtime.broker, runtime.name) if runtime.spec.handle_event else 0,
        feeds=feed_lags(db),
    )


PLATFORM_CONTROLLERS: tuple[Any, ...] = (
    EventFeedController,
    DeadLetterController,
    FeedController,
    operations,
)


STAFF = tuple(role for role in Role if role is not Role.service)


@get(
    "/api/policy",
    operation_id="readClinicalPolicy",
    guards=[requires(*STAFF)],
    sync_to_thread=False,
    summary="The clinical policy in force: each threshold with its source and default",
    description="Every threshold of CLINICAL.md, by section, as this process loaded it "
    "(shared/policy.toml, with CAREPATH_POLICY_FILE laid over it). Read-only.",
)
def read_policy() -> dict[str, dict[str, PolicySetting]]:
    return described(clinical_policy())


@get("/health", operation_id="health", summary="The process is serving", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/ready",
    operation_id="ready",
    summary="Databases answer (503 if not); the broker and each consumer's feeds are reported",
    sync_to_thread=True,
)
def ready(state: State) -> Response[Any]:
    """Only a database that does not answer makes the process unready: with Redis down
    or a feed behind, clinical writes still commit (the outbox keeps their events), so
    taking the API out of service would only turn a delay into refused care."""
    checks: dict[str, str] = {}
    runtimes: dict[str, ServiceRuntime] = state.runtimes
    for name, runtime in runtimes.items():
        checks[f"{name}.database"] = _check(runtime.check_database)
    checks["broker"] = _check(partial(check_broker, state.broker))
    for name, runtime in runtimes.items():
        if runtime.consumes:
            checks[f"{name}.feeds"] = _feeds_check(runtime)
    failing = sorted(part for part, outcome in checks.items() if outcome != "ok")
    if any(part.endswith(".database") for part in failing):
        return problem(
            HTTP_503_SERVICE_UNAVAILABLE, "not ready: " + ", ".join(failing), checks=checks
        )
    status = "degraded" if failing else "ready"
    return Response(
        {"status": status, "checks": checks, **({"failing": failing} if failing else {})}
    )


def _feeds_check(runtime: ServiceRuntime) -> str:
    threshold = runtime.settings.platform.feed_lag_ready_s
    try:
        with runtime.sessions() as session:
            lags = feed_lags(session)
    except Exception as error:
        return f"failing: {type(error).__name__}"
    behind = [
        f"{lag.producer} {lag.lag_seconds:.0f}s" for lag in lags if lag.lag_seconds > threshold
    ]
    return "lagging: " + ", ".join(behind) if behind else "ok"


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except Exception as error:
        return f"failing: {type(error).__name__}"
    return "ok"


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


# --- correlation id ------------------------------------------------------------------


def correlation_middleware(app: ASGIApp) -> ASGIApp:
    """Carry X-Correlation-ID from the request into logs, events and the response."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = (
            dict(scope["headers"]).get(CORRELATION_HEADER.lower().encode(), b"").decode("latin-1")
        )
        correlation_id = given if _CORRELATION_ID.match(given) else new_correlation_id()
        structlog.contextvars.clear_contextvars()
        bind_correlation_id(correlation_id)

        async def send_with_header(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER.lower().encode(), correlation_id.encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_header)

    return middleware


# --- assembly ------------------------------------------------------------------------


def build_app(
    runtimes: Sequence[ServiceRuntime],
    broker: Broker,
    platform: PlatformSettings,
    *,
    embedded: bool,
    migrate_on_start: bool,
    workers: InProcessWorkers | None = None,
    title: str = "carepath",
) -> Litestar:
    platform.check_production()
    clinical_policy()  # a bad policy stops the service here, with the key it names
    route_handlers: list[Any] = [health, ready, read_policy]
    for runtime in runtimes:
        own = list(runtime.spec.route_handlers)
        if embedded:
            route_handlers.append(service_router(runtime, own))
            route_handlers.append(
                service_router(
                    runtime,
                    [*own, *PLATFORM_CONTROLLERS],
                    f"/{runtime.name}",
                    include_in_schema=False,
                )
            )
        else:
            route_handlers.append(service_router(runtime, [*own, *PLATFORM_CONTROLLERS]))
        if runtime.spec.pages:
            route_handlers.append(
                service_router(runtime, runtime.spec.pages, include_in_schema=False)
            )
    web_dirs = [r.spec.web_dir for r in runtimes if r.spec.web_dir is not None]
    if web_dirs:
        route_handlers.append(
            create_static_files_router(
                path="/static", directories=[d / "static" for d in web_dirs], opt={"public": True}
            )
        )
    prometheus = PrometheusConfig(
        app_name="carepath",
        prefix="carepath_http",
        group_path=True,
        exclude=["/metrics", "/health"],
    )
    route_handlers.append(PrometheusController)
    jwt_auth = make_jwt_auth(platform)
    by_name = {runtime.name: runtime for runtime in runtimes}

    def start() -> None:
        for runtime in runtimes:
            if migrate_on_start:
                runtime.migrate()
            if embedded:
                runtime.read_feed_page = feed_in_process(app, platform, runtime.name)
        for runtime in runtimes:
            runtime.relay.start()
        if workers is not None:
            for runtime in runtimes:
                runtime.declare_consumer()
            workers.start()
            for runtime in runtimes:
                runtime.start_background()
        log.info("carepath.started", services=list(by_name), embedded=embedded)

    def stop() -> None:
        for runtime in runtimes:
            runtime.relay.stop()
        if workers is not None:
            _drain(broker)
            workers.stop()
        for runtime in runtimes:
            runtime.close()
        broker.close()
        log.info("carepath.stopped", services=list(by_name))

    app = Litestar(
        route_handlers=route_handlers,
        dependencies={
            "user": Provide(provide_user, sync_to_thread=False),
            "audit": Provide(provide_audit, sync_to_thread=False),
            "runtime": Provide(provide_runtime, sync_to_thread=False),
            "db": Provide(provide_db),
            "uow": Provide(provide_uow, sync_to_thread=False),
        },
        middleware=[correlation_middleware, jwt_auth.middleware, prometheus.middleware],
        on_app_init=[jwt_auth.on_app_init],
        exception_handlers={
            HTTPException: problem_with_audit,
            RuleBroken: broken_rule,
            IllegalTransition: illegal_transition,
            Exception: failure_with_audit,
        },
        on_startup=[start],
        on_shutdown=[stop],
        logging_config=None,  # not Litestar's root handler: configure_logging's renders all
        state=State({"runtimes": by_name, "broker": broker, "embedded": embedded}),
        template_config=TemplateConfig(
            directory=[d / "templates" for d in web_dirs], engine=JinjaTemplateEngine
        )
        if web_dirs
        else None,
        openapi_config=OpenAPIConfig(
            title=title,
            version="0.1.0",
            description=(
                "carepath: one care pathway per patient across referrals, ketamine infusions "
                "and CBT/psychology. Every call needs a bearer token (`carepath token`)."
            ),
            path="/schema",
        ),
    )
    return app


def _drain(broker: Broker, timeout_ms: int = 10_000) -> None:
    """Let in-process workers finish what the relay already handed them.

    The in-memory broker forgets its queues when the process ends; draining them
    first means a clean shutdown loses nothing that was marked sent.
    """
    if not isinstance(broker, StubBroker):
        return
    for queue in list(broker.queues):
        with suppress(Exception):
            broker.join(queue, timeout=timeout_ms, fail_fast=False)
