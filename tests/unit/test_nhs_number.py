"""NHS number check digit (NHS Data Dictionary, "NHS Number": modulus 11)."""

from __future__ import annotations

import pytest

from services.referrals.domain import nhs_number_is_valid, normalise_nhs_number


def reference_check_digit(first_nine: str) -> int | None:
    """An independent modulus-11 implementation: None where no check digit can exist."""
    weights = [10, 9, 8, 7, 6, 5, 4, 3, 2]
    total = 0
    for position, weight in enumerate(weights):
        total += int(first_nine[position]) * weight
    remainder = total % 11
    check = 11 - remainder
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def first_nine_with_check_ten() -> str:
    """Nine digits whose check digit computes to 10: no tenth digit makes them valid."""
    for candidate in range(100_000_000, 999_999_999):
        digits = f"{candidate:09d}"
        if reference_check_digit(digits) is None:
            return digits
    raise AssertionError("no such number")  # pragma: no cover


def first_nine_with_check_eleven() -> str:
    """Nine digits whose 11 - remainder is 11, so the check digit is 0."""
    for candidate in range(100_000_000, 999_999_999):
        digits = f"{candidate:09d}"
        if reference_check_digit(digits) == 0:
            return digits
    raise AssertionError("no such number")  # pragma: no cover


@pytest.mark.parametrize(
    "value", ["9434765919", "943 476 5919", "943-476-5919", "4010232137", "4505577104"]
)
def test_valid_nhs_numbers_pass(value: str) -> None:
    assert nhs_number_is_valid(value)


def test_reference_implementation_agrees_on_the_known_examples() -> None:
    assert reference_check_digit("943476591") == 9
    assert reference_check_digit("401023213") == 7


@pytest.mark.parametrize("value", ["9434765918", "9434765910", "4010232138"])
def test_a_wrong_check_digit_fails(value: str) -> None:
    assert not nhs_number_is_valid(value)


def test_every_other_check_digit_of_a_valid_number_fails() -> None:
    wrong = [f"943476591{digit}" for digit in "012345678"]
    assert [value for value in wrong if nhs_number_is_valid(value)] == []


def test_a_number_whose_check_digit_computes_to_ten_is_never_valid() -> None:
    first_nine = first_nine_with_check_ten()
    # 1000000010: 1*10 + 1*2 = 12, 12 % 11 = 1, 11 - 1 = 10.
    assert first_nine == "100000001"
    assert [d for d in "0123456789" if nhs_number_is_valid(first_nine + d)] == []


def test_a_check_of_eleven_becomes_zero() -> None:
    first_nine = first_nine_with_check_eleven()
    assert nhs_number_is_valid(first_nine + "0")
    assert not nhs_number_is_valid(first_nine + "1")


def test_the_rule_agrees_with_an_independent_implementation_on_a_sweep() -> None:
    for candidate in range(123_456_000, 123_457_000):
        first_nine = f"{candidate:09d}"
        expected = reference_check_digit(first_nine)
        for digit in range(10):
            assert nhs_number_is_valid(first_nine + str(digit)) is (expected == digit), (
                first_nine,
                digit,
            )


@pytest.mark.parametrize(
    "value",
    [
        "943476591X",
        "94347659l9",
        "+434765919",
        "9434765919.0",
        "\u0669\u0664\u0663\u0664\u0667\u0666\u0665\u0669\u0661\u0669",  # Arabic-Indic digits
        "".join(chr(0xFF10 + int(d)) for d in "9434765919"),  # full-width digits
        "",
    ],
)
def test_non_digits_fail(value: str) -> None:
    assert not nhs_number_is_valid(value)


@pytest.mark.parametrize("value", ["943476591", "94347659190", "0", "94347659 1 9 9"])
def test_wrong_length_fails(value: str) -> None:
    assert not nhs_number_is_valid(value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("943 476 5919", "9434765919"),
        ("943-476-5919", "9434765919"),
        ("9434765919", "9434765919"),
        (" 943 476 5919 ", "9434765919"),
    ],
)
def test_normalise_removes_spaces_and_dashes(given: str, expected: str) -> None:
    assert normalise_nhs_number(given) == expected
