"""CLINICAL.md, Ketamine infusions: MME per day from a sourced table, flagged at 50 and 90
MME/day and with a benzodiazepine alongside (CDC 2022)."""

from __future__ import annotations

import pytest

from shared.opioids import CDC_2022, OPIOIDS_AWARE, DoseUnit, Medicine, Route, summarise

FLAGS = (50, 90)


def oral(drug: str, mg: float, per_day: float) -> Medicine:
    return Medicine(drug, mg, DoseUnit.mg, Route.oral, per_day)


def patch(drug: str, microgram_per_hour: float) -> Medicine:
    return Medicine(drug, microgram_per_hour, DoseUnit.microgram_per_hour, Route.transdermal, 1)


@pytest.mark.parametrize(
    ("medicine", "aware", "cdc"),
    [
        (oral("codeine", 60, 4), 24.0, 36.0),  # 240 mg a day: 0.1 vs 0.15
        (oral("Tramadol", 100, 4), 40.0, 80.0),  # 0.1 vs 0.2, name in any case
        (oral("oxycodone", 10, 2), 30.0, 30.0),
        (oral("tapentadol", 50, 2), 40.0, 40.0),
        (patch("fentanyl", 12), 30.0, 28.8),  # 12 microgram/h ≈ 30 mg a day (Opioids Aware)
    ],
)
def test_each_table_converts_with_its_own_factor(
    medicine: Medicine, aware: float, cdc: float
) -> None:
    assert summarise([medicine], OPIOIDS_AWARE, FLAGS).total_mme_per_day == aware
    assert summarise([medicine], CDC_2022, FLAGS).total_mme_per_day == cdc


def test_a_patch_is_a_rate_so_its_frequency_does_not_multiply_it() -> None:
    twice = Medicine("buprenorphine", 5, DoseUnit.microgram_per_hour, Route.transdermal, 2)
    assert summarise([twice], OPIOIDS_AWARE, FLAGS).total_mme_per_day == 12.0


def test_a_medicine_without_a_factor_is_not_counted_and_the_total_says_so() -> None:
    summary = summarise([patch("buprenorphine", 10), oral("morphine", 20, 2)], CDC_2022, FLAGS)
    assert summary.total_mme_per_day == 40.0
    assert summary.complete is False
    assert summary.medicines[0].mme_per_day is None
    assert "not counted" in summary.medicines[0].note


@pytest.mark.parametrize(
    ("mg_a_day", "flags"),
    [
        (49.9, ()),
        (50, ("≥ 50 MME/day",)),
        (89.9, ("≥ 50 MME/day",)),
        (90, ("≥ 90 MME/day", "≥ 50 MME/day")),
    ],
)
def test_totals_are_flagged_at_50_and_90(mg_a_day: float, flags: tuple[str, ...]) -> None:
    assert summarise([oral("morphine", mg_a_day, 1)], OPIOIDS_AWARE, FLAGS).flags == flags


def test_a_benzodiazepine_alongside_an_opioid_is_flagged_and_not_converted() -> None:
    summary = summarise([oral("morphine", 10, 2), oral("Diazepam", 5, 3)], OPIOIDS_AWARE, FLAGS)
    assert summary.benzodiazepine is True
    assert summary.flags == ("benzodiazepine with an opioid",)
    assert [m.drug for m in summary.medicines] == ["morphine"]


def test_a_benzodiazepine_alone_is_noted_but_is_no_opioid_flag() -> None:
    summary = summarise([oral("lorazepam", 1, 2)], OPIOIDS_AWARE, FLAGS)
    assert (summary.benzodiazepine, summary.flags, summary.total_mme_per_day) == (True, (), 0.0)
