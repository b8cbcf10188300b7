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
        # The MDT's decision acts on the course (stop, continue, start maintenance) and
        # makes the psychology referral it decided on (issue 16).
        "mdt.review.recorded": frozenset({"infusions", "referrals"}),
        # An open urgent alert stops a discharge or a course closing until it is resolved.
        "pathway.urgent_alert.opened": frozenset({"infusions", "therapy"}),
        "pathway.alert.resolved": frozenset({"infusions", "therapy"}),
    }
)


def consumers_of(event_type: str) -> frozenset[str]:
    return SUBSCRIPTIONS.get(event_type, frozenset()) | {ALL_EVENTS_CONSUMER}


def queue_name(service: str) -> str:
    return f"{service}.events"


def actor_name(service: str) -> str:
    return f"{service}.handle_event"


# Which service's feed each event type is read from, by the type's first word.
PRODUCER_BY_PREFIX = MappingProxyType(
    {
        "patient": "referrals",
        "referral": "referrals",
        "infusion": "infusions",
        "therapy": "therapy",
        "appointment": "therapy",
        "measure": "therapy",
        "pathway": "coordinator",
        "mdt": "coordinator",
    }
)
PRODUCERS = ("referrals", "infusions", "therapy", "coordinator")


def producer_of(event_type: str) -> str:
    return PRODUCER_BY_PREFIX[event_type.split(".", 1)[0]]


def feeds_of(consumer: str) -> dict[str, frozenset[str] | None]:
    """The producer feeds a consumer catches up from, each with the event types it takes
    there (None: every type). Nobody reads its own feed: its own events are consumed in
    the transaction that wrote them."""
    if consumer == ALL_EVENTS_CONSUMER:
        return {producer: None for producer in PRODUCERS if producer != consumer}
    feeds: dict[str, set[str]] = {}
    for event_type, consumers in SUBSCRIPTIONS.items():
        if consumer in consumers:
            feeds.setdefault(producer_of(event_type), set()).add(event_type)
    return {producer: frozenset(types) for producer, types in sorted(feeds.items())}
