"""The event envelope, the catalogue of typed payloads, and who subscribes to what."""

from shared.events.catalogue import CATALOGUE, payload_type
from shared.events.envelope import (
    Actor,
    Envelope,
    InvalidEvent,
    Subject,
    decode_envelope,
    encode_envelope,
    new_event,
)
from shared.events.subscriptions import consumers_of, queue_name

__all__ = [
    "CATALOGUE",
    "Actor",
    "Envelope",
    "InvalidEvent",
    "Subject",
    "consumers_of",
    "decode_envelope",
    "encode_envelope",
    "new_event",
    "payload_type",
    "queue_name",
]
