"""One envelope for every event (DESIGN.md, "The event envelope")."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from uuid6 import uuid7

from shared.clock import now as clinic_now
from shared.events.catalogue import Event, payload_type


class InvalidEvent(ValueError):
    """An event whose envelope or payload does not fit the catalogue."""


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """The aggregate an event belongs to, e.g. ``referral`` and its id."""

    type: str
    id: str


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who caused the event: a user id and role, or a service."""

    user_id: str
    role: str


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    event_id: UUID
    type: str
    schema_version: int
    occurred_at: datetime
    producer: str
    patient_id: UUID
    subject: Subject
    # Per aggregate 1, 2, 3 …; 0 until the outbox assigns it inside the transaction.
    sequence: int
    correlation_id: str
    causation_id: str | None
    actor: Actor
    data: dict[str, Any]

    def event(self) -> Event:
        """The payload as its catalogue type (an envelope from ``decode_envelope`` fits)."""
        expected = payload_type(self.type, self.schema_version)
        if expected is None:
            raise InvalidEvent(f"{self.type} v{self.schema_version} is not in the catalogue")
        try:
            return msgspec.convert(self.data, expected)
        except msgspec.ValidationError as error:
            raise InvalidEvent(f"{self.type} data: {error}") from None


def new_event(
    *,
    data: Event,
    producer: str,
    patient_id: UUID,
    subject: Subject,
    actor: Actor,
    correlation_id: str,
    causation_id: str | None = None,
    type: str | None = None,
    schema_version: int = 1,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Build an envelope for an event; its type is the event's tag.

    ``type`` is for a payload built as a shape several events share: it must name one of
    them, and the payload becomes that event.
    """
    event_type = type or data.event_type()
    expected = payload_type(event_type, schema_version)
    if expected is None:
        raise InvalidEvent(f"{event_type} v{schema_version} is not in the event catalogue")
    if not isinstance(data, expected):
        if not issubclass(expected, data.__class__):
            raise InvalidEvent(f"{event_type} v{schema_version} takes {expected.__name__}")
        data = expected(**msgspec.structs.asdict(data))
    body: dict[str, Any] = msgspec.to_builtins(data)
    body.pop("type", None)  # the envelope's own ``type`` says it
    return Envelope(
        event_id=uuid7(),
        type=event_type,
        schema_version=schema_version,
        occurred_at=occurred_at or clinic_now(),
        producer=producer,
        patient_id=patient_id,
        subject=subject,
        sequence=0,
        correlation_id=correlation_id,
        causation_id=causation_id,
        actor=actor,
        data=body,
    )


def encode_envelope(envelope: Envelope) -> dict[str, Any]:
    """The JSON-ready form that travels in messages and the feed."""
    result: dict[str, Any] = msgspec.to_builtins(envelope)
    return result


def decode_envelope(raw: Any, *, allow_unknown: bool = False) -> Envelope:
    """Validate an envelope and its payload on receipt.

    ``allow_unknown`` lets the coordinator store event types it does not know yet;
    a known type must still match its schema.
    """
    try:
        envelope = msgspec.convert(raw, Envelope)
    except msgspec.ValidationError as error:
        raise InvalidEvent(f"envelope: {error}") from None
    if envelope.occurred_at.tzinfo is None:
        raise InvalidEvent("envelope: occurred_at must carry a time zone")
    if envelope.sequence < 1:
        raise InvalidEvent("envelope: sequence must be 1 or more")
    expected = payload_type(envelope.type, envelope.schema_version)
    if expected is None:
        if allow_unknown:
            return envelope
        raise InvalidEvent(f"{envelope.type} v{envelope.schema_version} is not in the catalogue")
    envelope.event()
    return envelope
