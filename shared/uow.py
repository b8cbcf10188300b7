"""The unit of work: one command's transaction (cosmicpython, chapter 6).

A command changes rows, causes events and touches patient data; all three commit
together or not at all. Events go to the outbox inside the same transaction (DESIGN.md,
"How an event travels"), and the audit row of what was touched rides along, so an
access is never recorded for a change that rolled back, nor a change kept unaudited.

Leaving the ``with`` block without ``commit()`` rolls back: a command that raises
writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shared.audit import AccessTrail, AuditAction
from shared.events import Actor, Envelope, Subject, new_event
from shared.events.catalogue import Event
from shared.observability import current_correlation_id
from shared.outbox import add_event


class UnitOfWork:
    """A session, the service it belongs to, and who is acting."""

    def __init__(
        self, session: Session, *, service: str, actor: Actor, trail: AccessTrail | None = None
    ) -> None:
        self.session = session
        self.service = service
        self.actor = actor
        self.trail = trail
        self.published: list[Envelope] = []
        self._committed = False

    def __enter__(self) -> Self:
        self._committed = False
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.rollback()

    def publish(
        self,
        event: Event,
        *,
        patient_id: UUID,
        subject: Subject,
        causation_id: str | None = None,
    ) -> Envelope:
        """Write an event to the outbox in this transaction, with the request's
        correlation id; it is sent once the transaction commits."""
        envelope = add_event(
            self.session,
            new_event(
                data=event,
                producer=self.service,
                patient_id=patient_id,
                subject=subject,
                actor=self.actor,
                correlation_id=current_correlation_id(),
                causation_id=causation_id,
            ),
        )
        self.published.append(envelope)
        return envelope

    def audit(
        self,
        action: AuditAction,
        entity_type: str,
        entity_id: str | None,
        patient_id: UUID | None,
        *,
        detail: str | None = None,
    ) -> None:
        """Record the access in this transaction (a worker's unit of work has no trail:
        the event it consumes was audited where it was caused)."""
        if self.trail is not None:
            self.trail.record(
                self.session, action, entity_type, entity_id, patient_id, detail=detail
            )

    def commit_read(
        self,
        entity_type: str,
        entity_id: str | None,
        patient_id: UUID | None,
        *,
        detail: str | None = None,
    ) -> None:
        """A read changes nothing, but it is audited: record the access and commit."""
        self.audit(AuditAction.read, entity_type, entity_id, patient_id, detail=detail)
        self.commit()

    def commit(self) -> None:
        """Keep everything; an integrity error leaves nothing written and is re-raised
        for the command to name the conflict."""
        try:
            self.session.commit()
        except IntegrityError:
            self.rollback()
            raise
        self._committed = True

    def rollback(self) -> None:
        self.session.rollback()
        self.published.clear()


# What a service does on one event type it consumes, in the consuming unit of work.
Reaction = Callable[[Any, Envelope, UnitOfWork], object]


def event_handler(
    service: str, reactions: Mapping[type[Event], Reaction]
) -> Callable[[Session, Envelope], None]:
    """A service's consumer, from its reaction to each event type it cares about; any
    other event is acknowledged and left alone.

    No commit here: the consume path commits the inbox row and the effect together.
    """
    by_type = {kind.event_type(): react for kind, react in reactions.items()}

    def handle_event(session: Session, envelope: Envelope) -> None:
        react = by_type.get(envelope.type)
        if react is None:
            return
        react(
            envelope.event(), envelope, UnitOfWork(session, service=service, actor=envelope.actor)
        )

    return handle_event
