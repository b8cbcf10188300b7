"""CLINICAL.md "Change that matters", with worked examples at each threshold."""

from __future__ import annotations

from datetime import timedelta

import pytest
from msgspec.structs import replace

from services.coordinator.rules import (
    depression_anxiety_change,
    pain_change,
    reliable_deterioration_alert,
)
from shared.policy import default_policy

from .factories import T0


@pytest.mark.parametrize(
    ("first", "last", "improved", "deteriorated"),
    [(18, 12, True, False), (18, 13, False, False), (8, 14, False, True), (8, 13, False, False)],
)
def test_phq9_reliable_change_is_six_points(
    first: int, last: int, improved: bool, deteriorated: bool
) -> None:
    """NHS Talking Therapies: PHQ-9 reliable change is a fall (or rise) of 6 or more."""
    change = depression_anxiety_change("phq9", first, last)
    assert (change.reliable_improvement, change.reliable_deterioration) == (improved, deteriorated)


@pytest.mark.parametrize(
    ("first", "last", "improved", "deteriorated"),
    [(12, 8, True, False), (12, 9, False, False), (6, 10, False, True), (6, 9, False, False)],
)
def test_gad7_reliable_change_is_four_points(
    first: int, last: int, improved: bool, deteriorated: bool
) -> None:
    change = depression_anxiety_change("gad7", first, last)
    assert (change.reliable_improvement, change.reliable_deterioration) == (improved, deteriorated)


@pytest.mark.parametrize(
    ("instrument", "first", "last", "recovered"),
    [
        ("phq9", 10, 9, True),  # at caseness (≥ 10) first, not at the last
        ("phq9", 10, 10, False),
        ("phq9", 9, 3, None),  # not a case at the start: recovery does not apply
        ("gad7", 8, 7, True),  # GAD-7 caseness is 8
        ("gad7", 7, 2, None),
    ],
)
def test_recovery_is_leaving_caseness(
    instrument: str, first: int, last: int, recovered: bool | None
) -> None:
    """NHS Digital: recovery = at caseness at the first score, not at the last."""
    assert depression_anxiety_change(instrument, first, last).recovered is recovered


@pytest.mark.parametrize(("first", "last", "response"), [(20, 10, True), (20, 11, False)])
def test_ketamine_depression_response_is_a_halving_of_phq9(
    first: int, last: int, response: bool
) -> None:
    """Sanacora 2017: PHQ-9 falling by 50% or more from baseline is a response."""
    assert depression_anxiety_change("phq9", first, last).response is response
    assert depression_anxiety_change("gad7", first, last).response is None


@pytest.mark.parametrize(
    ("first", "last", "meaningful", "substantial"),
    [
        (10, 7, True, False),
        (10, 8, False, False),
        (8, 4, True, True),
        (8, 5, True, False),
        (0, 0, False, False),
    ],
)
def test_pain_relief_is_thirty_and_fifty_percent(
    first: int, last: int, meaningful: bool, substantial: bool
) -> None:
    """IMMPACT (Dworkin et al. 2008): ≥ 30% meaningful, ≥ 50% substantial."""
    change = pain_change(first, last)
    assert (change.meaningful_relief, change.substantial_relief) == (meaningful, substantial)


def test_the_thresholds_are_settings() -> None:
    strict = replace(default_policy().change, phq9_reliable_change=8)
    assert not depression_anxiety_change("phq9", 18, 12, strict).reliable_improvement


def test_reliable_deterioration_raises_an_alert_and_improvement_does_not() -> None:
    worse = depression_anxiety_change("phq9", 8, 15)
    alert = reliable_deterioration_alert("phq9", worse, T0)
    assert alert is not None
    assert (alert.kind, alert.owner_role, alert.due) == (
        "reliable-deterioration",
        "mdt",
        T0 + timedelta(days=7),
    )
    better = depression_anxiety_change("phq9", 15, 8)
    assert reliable_deterioration_alert("phq9", better, T0) is None


@pytest.mark.parametrize(
    ("sessions", "responded", "raised"),
    [(2, False, False), (3, False, True), (3, True, False), (4, False, False)],
)
def test_no_response_after_three_infusions_asks_the_mdt_to_review(
    sessions: int, responded: bool, raised: bool
) -> None:
    """CLINICAL.md Course rules: no meaningful response after 3 infusions → MDT review
    (local policy); raised once, at the third."""
    from services.coordinator.rules import no_response_alert

    alert = no_response_alert(sessions, responded, T0)
    assert (alert is not None) is raised
    if alert is not None:
        assert (alert.kind, alert.owner_role, alert.severity) == ("no-response", "mdt", "warning")
