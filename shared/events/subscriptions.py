"""Fan-out: which services consume which event types.

dramatiq has no pub/sub, so the relay sends one message per consuming service, each
to that service's own queue and actor.
"""

from __future__ import annotations

from types import MappingProxyType

# The coordinator folds every event into the pathway, so it consumes them all.
ALL_EVENTS_CONSUMER = "coordinator"

SUBSCRIPTIONS = MappingProxyType(
    {
        "referral.accepted": frozenset({"infusions", "therapy"}),
        "infusion.course.closed": frozenset({"referrals"}),
        "therapy.episode.discharged": frozenset({"referrals"}),
    }
)


def consumers_of(event_type: str) -> frozenset[str]:
    return SUBSCRIPTIONS.get(event_type, frozenset()) | {ALL_EVENTS_CONSUMER}


def queue_name(service: str) -> str:
    return f"{service}.events"


def actor_name(service: str) -> str:
    return f"{service}.handle_event"
