"""App assembly. One function builds every app: a single service (``carepath serve``)
or all four on one port (``carepath up``). In the embedded app each service's resources
answer at ``/api/...`` and the whole service again below ``/<service>``, which is that
service's base URL (its event feed is ``/<service>/api/events``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any, cast

import httpx
from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from shared.auth import make_jwt_auth
from shared.client import connection_pool
from shared.domain import IllegalTransition, RuleBroken
from shared.messaging import InProcessWorkers
from shared.observability import CORRELATION_HEADER, get_logger
from shared.peers import peer_in_process
from shared.policy import clinical_policy
from shared.runtime import ServiceRuntime, WebSpec
from shared.settings import PlatformSettings, RunMode
from shared.web.body import API_PATHS, MAX_BODY_BYTES, check_api_request
from shared.web.correlation import correlation_middleware
from shared.web.dependencies import (
    provide_audit,
    provide_db,
    provide_runtime,
    provide_uow,
    provide_user,
)
from shared.web.openapi import document_problems_on_start
from shared.web.problems import (
    broken_rule,
    failure_with_audit,
    illegal_transition,
    problem_with_audit,
)
from shared.web.routes import PLATFORM_CONTROLLERS, health, read_policy, ready
from shared.web.security import allow_every_method, security_headers

log = get_logger(__name__)


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


# --- assembly ------------------------------------------------------------------------


class MetricsController(PrometheusController):
    """Prometheus's text format for the scraper, not an API operation: out of the schema."""

    include_in_schema = False


def build_app(
    runtimes: Sequence[ServiceRuntime],
    broker: Broker,
    platform: PlatformSettings,
    *,
    embedded: bool,
    migrate_on_start: bool,
    workers: InProcessWorkers | None = None,
    title: str = "carepath",
    web: WebSpec | None = None,
    peer_urls: Mapping[str, str] | None = None,
) -> Litestar:
    """The app of these services, and of the web pages when `web` is given (the embedded
    app has all of them; `carepath serve web` has only the pages, calling the services at
    `peer_urls`)."""
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
    if web is not None:
        route_handlers.append(
            Router(
                path="/",
                route_handlers=list(web.pages),
                opt={"service": "web"},
                include_in_schema=False,
            )
        )
        route_handlers.append(
            create_static_files_router(
                path="/static", directories=[web.web_dir / "static"], opt={"public": True}
            )
        )
    prometheus = PrometheusConfig(
        app_name="carepath",
        prefix="carepath_http",
        group_path=True,
        exclude=["/metrics", "/health"],
    )
    route_handlers.append(MetricsController)
    jwt_auth = make_jwt_auth(platform)
    by_name = {runtime.name: runtime for runtime in runtimes}

    def start() -> None:
        for runtime in runtimes:
            if migrate_on_start:
                runtime.migrate()
            if embedded:
                runtime.peers.read = peer_in_process(app, platform, runtime.name)
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

    async def open_peer_pool(app: Litestar) -> None:
        # Embedded, every service is in this app: calls go straight to it, still through
        # its full middleware and guards, with no socket.
        transport = httpx.ASGITransport(app=cast(Any, app)) if embedded else None
        app.state.peer_pool = connection_pool(transport)

    async def close_peer_pool(app: Litestar) -> None:
        await app.state.peer_pool.aclose()

    app = Litestar(
        route_handlers=route_handlers,
        dependencies={
            "user": Provide(provide_user, sync_to_thread=False),
            "audit": Provide(provide_audit, sync_to_thread=False),
            "runtime": Provide(provide_runtime, sync_to_thread=False),
            "db": Provide(provide_db),
            "uow": Provide(provide_uow, sync_to_thread=False),
        },
        middleware=[
            correlation_middleware,
            jwt_auth.middleware,
            prometheus.middleware,
            *(web.middleware(platform) if web is not None and web.middleware else ()),
        ],
        on_app_init=[jwt_auth.on_app_init],
        plugins=[
            plugin
            for runtime in runtimes
            if runtime.spec.plugins is not None
            for plugin in runtime.spec.plugins(runtime)
        ],
        exception_handlers={
            HTTPException: problem_with_audit,
            RuleBroken: broken_rule,
            IllegalTransition: illegal_transition,
            Exception: failure_with_audit,
        },
        cors_config=CORSConfig(
            allow_origins=platform.cors_origins,
            allow_credentials=False,
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", CORRELATION_HEADER],
        )
        if platform.cors_origins
        else None,
        csrf_config=CSRFConfig(
            secret=platform.jwt_secret,
            cookie_secure=platform.env is RunMode.production,
            cookie_samesite="strict",
            # The API authenticates with bearer tokens, which a foreign site cannot send;
            # a cookie-carried API call is held to JSON and a matching Origin instead.
            exclude=API_PATHS,
        ),
        before_request=check_api_request,
        before_send=[
            security_headers(production=platform.env is RunMode.production),
            allow_every_method,
        ],
        request_max_body_size=MAX_BODY_BYTES,
        on_startup=[start, open_peer_pool, document_problems_on_start],
        on_shutdown=[close_peer_pool, stop],
        logging_config=None,  # not Litestar's root handler: configure_logging's renders all
        state=State(
            {
                "runtimes": by_name,
                "broker": broker,
                "embedded": embedded,
                "platform": platform,
                "peer_urls": dict(peer_urls or {}),
            }
        ),
        template_config=TemplateConfig(
            directory=web.web_dir / "templates", engine=JinjaTemplateEngine
        )
        if web is not None
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
