"""What every service's domain shares: a broken rule, one state machine, and the
check that a stored value is what an event declares.

A rule a command breaks raises ``RuleBroken`` naming the field; the API answers 422 with
that field. A referral, a course, a session, an episode and an appointment each declare
their table of actions; an action the current status does not allow raises
``IllegalTransition``, which the API answers with a 409 naming the current status. So
aggregates stay pure, and no controller translates errors by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec


class RuleBroken(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IllegalTransition(ValueError):
    def __init__(self, thing: str, current: str, action: str) -> None:
        article = "an" if thing.startswith(tuple("aeiou")) else "a"
        super().__init__(f"{article} {thing} that is {current} cannot be {action}")
        self.thing = thing
        self.current = current
        self.action = action


class StateMachine:
    """``transitions`` maps each action to {status it may start from: status it leads to}."""

    def __init__(self, thing: str, transitions: Mapping[str, Mapping[str, str]]) -> None:
        self.thing = thing
        self.transitions = transitions

    def next_status(self, current: str, action: str) -> str:
        allowed = self.transitions.get(action)
        if allowed is None:
            raise ValueError(f"unknown action {action!r} for a {self.thing}")
        if current not in allowed:
            raise IllegalTransition(self.thing, current, action)
        return allowed[current]

    def allows(self, current: str, action: str) -> bool:
        return current in self.transitions.get(action, {})

    @property
    def statuses(self) -> frozenset[str]:
        return frozenset(
            status
            for moves in self.transitions.values()
            for pair in moves.items()
            for status in pair
        )


def as_declared(kind: Any, value: Any) -> Any:
    """A stored value as the event's type declares it (a literal, a list of them):
    checked, not assumed, so a row that holds anything else fails here, in the producer,
    rather than in every consumer."""
    return msgspec.convert(value, kind)
