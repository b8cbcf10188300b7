"""Idempotency keys on the routes (the store is shared.idempotency).

``command`` gives every route that changes something the ``idempotency`` dependency,
which reads and checks the ``Idempotency-Key`` header (and so documents it in the
OpenAPI schema of each such route), and wraps the handler in ``answer_once``: with a key,
the handler runs between a claim and a commit that stores its answer; without one it
runs exactly as before.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response
from litestar.concurrency import sync_to_thread
from litestar.di import NamedDependency
from litestar.params import HeaderParameter
from litestar.serialization import encode_json
from sqlmodel import Session

from shared import idempotency
from shared.audit import AccessTrail, AuditAction
from shared.auth import User
from shared.idempotency import HEADER, REPLAYED_HEADER, IdempotentRequest, StoredAnswer
from shared.observability import get_logger
from shared.tables import IdempotencyKey

log = get_logger(__name__)

KEY_DESCRIPTION = (
    "Makes a retry safe (a double click, a resubmitted form, a retry after a timeout). "
    "The first request with a key runs and its answer is stored with the key; a repeat "
    "with the same key and the same method, path and body gets that answer again, with "
    f"`{REPLAYED_HEADER}: true`, and changes nothing. The same key with another request "
    "is refused (422). A request that fails (4xx or 5xx) stores nothing, so a corrected "
    "retry may reuse its key. Keys are per caller, 1 to 255 printable ASCII characters "
    "(a UUID is a good key), and kept for the policy's `requests.idempotency_key_hours` "
    "(24 h by default; `GET /api/policy`)."
)


@dataclass(frozen=True)
class KeyedRequest:
    """A request sent with a key, and what a replay of its answer must audit."""

    request: IdempotentRequest
    resource: str
    patient_id: UUID | None


async def provide_idempotency(
    request: Request[Any, Any, Any],
    user: NamedDependency[User],
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(name=HEADER, required=False, description=KEY_DESCRIPTION),
    ] = None,
) -> KeyedRequest | None:
    if idempotency_key is None:
        return None
    body = await request.body()
    keyed = idempotency.idempotent_request(
        idempotency_key,
        user_id=user.id,
        role=user.role.value,
        method=request.method,
        path=request.url.path,
        body=body,
    )
    return KeyedRequest(
        request=keyed,
        resource=str(request.route_handler.opt.get("resource", "api")),
        patient_id=_patient_id(request.path_params.get("patient_id")),
    )


def _patient_id(value: object) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value)) if value is not None else None
    except ValueError:
        return None


# What answer_once needs from the request besides what the handler itself takes.
_NEEDED: dict[str, Any] = {
    "idempotency": NamedDependency[KeyedRequest | None],  # type: ignore[misc]
    "db": NamedDependency[Session],
    "audit": NamedDependency[AccessTrail],
}


def answer_once(fn: Callable[..., Any], status_code: int) -> Callable[..., Any]:
    """The handler, answering a repeated key with the stored answer.

    Litestar injects by the handler's signature, so the wrapper declares the handler's
    parameters plus the ones it needs; it passes on only those the handler declared.
    """
    signature = inspect.signature(fn)
    added = {name: kind for name, kind in _NEEDED.items() if name not in signature.parameters}
    parameters = [
        *signature.parameters.values(),
        *(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind)
            for name, kind in added.items()
        ),
    ]

    def needs(kwargs: dict[str, Any]) -> tuple[KeyedRequest | None, Session, AccessTrail]:
        taken = {name: kwargs.pop(name) if name in added else kwargs[name] for name in _NEEDED}
        return taken["idempotency"], taken["db"], taken["audit"]

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            keyed, db, audit = needs(kwargs)
            if keyed is None:
                return await fn(*args, **kwargs)
            claimed = await sync_to_thread(_claim, db, audit, keyed)
            if isinstance(claimed, StoredAnswer):
                return _replayed(claimed)
            try:
                answer = _answer(await fn(*args, **kwargs), status_code)
            except BaseException:
                await sync_to_thread(_abandon, db)
                raise
            return await sync_to_thread(_keep, db, claimed, answer)

        wrapper: Callable[..., Any] = run_async
    else:

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            keyed, db, audit = needs(kwargs)
            if keyed is None:
                return fn(*args, **kwargs)
            claimed = _claim(db, audit, keyed)
            if isinstance(claimed, StoredAnswer):
                return _replayed(claimed)
            try:
                answer = _answer(fn(*args, **kwargs), status_code)
            except BaseException:
                _abandon(db)
                raise
            return _keep(db, claimed, answer)

        wrapper = run
    # inspect.signature (which Litestar reads) prefers __signature__ to __wrapped__.
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, **added}
    return wrapper


def _claim(db: Session, audit: AccessTrail, keyed: KeyedRequest) -> IdempotencyKey | StoredAnswer:
    claimed = idempotency.claim(db, keyed.request)
    if isinstance(claimed, StoredAnswer):
        # Answering again shows the caller patient data again: that is a read.
        audit.record(
            db,
            AuditAction.read,
            keyed.resource,
            None,
            keyed.patient_id,
            detail=f"replayed the stored answer to an {HEADER}",
        )
        db.commit()
    return claimed


def _abandon(db: Session) -> None:
    try:
        idempotency.abandon(db)
    except Exception as error:  # the request's own error is the one to answer with
        log.warning("idempotency.abandon_failed", error=type(error).__name__)


def _answer(result: Any, status_code: int) -> StoredAnswer:
    if isinstance(result, Response):
        content = result.content
        body = content if isinstance(content, bytes) else encode_json(content)
        status = result.status_code if result.status_code is not None else status_code
        return StoredAnswer(status=status, media_type=str(result.media_type), body=body)
    return StoredAnswer(status=status_code, media_type="application/json", body=encode_json(result))


def _keep(db: Session, claimed: IdempotencyKey, answer: StoredAnswer) -> Response[bytes]:
    if answer.status >= 400:
        idempotency.abandon(db)  # a failed request keeps nothing
    else:
        idempotency.keep(db, claimed, answer)
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type)


def _replayed(answer: StoredAnswer) -> Response[bytes]:
    return Response(
        answer.body,
        status_code=answer.status,
        media_type=answer.media_type,
        headers={REPLAYED_HEADER: "true"},
    )


# --- page forms ----------------------------------------------------------------------------

# The hidden field every rendered form carries: its own key (issue 16), so a double click
# or a resubmitted page makes one change and shows the first answer.
FORM_KEY = "form_key"
