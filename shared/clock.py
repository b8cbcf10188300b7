"""The one clock every clinical rule reads.

In production it is the system's clock and nothing can move it. Anywhere else a trainer
or a test can set it or move it on, for the whole running system at once: what is kept
is the clinic clock's offset from the system clock, where every process reads it (Redis
when the services run distributed, this process's memory when they run embedded), so an
API, its worker and the coordinator's periodic check agree on "now" and time keeps
flowing from the moment set.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis

from shared.observability import get_logger
from shared.settings import BrokerKind, PlatformSettings, RunMode

log = get_logger(__name__)

# Another process sees a change within this long; the process that made it, at once.
REDIS_REFRESH_S = 1.0


class ClockLocked(RuntimeError):
    """Raised when something tries to move a production clock."""


class OffsetStore(Protocol):
    def read(self) -> timedelta: ...

    def write(self, offset: timedelta) -> None: ...


class MemoryOffset:
    """The embedded system's offset: every service runs in this one process."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def read(self) -> timedelta:
        return self.offset

    def write(self, offset: timedelta) -> None:
        self.offset = offset


class RedisOffset:
    """The distributed system's offset, in one Redis key every process reads.

    Read at most once a second: `now()` is called on every write and must cost nothing.
    If Redis cannot be read the last offset stands, so a broker outage never stops a rule.
    """

    def __init__(self, url: str, key: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.key = key
        self.offset = timedelta(0)
        self.read_at = float("-inf")
        self.lock = threading.Lock()

    def read(self) -> timedelta:
        if time.monotonic() - self.read_at < REDIS_REFRESH_S:
            return self.offset
        with self.lock:
            self.read_at = time.monotonic()
            try:
                stored = self.client.get(self.key)
            except redis.RedisError:
                log.warning("clock.offset_unreadable", key=self.key)
                return self.offset
            self.offset = timedelta(microseconds=int(stored)) if stored else timedelta(0)
            return self.offset

    def write(self, offset: timedelta) -> None:
        micros = offset // timedelta(microseconds=1)
        if micros:
            self.client.set(self.key, micros)
        else:
            self.client.delete(self.key)
        with self.lock:
            self.offset, self.read_at = offset, time.monotonic()


def system_now() -> datetime:
    return datetime.now(UTC)


class ClinicClock:
    """Now, as every rule sees it: the system's time plus an offset only training can set."""

    def __init__(
        self,
        store: OffsetStore,
        *,
        movable: bool = True,
        system: Callable[[], datetime] = system_now,
    ) -> None:
        self.store = store
        self.movable = movable
        self.system = system

    def now(self) -> datetime:
        return self.system() + self.store.read() if self.movable else self.system()

    @property
    def offset(self) -> timedelta:
        return self.store.read() if self.movable else timedelta(0)

    def set(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("a clock time needs its UTC offset, e.g. 2027-01-04T09:00:00Z")
        self._write(moment.astimezone(UTC) - self.system())
        return self.now()

    def advance(self, by: timedelta) -> datetime:
        if by < timedelta(0):
            raise ValueError("the clock only moves on; set it to go back")
        self._write(self.offset + by)
        return self.now()

    def reset(self) -> datetime:
        self._write(timedelta(0))
        return self.now()

    def _write(self, offset: timedelta) -> None:
        if not self.movable:
            raise ClockLocked("in production the clock is the system's and cannot be moved")
        self.store.write(offset)
        log.info("clock.moved", offset_s=offset.total_seconds())


_clock = ClinicClock(MemoryOffset())


def now() -> datetime:
    """The clinic's time, aware UTC: the only place a rule may ask what time it is."""
    return _clock.now()


def clinic_clock() -> ClinicClock:
    return _clock


def configure_clock(platform: PlatformSettings) -> ClinicClock:
    """Point this process's clock where every process of the system reads it."""
    global _clock
    movable = platform.env is not RunMode.production
    if movable and platform.broker is BrokerKind.redis:
        store: OffsetStore = RedisOffset(platform.redis_url, f"{platform.redis_namespace}:clock")
    else:
        store = MemoryOffset()
    _clock = ClinicClock(store, movable=movable)
    return _clock


_DURATION = re.compile(r"(\d+)\s*([wdhm])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """'3d', '36h', '2w', '1d12h', '90m' → a timedelta; anything else is a ValueError."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or _DURATION.sub("", compact).strip():
        raise ValueError(f"not a duration: {text!r} (use w, d, h, m, e.g. 3d or 36h)")
    return sum((timedelta(**{_UNITS[unit]: int(n)}) for n, unit in parts), timedelta(0))
