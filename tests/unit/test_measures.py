"""Scoring of PHQ-9, GAD-7 and pain NRS (CLINICAL.md, "Measures")."""

from __future__ import annotations

from typing import Any

import pytest

from shared.measures import (
    GAD7,
    PEG,
    PHQ9,
    InvalidItems,
    check_pain_nrs,
    peg_mean,
    phq9_item9,
    score,
)


def items_totalling(total: int, count: int, item_max: int = 3) -> list[int]:
    """Items of one instrument whose sum is ``total``, filled from the front."""
    assert 0 <= total <= count * item_max
    items = []
    for _ in range(count):
        value = min(item_max, total)
        items.append(value)
        total -= value
    return items


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately severe"),
        (19, "moderately severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_bands_at_every_edge(total: int, band: str) -> None:
    """CLINICAL.md Measures, PHQ-9 (Kroenke, Spitzer & Williams 2001, J Gen Intern Med
    16:606): 0-4 minimal, 5-9 mild, 10-14 moderate, 15-19 moderately severe, 20-27 severe."""
    result = score(PHQ9, items_totalling(total, 9))
    assert result.total == total
    assert result.band == band
    assert result.instrument == "PHQ-9"


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "severe"),
        (21, "severe"),
    ],
)
def test_gad7_bands_at_every_edge(total: int, band: str) -> None:
    """CLINICAL.md Measures, GAD-7 (Spitzer et al. 2006, Arch Intern Med 166:1092):
    0-4 minimal, 5-9 mild, 10-14 moderate, 15-21 severe."""
    result = score(GAD7, items_totalling(total, 7))
    assert result.total == total
    assert result.band == band
    assert result.instrument == "GAD-7"


def test_score_keeps_the_items_in_order() -> None:
    items = [0, 1, 2, 3, 0, 1, 2, 3, 1]
    result = score(PHQ9, items)
    assert result.items == tuple(items)
    assert result.total == 13


def test_phq9_item9_is_the_ninth_item() -> None:
    """CLINICAL.md Measures: item 9 is "thoughts that you would be better off dead or of
    hurting yourself" (the last of nine)."""
    assert phq9_item9(score(PHQ9, [0, 0, 0, 0, 0, 0, 0, 0, 2])) == 2
    assert phq9_item9(score(PHQ9, [3, 3, 3, 3, 3, 3, 3, 3, 0])) == 0


@pytest.mark.parametrize(("instrument", "count"), [(PHQ9, 8), (PHQ9, 10), (GAD7, 6), (GAD7, 9)])
def test_wrong_item_count_names_the_items_field(instrument: Any, count: int) -> None:
    """CLINICAL.md Measures: an item count that does not fit the instrument is refused."""
    with pytest.raises(InvalidItems) as raised:
        score(instrument, [0] * count, "baseline.phq9_items")
    assert raised.value.field == "baseline.phq9_items"
    assert str(instrument.item_count) in raised.value.message


def test_empty_items_are_refused() -> None:
    with pytest.raises(InvalidItems) as raised:
        score(PHQ9, [])
    assert raised.value.field == "items"


@pytest.mark.parametrize(("index", "value"), [(3, 4), (0, -1), (8, 99), (5, 10)])
def test_item_out_of_range_names_the_item_index(index: int, value: int) -> None:
    """CLINICAL.md Measures: PHQ-9 items are each 0-3; a 422 names the item."""
    items = [1] * 9
    items[index] = value
    with pytest.raises(InvalidItems) as raised:
        score(PHQ9, items)
    assert raised.value.field == f"items[{index}]"
    assert "0 to 3" in raised.value.message


def test_item_out_of_range_uses_the_callers_field_prefix() -> None:
    items = [0, 0, 0, 4, 0, 0, 0]
    with pytest.raises(InvalidItems) as raised:
        score(GAD7, items, "gad7_items")
    assert raised.value.field == "gad7_items[3]"


@pytest.mark.parametrize("bad", [True, False, 1.0, "1", None])
def test_non_integer_items_are_refused_bool_included(bad: Any) -> None:
    items: list[Any] = [0] * 9
    items[2] = bad
    with pytest.raises(InvalidItems) as raised:
        score(PHQ9, items)
    assert raised.value.field == "items[2]"


def test_the_first_bad_item_is_the_one_named() -> None:
    with pytest.raises(InvalidItems) as raised:
        score(PHQ9, [0, 0, 5, 0, 7, 0, 0, 0, 0])
    assert raised.value.field == "items[2]"


@pytest.mark.parametrize("value", [0, 1, 5, 9, 10])
def test_pain_nrs_accepts_0_to_10(value: int) -> None:
    """CLINICAL.md Measures: pain NRS is one item 0-10 (IMMPACT, Dworkin et al. 2008,
    J Pain 9:105)."""
    assert check_pain_nrs(value) == value


@pytest.mark.parametrize("value", [-1, 11, 100, True, False, 5.0, "5"])
def test_pain_nrs_refuses_values_outside_0_to_10_and_non_integers(value: Any) -> None:
    with pytest.raises(InvalidItems) as raised:
        check_pain_nrs(value, "baseline.pain_nrs")
    assert raised.value.field == "baseline.pain_nrs"


def test_invalid_items_message_starts_with_the_field() -> None:
    error = InvalidItems("items[1]", "PHQ-9 items are 0 to 3")
    assert str(error) == "items[1]: PHQ-9 items are 0 to 3"


@pytest.mark.parametrize(
    ("items", "mean"), [([0, 0, 0], 0.0), ([10, 10, 10], 10.0), ([7, 6, 4], 5.7), ([1, 0, 0], 0.3)]
)
def test_peg_is_the_mean_of_three_items_0_to_10(items: list[int], mean: float) -> None:
    """CLINICAL.md Measures: PEG, 3 items each 0 to 10, mean 0 to 10 (Krebs et al. 2009)."""
    assert peg_mean(score(PEG, items)) == mean


def test_peg_refuses_a_fourth_item_and_an_item_above_10() -> None:
    with pytest.raises(InvalidItems) as count:
        score(PEG, [1, 2, 3, 4])
    assert count.value.field == "items"
    with pytest.raises(InvalidItems) as range_:
        score(PEG, [1, 11, 3])
    assert range_.value.field == "items[1]"
