"""Scoring of the clinical instruments, always done by the server from the items.

Sources (../shared/CLINICAL.md, "Measures"): PHQ-9, Kroenke, Spitzer & Williams 2001;
GAD-7, Spitzer et al. 2006; pain NRS, IMMPACT (Dworkin et al. 2008); PEG, Krebs et al. 2009.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class InvalidItems(ValueError):
    """Items that do not fit the instrument; ``field`` names the offending one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Instrument:
    name: str
    item_count: int
    item_max: int
    # (upper bound inclusive, band name), ascending
    bands: tuple[tuple[int, str], ...]


PHQ9 = Instrument(
    "PHQ-9",
    9,
    3,
    ((4, "minimal"), (9, "mild"), (14, "moderate"), (19, "moderately severe"), (27, "severe")),
)
GAD7 = Instrument("GAD-7", 7, 3, ((4, "minimal"), (9, "mild"), (14, "moderate"), (21, "severe")))
# PEG: pain intensity, interference with enjoyment of life and with general activity, each
# 0 to 10; the score is their mean (Krebs et al. 2009). CLINICAL.md gives it no bands.
PEG = Instrument("PEG", 3, 10, ((30, "not banded"),))
INSTRUMENTS = {i.name: i for i in (PHQ9, GAD7, PEG)}


@dataclass(frozen=True)
class Score:
    instrument: str
    total: int
    band: str
    items: tuple[int, ...]


def score(instrument: Instrument, items: Sequence[int], field: str = "items") -> Score:
    if len(items) != instrument.item_count:
        raise InvalidItems(
            field, f"{instrument.name} has {instrument.item_count} items, got {len(items)}"
        )
    for index, value in enumerate(items):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidItems(f"{field}[{index}]", "each item is a whole number")
        if not 0 <= value <= instrument.item_max:
            raise InvalidItems(
                f"{field}[{index}]", f"{instrument.name} items are 0 to {instrument.item_max}"
            )
    total = sum(items)
    band = next(name for upper, name in instrument.bands if total <= upper)
    return Score(instrument.name, total, band, tuple(items))


def peg_mean(result: Score) -> float:
    """The PEG score: the mean of its three items, to one decimal (Krebs et al. 2009)."""
    return round(result.total / len(result.items), 1)


def phq9_item9(result: Score) -> int:
    """PHQ-9 item 9: thoughts of being better off dead or of self-harm."""
    return result.items[8]


def check_pain_nrs(value: int, field: str = "pain_nrs") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise InvalidItems(field, "pain NRS is a whole number from 0 to 10")
    return value
