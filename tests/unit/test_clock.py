"""The one clock: movable for training and tests, the system's in production (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import ClinicClock, ClockLocked, MemoryOffset, configure_clock, parse_duration
from shared.settings import BrokerKind, PlatformSettings, RunMode

SYSTEM = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)


class Ticking:
    """A system clock the test moves by hand, to show the clinic clock keeps flowing."""

    def __init__(self) -> None:
        self.at = SYSTEM

    def __call__(self) -> datetime:
        return self.at


def clock(movable: bool = True) -> tuple[ClinicClock, Ticking]:
    system = Ticking()
    return ClinicClock(MemoryOffset(), movable=movable, system=system), system


def test_an_unmoved_clock_is_the_system_clock() -> None:
    clinic, _ = clock()
    assert clinic.now() == SYSTEM
    assert clinic.offset == timedelta(0)


def test_a_set_clock_reads_the_time_set_and_keeps_flowing_from_it() -> None:
    clinic, system = clock()
    assert clinic.set(datetime(2027, 3, 1, 8, 30, tzinfo=UTC)) == datetime(
        2027, 3, 1, 8, 30, tzinfo=UTC
    )
    system.at += timedelta(minutes=5)
    assert clinic.now() == datetime(2027, 3, 1, 8, 35, tzinfo=UTC)


def test_a_time_with_another_offset_is_the_same_instant() -> None:
    clinic, _ = clock()
    moment = datetime.fromisoformat("2027-06-01T10:00:00+01:00")
    assert clinic.set(moment) == datetime(2027, 6, 1, 9, 0, tzinfo=UTC)


def test_a_time_without_an_offset_is_refused() -> None:
    clinic, _ = clock()
    with pytest.raises(ValueError, match="UTC offset"):
        clinic.set(datetime(2027, 6, 1, 10, 0))
    assert clinic.now() == SYSTEM


def test_advance_adds_to_any_earlier_move_and_reset_returns_to_the_system() -> None:
    clinic, _ = clock()
    clinic.advance(timedelta(days=3))
    assert clinic.advance(timedelta(hours=36)) == SYSTEM + timedelta(days=4, hours=12)
    assert clinic.reset() == SYSTEM


def test_the_clock_does_not_advance_backwards() -> None:
    clinic, _ = clock()
    with pytest.raises(ValueError, match="only moves on"):
        clinic.advance(timedelta(days=-1))
    assert clinic.now() == SYSTEM


def test_a_production_clock_cannot_be_moved_and_ignores_any_stored_offset() -> None:
    store = MemoryOffset()
    store.write(timedelta(days=30))
    system = Ticking()
    clinic = ClinicClock(store, movable=False, system=system)
    assert clinic.now() == SYSTEM
    for move in (
        lambda: clinic.set(SYSTEM + timedelta(days=1)),
        lambda: clinic.advance(timedelta(days=1)),
        clinic.reset,
    ):
        with pytest.raises(ClockLocked):
            move()
    assert clinic.now() == SYSTEM


def test_production_settings_give_an_immovable_clock() -> None:
    platform = PlatformSettings(
        env=RunMode.production, jwt_secret="x" * 40, broker=BrokerKind.memory
    )
    try:
        assert configure_clock(platform).movable is False
    finally:
        configure_clock(PlatformSettings())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", timedelta(days=3)),
        ("36h", timedelta(hours=36)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        (" 4D ", timedelta(days=4)),
    ],
)
def test_durations_read_as_a_trainer_types_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3", "3x", "d", "three days", "3d-1h", "-3d", "1.5d"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
