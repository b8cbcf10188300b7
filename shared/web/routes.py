"""Routes every service has: its event feed, dead letters, feed positions and
reconciliation, operations, the clinical policy, health and readiness."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import httpx
import msgspec
from dramatiq import Message
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from sqlmodel import Session, col, func, select

from shared.audit import AccessTrail, AuditAction
from shared.auth import Role, requires
from shared.catchup import FeedLag, FeedReport, feed_lags
from shared.client import ApiProblem, DeadLetterView
from shared.errors import problem
from shared.feed import CURSOR_PATTERN, FeedCursor, read_feed
from shared.messaging import queue_depth
from shared.observability import get_logger
from shared.policy import PolicySetting, clinical_policy, described
from shared.runtime import ServiceRuntime, check_broker
from shared.tables import DeadLetter, OutboxEvent, utcnow
from shared.web.handlers import command, query

log = get_logger(__name__)

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

    @query(
        operation_id="readEventFeed",
        summary="This service's events in commit order, after a cursor",
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


# A row id as the databases keep it (BIGINT): a larger one cannot name a row.
MAX_ROW_ID = 2**63 - 1


class DeadLetterController(Controller):
    path = "/api/dead-letters"
    guards = [requires(Role.admin, Role.service)]

    @query(operation_id="listDeadLetters")
    def list_dead_letters(
        self, db: NamedDependency[Session], include_replayed: FromQuery[bool] = False
    ) -> list[DeadLetterView]:
        statement = select(DeadLetter).order_by(col(DeadLetter.id))
        if not include_replayed:
            statement = statement.where(col(DeadLetter.replayed_at).is_(None))
        return [_dead_letter_view(row) for row in db.exec(statement).all()]

    @command("/{dead_letter_id:int}/replay", operation_id="replayDeadLetter")
    def replay(
        self,
        db: NamedDependency[Session],
        runtime: NamedDependency[ServiceRuntime],
        dead_letter_id: Annotated[int, PathParameter(ge=1, le=MAX_ROW_ID)],
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
        row.replayed_at = utcnow()
        row.replay_count += 1
        db.add(row)
        db.commit()
        log.info("dead_letter.replayed", queue=row.queue_name, dead_letter_id=row.id)
        return _dead_letter_view(row)


def _dead_letter_view(row: DeadLetter) -> DeadLetterView:
    return msgspec.convert(row, DeadLetterView, from_attributes=True)


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

    @query(operation_id="listFeedPositions")
    def positions(self, db: NamedDependency[Session]) -> list[FeedLag]:
        return feed_lags(db)

    # Not idempotent by key: the repair consumes in transactions of its own, where no
    # stored answer could join it, and a repeat is harmless (the inbox makes each event
    # count once).
    @command(
        "/reconcile",
        operation_id="reconcileFeeds",
        summary="Compare every producer feed with this consumer's inbox; repair consumes "
        "what is missing",
        idempotent=False,
    )
    def reconcile(
        self, runtime: NamedDependency[ServiceRuntime], data: JSONBody[ReconcileRequest]
    ) -> ReconcileView:
        if not runtime.consumes:
            return ReconcileView(consumer=runtime.name, feeds=[], unresolved=0)
        try:
            reports = runtime.follower().reconcile_all(repair=data.repair)
        except (httpx.HTTPError, ApiProblem) as error:
            # A producer that does not answer now: say so, and try again later.
            raise ServiceUnavailableException(
                f"a producer's feed did not answer ({type(error).__name__}); try again later"
            ) from None
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


@query(
    "/api/operations",
    operation_id="operations",
    roles=(Role.admin, Role.service),
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
    lag = (utcnow() - oldest).total_seconds() if oldest else 0.0
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


@query(
    "/ready",
    operation_id="ready",
    summary="Databases answer (503 if not); the broker and each consumer's feeds are reported",
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
