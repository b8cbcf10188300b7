"""Idempotency keys: a repeated request gets the first one's answer, not a second effect.

The semantics clinics' integrators know from Stripe. Every route that creates or changes
something accepts an ``Idempotency-Key`` header (shared.web.handlers.command):

- the first request with a key runs; its answer (status, media type, body) is stored
  with the key, the caller and a hash of the request, in the *same transaction* as its
  change, its outbox events and its audit: all of it commits, or none of it does;
- a repeat with the same key, method, path and body gets that answer back, marked
  ``Idempotent-Replayed: true``, and changes nothing;
- the same key with another request is refused (422 naming the header);
- two requests with one key at once have one effect: the key is claimed (inserted)
  before the command runs, and the second request's claim waits on the first's
  (PostgreSQL's unique index, SQLite's write lock), then finds the stored answer;
- a request that fails (4xx or 5xx) stores nothing, so a corrected retry with the same
  key can still succeed;
- keys are the caller's (role and user id): another person's identical key is another
  key; a key is kept for the policy's ``requests.idempotency_key_hours`` (24 h), after
  which it acts as new and its stored answer, which is patient data, is deleted.

This module is the store: claim, keep, abandon and sweep. It knows nothing of HTTP
beyond the problems it raises; shared.web.idempotency wires it into the routes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from shared.clock import now as clinic_now
from shared.db import CarepathSession, SessionFactory
from shared.errors import Conflict, FieldProblem
from shared.policy import clinical_policy
from shared.tables import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Printable ASCII, space included (a header value cannot begin or end with one).
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
# A claim is retried when the row it collided with is gone by the time it is read (the
# other request rolled back, or its key expired and was deleted).
_CLAIM_ATTEMPTS = 3
# Written on the claimed row until the answer is; never seen committed, since the claim
# and the answer commit together.
_PENDING = 0


@dataclass(frozen=True)
class IdempotentRequest:
    """What a key stands for: this caller's request, by method, path and body hash."""

    key: str
    caller: str
    method: str
    path: str
    body_sha256: str


@dataclass(frozen=True)
class StoredAnswer:
    """A response as it was sent: replayed byte for byte."""

    status: int
    media_type: str
    body: bytes


def checked_key(value: str) -> str:
    """The key as sent, if it is 1 to 255 printable ASCII characters; else 422."""
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not _PRINTABLE.fullmatch(value):
        raise FieldProblem(HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return value


def idempotent_request(
    key: str, *, user_id: str, role: str, method: str, path: str, body: bytes
) -> IdempotentRequest:
    return IdempotentRequest(
        key=checked_key(key),
        caller=f"{role}:{user_id}",
        method=method,
        path=path,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )


def key_lifetime() -> timedelta:
    return timedelta(hours=clinical_policy().requests.idempotency_key_hours)


def claim(
    session: Session, request: IdempotentRequest, *, now: datetime | None = None
) -> IdempotencyKey | StoredAnswer:
    """Claim the key in the session's transaction and hold its commit; or, if a request
    with this key already completed, its answer.

    The claim is the row itself, inserted before the command runs: a second request with
    the key waits on it until the first commits (and then reads its answer) or rolls
    back (and then claims the key itself). Raises 422 when the key was used with another
    request, 409 if it is still in use after a few tries.
    """
    held = _held(session)
    now = now or clinic_now()
    for _ in range(_CLAIM_ATTEMPTS):
        row = IdempotencyKey(
            **asdict(request),
            status=_PENDING,
            media_type="",
            response=b"",
            created_at=now,
            expires_at=now + key_lifetime(),
        )
        held.add(row)
        try:
            held.flush()
        except IntegrityError:
            held.rollback()
        else:
            held.hold_commit()
            return row
        stored = held.get(IdempotencyKey, (request.caller, request.key))
        if stored is None:
            continue
        if stored.expires_at <= now:
            # An expired key acts as new: its old answer goes, in this transaction.
            _delete_expired(held, now, caller=request.caller, key=request.key)
            continue
        try:
            return _answer_for(stored, request)
        finally:
            held.rollback()  # nothing of this request's is kept, answered or refused
    raise Conflict(f"a request with this {HEADER} is in progress; retry shortly", field=HEADER)


def _answer_for(stored: IdempotencyKey, request: IdempotentRequest) -> StoredAnswer:
    if (stored.method, stored.path, stored.body_sha256) != (
        request.method,
        request.path,
        request.body_sha256,
    ):
        raise FieldProblem(
            HEADER,
            "was already used for another request (a different method, path or body); "
            "send a new key for a new request",
        )
    if stored.status == _PENDING:  # only if a commit escaped its hold
        raise Conflict(f"a request with this {HEADER} is in progress; retry shortly", field=HEADER)
    return StoredAnswer(status=stored.status, media_type=stored.media_type, body=stored.response)


def keep(session: Session, claimed: IdempotencyKey, answer: StoredAnswer) -> None:
    """Store the answer with the key and commit it with the change it answers for."""
    held = _held(session)
    if claimed not in held:
        # The command rolled its transaction back and went on to succeed: claim again.
        # A request that took the key meanwhile makes this one fail without effect.
        held.add(claimed)
    claimed.status = answer.status
    claimed.media_type = answer.media_type
    claimed.response = answer.body
    held.release_commit()
    try:
        held.commit()
    except IntegrityError:
        held.rollback()
        raise Conflict(
            f"another request with this {HEADER} completed first; retry to get its answer",
            field=HEADER,
        ) from None


def abandon(session: Session) -> None:
    """A failed request keeps nothing: neither its change nor its key."""
    held = _held(session)
    held.release_commit()
    held.rollback()


def sweep(sessions: SessionFactory, now: datetime | None = None) -> int:
    """Delete every expired key with its stored answer; returns how many went."""
    with sessions() as session:
        deleted = _delete_expired(session, now or clinic_now())
        session.commit()
    return deleted


def _delete_expired(
    session: Session, now: datetime, *, caller: str | None = None, key: str | None = None
) -> int:
    statement = delete(IdempotencyKey).where(col(IdempotencyKey.expires_at) <= now)
    if caller is not None and key is not None:
        statement = statement.where(
            col(IdempotencyKey.caller) == caller, col(IdempotencyKey.key) == key
        )
    result = cast(CursorResult[tuple[()]], session.execute(statement))
    return int(result.rowcount or 0)


def _held(session: Session) -> CarepathSession:
    if not isinstance(session, CarepathSession):
        raise TypeError("idempotency keys need a session from shared.db.make_session_factory")
    return session
