"""Referral rules, pure: no database, no web framework, no broker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from shared.measures import PHQ9, InvalidItems, Score, check_pain_nrs, score


class ReferralRuleBroken(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def nhs_number_is_valid(value: str) -> bool:
    """The NHS number's modulus-11 check digit (NHS Data Dictionary, "NHS Number").

    Weights 10 down to 2 on the first nine digits; 11 minus the remainder mod 11 is the
    check digit, 11 becomes 0, and 10 means the number can never be valid.
    """
    digits = value.replace(" ", "").replace("-", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(
        int(digit) * weight for digit, weight in zip(digits[:9], range(10, 1, -1), strict=True)
    )
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def normalise_nhs_number(value: str) -> str:
    return value.replace(" ", "").replace("-", "")


def check_birth_date(birth_date: date, today: date) -> None:
    if birth_date > today:
        raise ReferralRuleBroken("birth_date", "cannot be in the future")
    if birth_date.year < today.year - 130:
        raise ReferralRuleBroken("birth_date", "is more than 130 years ago")


def check_prior_treatments(target: str, prior_treatment_count: int) -> None:
    # Ketamine is not first line (Cohen et al. 2018): the referral must name what was tried.
    if target == "ketamine-infusion" and prior_treatment_count == 0:
        raise ReferralRuleBroken(
            "prior_treatments",
            "a ketamine-infusion referral must name the treatments already tried",
        )


def score_baseline(
    phq9_items: Sequence[int] | None, pain_nrs: int | None
) -> tuple[Score | None, int | None]:
    try:
        phq9 = score(PHQ9, phq9_items, "baseline.phq9_items") if phq9_items is not None else None
        pain = check_pain_nrs(pain_nrs, "baseline.pain_nrs") if pain_nrs is not None else None
    except InvalidItems as error:
        raise ReferralRuleBroken(error.field, error.message) from None
    return phq9, pain
