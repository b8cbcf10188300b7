"""A typed httpx client for carepath's APIs, used by the CLI, other services and tests.

``base_url`` is one service's base (``CAREPATH_<SERVICE>_URL``), or the embedded
server's root, where every resource answers.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from functools import cache
from typing import Any, Self, TypeVar
from uuid import UUID

import httpx
import msgspec
import structlog

from shared.observability import CORRELATION_HEADER

T = TypeVar("T")
log = structlog.get_logger(__name__)


class ApiProblem(Exception):
    """A problem+json answer (RFC 9457)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('title', '')}: {body.get('detail', '')}")
        self.status = status
        self.body = body


class Created(msgspec.Struct, kw_only=True):
    id: UUID


class ReferralCreated(msgspec.Struct, kw_only=True):
    id: UUID
    patient_id: UUID
    target: str
    status: str


class TimelineItem(msgspec.Struct, kw_only=True):
    type: str
    occurred_at: datetime
    event_id: UUID | None = None


class AlertItem(msgspec.Struct, kw_only=True):
    kind: str
    severity: str
    status: str


class ClockReading(msgspec.Struct, kw_only=True):
    """The clinic clock as the coordinator serves it (GET and every move of /api/clock)."""

    now: datetime
    offset_seconds: float
    movable: bool
    alerts_raised: int = 0


class PathwaySummary(msgspec.Struct, kw_only=True):
    patient_id: UUID
    stage: str
    timeline: list[TimelineItem]
    alerts: list[AlertItem]


class FeedPage(msgspec.Struct, kw_only=True):
    items: list[dict[str, Any]]
    next_after: str
    remaining: int = 0


class FeedComparison(msgspec.Struct, kw_only=True):
    producer: str
    checked: int
    missing: dict[str, int]
    dead_lettered: dict[str, int]
    repaired: int
    failed: int
    in_flight: int = 0


class Reconciliation(msgspec.Struct, kw_only=True):
    consumer: str
    feeds: list[FeedComparison]
    unresolved: int


class DeadLetterView(msgspec.Struct, kw_only=True):
    """A dead letter as the platform's route answers it (shared.web.routes)."""

    id: int
    message_id: str
    queue_name: str
    event_id: str | None
    event_type: str | None
    error: str
    failed_at: datetime
    replayed_at: datetime | None
    replay_count: int


class PatientName(msgspec.Struct, kw_only=True):
    id: UUID
    given_name: str
    family_name: str


class PatientNames(msgspec.Struct, kw_only=True):
    items: list[PatientName]


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: httpx would build one per client, which costs
    about 20 ms of CPU, on every call one service makes to another."""
    return ssl.create_default_context()


def _http_options(
    base_url: str, token: str | None, timeout: float, correlation_id: str | None
) -> dict[str, Any]:
    """How both clients reach a service: its base URL, with the caller's token and the
    correlation id on every call, a timeout and the one TLS context."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if correlation_id:
        headers[CORRELATION_HEADER] = correlation_id
    return {
        "base_url": base_url.rstrip("/"),
        "headers": headers,
        "timeout": timeout,
        "verify": _tls(),
    }


def feed_params(after: str | int, limit: int, types: Iterable[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"after": str(after), "limit": limit}
    if types is not None:
        params["type"] = sorted(types)
    return params


def _decoded(response: httpx.Response, into: type[T]) -> T:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:200]}
        raise ApiProblem(response.status_code, body)
    return msgspec.json.decode(response.content, type=into)


class CarepathClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        correlation_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = _http_options(base_url, token, timeout, correlation_id)
        self._http = httpx.Client(transport=transport, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, into: type[T], **kwargs: Any) -> T:
        return _decoded(self._http.request(method, path, **kwargs), into)

    def get(self, path: str, **params: Any) -> Any:
        """Any JSON resource (another service's, read as this one: shared.peers)."""
        query = {k: v for k, v in params.items() if v is not None}
        return self._call("GET", path, Any, params=query)

    # referrals
    def register_patient(self, **patient: Any) -> Created:
        return self._call("POST", "/api/patients", Created, json=patient)

    def create_referral(self, **referral: Any) -> ReferralCreated:
        return self._call("POST", "/api/referrals", ReferralCreated, json=referral)

    # coordinator
    def pathway(self, patient_id: UUID | str) -> PathwaySummary:
        return self._call("GET", f"/api/pathways/{patient_id}", PathwaySummary)

    def clock(self) -> ClockReading:
        return self._call("GET", "/api/clock", ClockReading)

    def set_clock(self, moment: str) -> ClockReading:
        return self._call("POST", "/api/clock/set", ClockReading, json={"at": moment})

    def advance_clock(self, duration: str) -> ClockReading:
        return self._call("POST", "/api/clock/advance", ClockReading, json={"by": duration})

    def reset_clock(self) -> ClockReading:
        return self._call("POST", "/api/clock/reset", ClockReading)

    # platform, on every service
    def events(
        self, after: str | int = "0", limit: int = 100, types: Iterable[str] | None = None
    ) -> FeedPage:
        return self._call("GET", "/api/events", FeedPage, params=feed_params(after, limit, types))

    def dead_letters(self, include_replayed: bool = False) -> list[DeadLetterView]:
        return self._call(
            "GET",
            "/api/dead-letters",
            list[DeadLetterView],
            params={"include_replayed": str(include_replayed).lower()},
        )

    def replay_dead_letter(self, dead_letter_id: int) -> DeadLetterView:
        return self._call("POST", f"/api/dead-letters/{dead_letter_id}/replay", DeadLetterView)

    def reconcile(self, repair: bool = False) -> Reconciliation:
        # Reading whole feeds can take a while on a large clinic's history.
        return self._call(
            "POST", "/api/feeds/reconcile", Reconciliation, json={"repair": repair}, timeout=600
        )

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health", dict[str, Any])

    def ready(self) -> dict[str, Any]:
        return self._call("GET", "/ready", dict[str, Any])


def connection_pool(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """Connections one process keeps open to the others, for `AsyncCarepathClient(pool=)`:
    a request that calls another service then neither builds a client (about 1 ms of CPU,
    most of it reading proxy settings) nor opens a connection. Over the network, a service
    that could not be reached is not tried again for a few seconds (`UnreachablePause`)."""
    # No cap on connections: each open live stream the pages relay holds one for as long
    # as a dashboard is open, and a capped pool would make the next call wait for one.
    # An idle connection is dropped before the other side's uvicorn closes it (after 5 s),
    # so a call is not sent down a connection the server is just closing.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=50, keepalive_expiry=4.0)
    if transport is None:
        transport = UnreachablePause(httpx.AsyncHTTPTransport(verify=_tls(), limits=limits))
    # The TLS context and limits also reach any proxy's transport httpx mounts from the
    # environment.
    return httpx.AsyncClient(transport=transport, timeout=10.0, verify=_tls(), limits=limits)


# How long a service that could not be reached is not asked again. Long enough that a
# clinic's pages stop waiting out a connect timeout (10 s) on every read while a service
# is down; short enough that names are back within seconds of it coming back.
UNREACHABLE_PAUSE_S = 5.0


class UnreachablePause(httpx.AsyncBaseTransport):
    """A service that refused or timed out a connection is taken as down for
    `UNREACHABLE_PAUSE_S`: calls to it fail at once with the same `httpx.ConnectError` a
    refused connection gives, so each caller's own answer to an outage (a name shown as
    unavailable, a page showing ids) comes at once. The first call after the pause tries
    again. A slow answer, or an error the service sent, is no outage."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        pause_s: float = UNREACHABLE_PAUSE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._pause_s = pause_s
        self._clock = clock
        self._down_until: dict[tuple[str, str, int | None], float] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        peer = (request.url.scheme, request.url.host, request.url.port)
        down_until = self._down_until.get(peer)
        if down_until is not None and self._clock() < down_until:
            raise httpx.ConnectError(
                f"{request.url.host} was not reachable moments ago; not asked again yet",
                request=request,
            )
        try:
            response = await self._transport.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if down_until is None:
                log.warning("peer.unreachable", peer=request.url.host, port=request.url.port)
            self._down_until[peer] = self._clock() + self._pause_s
            raise
        if self._down_until.pop(peer, None) is not None:
            log.info("peer.reachable", peer=request.url.host, port=request.url.port)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class AsyncCarepathClient:
    """The calls one service makes to another from inside a request (async, so the
    waiting request holds no worker thread while the other service answers). With a
    `pool` the calls go over its open connections, and leaving the client leaves them open."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        correlation_id: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        pool: httpx.AsyncClient | None = None,
    ) -> None:
        options = _http_options(base_url, token, timeout, correlation_id)
        self._base_url: str = options.pop("base_url")
        self._headers: dict[str, str] = options.pop("headers")
        self._owns_http = pool is None
        self._http = pool or httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _request_options(self, path: str, headers: dict[str, str] | None) -> dict[str, Any]:
        return {"url": self._base_url + path, "headers": self._headers | (headers or {})}

    async def _call(
        self,
        method: str,
        path: str,
        into: type[T],
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        answer = await self._http.request(method, **self._request_options(path, headers), **kwargs)
        return _decoded(answer, into)

    async def events(
        self, after: str = "0", limit: int = 100, types: Iterable[str] | None = None
    ) -> FeedPage:
        params = feed_params(after, limit, types)
        return await self._call("GET", "/api/events", FeedPage, params=params)

    async def get(self, path: str, **params: Any) -> Any:
        """Any JSON resource, for pages that show another service's data as it is."""
        query = {k: v for k, v in params.items() if v is not None}
        return await self._call("GET", path, Any, params=query)

    async def post(
        self, path: str, body: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("POST", path, Any, json=body or {}, headers=headers)

    async def stream(self, path: str, *, last_event_id: str | None = None) -> AsyncIterator[bytes]:
        """A server-sent event stream as it arrives (no read timeout: it is long-lived)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else None
        timeout = httpx.Timeout(10.0, read=None)
        options = self._request_options(path, headers)
        async with self._http.stream("GET", **options, timeout=timeout) as answer:
            if answer.status_code >= 400:
                await answer.aread()
                _decoded(answer, Any)  # raises the problem
            async for chunk in answer.aiter_raw():
                yield chunk

    async def put(self, path: str, body: dict[str, Any]) -> Any:
        """A whole resource replaced (a diary's working hours): the same body twice is the
        same state, so no key is needed."""
        return await self._call("PUT", path, Any, json=body)

    async def patient_names(self, patient_ids: Iterable[UUID]) -> list[PatientName]:
        """Up to 200 patients' names in one call; those the caller may not see are left out."""
        params = [("id", str(patient_id)) for patient_id in patient_ids]
        names = await self._call("GET", "/api/patients/names", PatientNames, params=params)
        return names.items
