"""The clinic clock over HTTP: read by anyone signed in, moved only outside production.

The coordinator serves it because its time rules are what a move is for: after any
move they run at once, so a trainer who advances three weeks sees the breached waits
without waiting for the next periodic check.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec
from litestar import Controller
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody

from services.coordinator.clock import tick
from shared.auth import Role
from shared.client import ClockReading
from shared.clock import ClinicClock, ClockLocked, clinic_clock, parse_duration
from shared.domain import RuleBroken
from shared.runtime import ServiceRuntime
from shared.web.handlers import command, query

STAFF = tuple(role for role in Role if role is not Role.service)
# A move runs the time rules at once, in transactions of their own, which an idempotency
# claim held open around the route would block (SQLite has one writer). Setting or
# resetting twice lands on the same time; advancing is a trainer's tool, not a clinic's.
ADMIN = (Role.admin,)


class ClockSet(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    at: datetime


class ClockAdvance(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    by: str


class ClockController(Controller):
    path = "/api/clock"
    tags = ["clock"]

    @query(operation_id="readClock", roles=STAFF)
    def read(self) -> ClockReading:
        return _view(clinic_clock())

    @command(
        "/set",
        operation_id="setClock",
        roles=ADMIN,
        idempotent=False,
        summary="Set the clinic's time (not in production); the time rules run at once",
    )
    def set(self, data: JSONBody[ClockSet], state: State) -> ClockReading:
        return _move(state, lambda clock: clock.set(data.at), field="at")

    @command(
        "/advance",
        operation_id="advanceClock",
        roles=ADMIN,
        idempotent=False,
        summary="Move the clinic's time on by a duration such as 3d or 36h (not in production)",
    )
    def advance(self, data: JSONBody[ClockAdvance], state: State) -> ClockReading:
        return _move(state, lambda clock: clock.advance(parse_duration(data.by)), field="by")

    @command(
        "/reset",
        operation_id="resetClock",
        roles=ADMIN,
        idempotent=False,
        summary="Back to the system's time (not in production)",
    )
    def reset(self, state: State) -> ClockReading:
        return _move(state, ClinicClock.reset)


def _move(
    state: State, move: Callable[[ClinicClock], object], field: str = "clock"
) -> ClockReading:
    clock = clinic_clock()
    try:
        move(clock)
    except ClockLocked as error:
        raise PermissionDeniedException(str(error)) from None
    except ValueError as error:
        raise RuleBroken(field, str(error)) from None
    runtime: ServiceRuntime = state.runtimes["coordinator"]
    return _view(clock, alerts_raised=tick(runtime, clock.now()))


def _view(clock: ClinicClock, alerts_raised: int = 0) -> ClockReading:
    return ClockReading(
        now=clock.now(),
        offset_seconds=clock.offset.total_seconds(),
        movable=clock.movable,
        alerts_raised=alerts_raised,
    )
