"""The demo's timeline: journeys in threads take their steps in time order on one clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from services.demo import Timeline

OPENED = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _day(days: int) -> datetime:
    return OPENED + timedelta(days=days)


def _run(
    journeys: list[list[int]], fail_after: dict[int, int] | None = None
) -> tuple[list[tuple[int, datetime]], list[datetime]]:
    """Each journey a thread stepping at these days; the steps as they ran, and the moves."""
    moves: list[datetime] = []
    steps: list[tuple[int, datetime]] = []
    timeline = Timeline(moves.append, len(journeys), OPENED)

    def live(number: int, days: list[int]) -> None:
        try:
            for count, day in enumerate(days):
                if fail_after and fail_after.get(number) == count:
                    raise RuntimeError("an API refused a step")
                timeline.at(_day(day))
                steps.append((number, _day(day)))
        except RuntimeError:
            pass
        finally:
            timeline.finish()

    threads = [
        threading.Thread(target=live, args=(number, days)) for number, days in enumerate(journeys)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a journey never got its turn"
    return steps, moves


def test_steps_of_every_journey_run_in_time_order_and_the_clock_only_moves_forward() -> None:
    steps, moves = _run([[10, 40, 41], [5, 60], [20, 21, 22, 90], [1]])

    assert [moment for _journey, moment in steps] == sorted(
        _day(d) for d in (10, 40, 41, 5, 60, 20, 21, 22, 90, 1)
    )
    assert moves == sorted(moves) and len(moves) == len(set(moves))
    assert moves[-1] == _day(90)


def test_a_step_asked_for_a_moment_already_past_runs_now_without_moving_the_clock_back() -> None:
    steps, moves = _run([[30, 10], [20]])

    assert steps[0] == (1, _day(20))
    assert steps[1] == (0, _day(30))
    assert steps[2] == (0, _day(10))  # asked for the past: runs at once, at day 30
    assert moves == [_day(20), _day(30)]


def test_a_journey_that_fails_part_way_hands_on_its_turn() -> None:
    steps, _moves = _run([[1, 2, 3], [4, 5]], fail_after={0: 1})

    assert [journey for journey, _moment in steps] == [0, 1, 1]


@pytest.mark.parametrize("journeys", [0, 1])
def test_an_empty_or_single_cohort_finishes(journeys: int) -> None:
    steps, _moves = _run([[3]] * journeys)

    assert len(steps) == journeys
