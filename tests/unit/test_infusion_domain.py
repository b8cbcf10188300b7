"""Ketamine infusion rules, pure: eligibility, dose bands, vitals, the session state machine,
response against baseline and maintenance (issue 4, "Must be shown by tests"; the rules and
their sources are in ../shared/CLINICAL.md, "Ketamine infusions" lines 36-84 and "Change
that matters" lines 24-34)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from msgspec.structs import replace

from services.infusions import domain
from services.infusions.domain import (
    ABANDONED,
    BLOCKING,
    CANCELLED,
    CAUTIONS,
    CHECKED_IN,
    CHECKLIST,
    COMPLETED,
    IN_PROGRESS,
    OPEN_SESSION,
    SCHEDULED,
    SESSION_STATUSES,
    SESSION_TRANSITIONS,
    DoseCheck,
    IllegalTransition,
    InfusionRuleBroken,
    assess_eligibility,
    check_dose,
    check_dose_given,
    check_physiological,
    check_plan_weight,
    check_schedule,
    maintenance_due,
    next_session_status,
    overlaps,
    response,
    vitals_out_of_range,
)
from shared.policy import default_policy

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


# --- eligibility (CLINICAL.md lines 43-51) -------------------------------------------------

# Written out from CLINICAL.md rather than read from the module, so a change to the lists
# has to change this test too.
BLOCKING_ITEMS = (
    "uncontrolled-cardiovascular-disease",
    "psychosis",
    "severe-hepatic-impairment",
    "raised-intracranial-or-intraocular-pressure",
    "pregnancy",
    "active-substance-misuse",
)
CAUTION_ITEMS = (
    "moderate-hepatic-impairment",
    "controlled-hypertension",
    "history-of-substance-misuse",
)


def findings(*present: str) -> dict[str, bool]:
    answers = {item: False for item in (*BLOCKING_ITEMS, *CAUTION_ITEMS)}
    for item in present:
        answers[item] = True
    return answers


def test_the_checklist_is_the_one_in_clinical_md() -> None:
    """CLINICAL.md lines 44-49: six blocking contraindications, three cautions."""
    assert set(BLOCKING) == set(BLOCKING_ITEMS)
    assert set(CAUTIONS) == set(CAUTION_ITEMS)
    assert set(CHECKLIST) == set(BLOCKING_ITEMS) | set(CAUTION_ITEMS)


def test_nothing_present_is_eligible() -> None:
    result = assess_eligibility(findings(), [], 1)
    assert result.outcome == "eligible"
    assert result.blocked_by == ()
    assert result.cautions_without_override == ()
    assert result.cautions_overridden == ()


@pytest.mark.parametrize("item", BLOCKING_ITEMS)
def test_each_blocking_contraindication_alone_makes_the_patient_ineligible(item: str) -> None:
    """CLINICAL.md lines 44-47: poorly controlled cardiovascular disease, psychosis, severe
    hepatic impairment, raised intracranial or intraocular pressure, pregnancy (local
    policy) and active substance misuse block a plan."""
    result = assess_eligibility(findings(item), [], 1)
    assert result.outcome == "ineligible"
    assert result.blocked_by == (item,)


@pytest.mark.parametrize("item", BLOCKING_ITEMS)
def test_a_blocking_contraindication_cannot_be_overridden(item: str) -> None:
    """CLINICAL.md lines 44-49: only the cautions take an override; a block is a block."""
    with pytest.raises(InfusionRuleBroken) as caught:
        assess_eligibility(findings(item), [item], 1)
    assert caught.value.field == f"overrides.{item}"


@pytest.mark.parametrize("item", CAUTION_ITEMS)
def test_each_caution_alone_needs_an_override(item: str) -> None:
    """CLINICAL.md lines 48-49: moderate hepatic impairment, controlled hypertension and a
    history of substance misuse need a named clinician's override with a reason."""
    result = assess_eligibility(findings(item), [], 1)
    assert result.outcome == "needs-override"
    assert result.cautions_without_override == (item,)
    assert result.blocked_by == ()


@pytest.mark.parametrize("item", CAUTION_ITEMS)
def test_each_caution_with_an_override_is_eligible(item: str) -> None:
    """CLINICAL.md lines 48-49."""
    result = assess_eligibility(findings(item), [item], 1)
    assert result.outcome == "eligible"
    assert result.cautions_overridden == (item,)
    assert result.cautions_without_override == ()


def test_two_cautions_with_one_override_still_need_the_other() -> None:
    result = assess_eligibility(
        findings("controlled-hypertension", "moderate-hepatic-impairment"),
        ["controlled-hypertension"],
        1,
    )
    assert result.outcome == "needs-override"
    assert result.cautions_without_override == ("moderate-hepatic-impairment",)
    assert result.cautions_overridden == ("controlled-hypertension",)


def test_a_block_wins_over_overridden_cautions() -> None:
    result = assess_eligibility(
        findings("pregnancy", "controlled-hypertension"), ["controlled-hypertension"], 1
    )
    assert result.outcome == "ineligible"
    assert result.blocked_by == ("pregnancy",)
    assert result.cautions_overridden == ("controlled-hypertension",)


@pytest.mark.parametrize("item", (*BLOCKING_ITEMS, *CAUTION_ITEMS))
def test_a_missing_checklist_item_is_refused_naming_it(item: str) -> None:
    """CLINICAL.md line 43: each item is answered yes or no."""
    answers = findings()
    del answers[item]
    with pytest.raises(InfusionRuleBroken) as caught:
        assess_eligibility(answers, [], 1)
    assert caught.value.field == f"checklist.{item}"


def test_an_unknown_checklist_item_is_refused_naming_it() -> None:
    answers = {**findings(), "astrology": True}
    with pytest.raises(InfusionRuleBroken) as caught:
        assess_eligibility(answers, [], 1)
    assert caught.value.field == "checklist.astrology"


def test_no_prior_treatments_is_refused() -> None:
    """CLINICAL.md lines 50-51: ketamine is not first line; the assessment records the
    prior treatments tried."""
    with pytest.raises(InfusionRuleBroken) as caught:
        assess_eligibility(findings(), [], 0)
    assert caught.value.field == "prior_treatments"
    assert "prior_treatments" in str(caught.value)


@pytest.mark.parametrize("caution", CAUTION_ITEMS)
def test_an_override_of_a_caution_not_present_is_refused(caution: str) -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        assess_eligibility(findings(), [caution], 1)
    assert caught.value.field == f"overrides.{caution}"


def test_an_override_of_an_unknown_caution_is_refused() -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        assess_eligibility(findings(), ["feeling-lucky"], 1)
    assert caught.value.field == "overrides.feeling-lucky"


# --- dosing (CLINICAL.md lines 55-61) ------------------------------------------------------


def depression(dose: float, *, weight: float = 70, minutes: int = 40, **kw: Any) -> DoseCheck:
    return check_dose(
        indication="depression",
        weight_kg=weight,
        dose_mg_per_kg=dose,
        infusion_minutes=minutes,
        rate_mg_per_kg_per_h=None,
        duration_hours=None,
        **kw,
    )


def pain(
    rate: float | None, hours: float | None = 4, *, weight: float = 70, **kw: Any
) -> DoseCheck:
    return check_dose(
        indication="pain",
        weight_kg=weight,
        dose_mg_per_kg=None,
        infusion_minutes=None,
        rate_mg_per_kg_per_h=rate,
        duration_hours=hours,
        **kw,
    )


def test_depression_dose_is_mg_per_kg_times_weight_over_the_minutes() -> None:
    """CLINICAL.md line 57: 0.5 mg/kg over 40 minutes (Sanacora 2017); line 61: every dose
    is computed from the plan's weight."""
    result = depression(0.5, weight=70, minutes=40)
    assert result.total_mg == 35.0
    assert result.rate_mg_per_h == 52.5
    assert result.outside_band == ()


@pytest.mark.parametrize(
    ("dose", "weight", "total"), [(0.1, 70, 7.0), (0.75, 70, 52.5), (0.75, 80, 60.0)]
)
def test_depression_band_edges_are_inside(dose: float, weight: float, total: float) -> None:
    """CLINICAL.md line 57: reported range 0.1-0.75 mg/kg, both ends inside (given over an
    hour, so the rate stays at the standard 0.75 mg/kg/h)."""
    result = depression(dose, weight=weight, minutes=60)
    assert result.outside_band == ()
    assert result.total_mg == total


@pytest.mark.parametrize("dose", [0.09, 0.76, 1.0])
def test_depression_just_outside_the_band_needs_an_override(dose: float) -> None:
    """CLINICAL.md lines 55-57: outside the band is refused unless overridden; up to the
    hard ceiling (1.0, local policy) it can be. (Over 80 minutes: the rate is inside.)"""
    result = depression(dose, minutes=80)
    assert result.outside_band == ("dose_mg_per_kg",)


@pytest.mark.parametrize("dose", [1.01, 1.5, 5.0])
def test_depression_above_the_ceiling_is_refused(dose: float) -> None:
    """Local policy hard ceiling: refused even with an override."""
    with pytest.raises(InfusionRuleBroken) as caught:
        depression(dose)
    assert caught.value.field == "dose_mg_per_kg"


def test_depression_rate_follows_the_infusion_minutes() -> None:
    assert depression(0.5, weight=60, minutes=60).rate_mg_per_h == 30.0
    assert depression(0.5, weight=60, minutes=20).rate_mg_per_h == 90.0


@pytest.mark.parametrize(
    ("missing", "field"),
    [("dose_mg_per_kg", "dose_mg_per_kg"), ("infusion_minutes", "infusion_minutes")],
)
def test_a_depression_plan_needs_its_dose_and_minutes(missing: str, field: str) -> None:
    values: dict[str, Any] = {"dose_mg_per_kg": 0.5, "infusion_minutes": 40}
    values[missing] = None
    with pytest.raises(InfusionRuleBroken) as caught:
        check_dose(
            indication="depression",
            weight_kg=70,
            rate_mg_per_kg_per_h=None,
            duration_hours=None,
            **values,
        )
    assert caught.value.field == field


def test_pain_dose_is_rate_times_weight_times_hours() -> None:
    """CLINICAL.md lines 58-60: CRPS regimens up to 0.35 mg/kg/h for 4 h (Cohen 2018)."""
    result = pain(0.35, 4, weight=70)
    assert result.rate_mg_per_h == 24.5
    assert result.total_mg == 98.0
    assert result.outside_band == ()
    assert pain(0.3, 2, weight=80).total_mg == 48.0


def test_pain_rate_just_above_the_band_needs_an_override() -> None:
    assert pain(0.36).outside_band == ("rate_mg_per_kg_per_h",)
    assert pain(1.0).outside_band == ("rate_mg_per_kg_per_h",)


@pytest.mark.parametrize("rate", [1.01, 1.2])
def test_pain_rate_above_the_ceiling_is_refused(rate: float) -> None:
    """CLINICAL.md line 60: default hard ceiling 1 mg/kg/h (local policy)."""
    with pytest.raises(InfusionRuleBroken) as caught:
        pain(rate)
    assert caught.value.field == "rate_mg_per_kg_per_h"


@pytest.mark.parametrize("hours", [2, 3, 4])
def test_pain_duration_edges_inside(hours: float) -> None:
    """CLINICAL.md lines 58-59: at least 2 hours; up to 4 h a day."""
    assert pain(0.3, hours).outside_band == ()


@pytest.mark.parametrize("hours", [1.9, 4.1])
def test_pain_duration_just_outside_needs_an_override(hours: float) -> None:
    assert pain(0.3, hours).outside_band == ("duration_hours",)


def test_pain_rate_and_duration_both_outside_are_both_named() -> None:
    assert pain(0.5, 5).outside_band == ("rate_mg_per_kg_per_h", "duration_hours")


@pytest.mark.parametrize(
    ("rate", "hours", "field"),
    [(None, 4, "rate_mg_per_kg_per_h"), (0.3, None, "duration_hours")],
)
def test_a_pain_plan_needs_its_rate_and_duration(
    rate: float | None, hours: float | None, field: str
) -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        pain(rate, hours)
    assert caught.value.field == field


@pytest.mark.parametrize("weight", [20, 300, 70.5])
def test_weight_inside_bounds(weight: float) -> None:
    pain(0.3, weight=weight)
    depression(0.5, weight=weight)


@pytest.mark.parametrize("weight", [19.9, 300.1, 0, -70])
def test_weight_outside_bounds_is_refused(weight: float) -> None:
    for compute in (pain, depression):
        with pytest.raises(InfusionRuleBroken) as caught:
            compute(0.3, weight=weight)
        assert caught.value.field == "weight_kg"


@pytest.mark.parametrize("rate", [0.0, -0.2])
def test_a_zero_or_negative_pain_rate_is_refused(rate: float) -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        pain(rate)
    assert caught.value.field == "rate_mg_per_kg_per_h"


@pytest.mark.parametrize("compute", ["depression", "duration"])
def test_a_non_positive_dose_or_duration_is_refused_outright(compute: str) -> None:
    with pytest.raises(InfusionRuleBroken):
        if compute == "depression":
            depression(-0.5)
        else:
            pain(0.3, -2)


@pytest.mark.parametrize(("minutes", "inside"), [(40, True), (39, False), (10, False)])
def test_a_depression_plan_faster_than_the_policys_rate_needs_an_override(
    minutes: int, inside: bool
) -> None:
    """Issue 12, CLINICAL.md "Dosing plan": 0.5 mg/kg over 40 minutes (Sanacora 2017) is
    0.75 mg/kg/h, the policy's dose.depression_max_mg_per_kg_per_h; faster is refused
    unless overridden, naming the minutes and the slowest acceptable."""
    result = depression(0.5, minutes=minutes)
    assert result.outside_band == (() if inside else ("infusion_minutes",))
    if not inside:
        assert "over at least 40 minutes" in result.why[0]


def test_0_75_mg_per_kg_over_10_minutes_no_longer_passes() -> None:
    """Issue 12: 0.75 mg/kg over 10 minutes (4.5 mg/kg/h) passed the dose check."""
    assert depression(0.75, minutes=10).outside_band == ("infusion_minutes",)


@pytest.mark.parametrize(("hours", "refused"), [(8, False), (8.1, True), (48, True)])
def test_the_duration_ceiling_is_hard(hours: float, refused: bool) -> None:
    """Issue 12 (local policy, dose.pain_ceiling_hours 8): above it no override passes;
    1 mg/kg/h x 48 h passed with an override."""
    if refused:
        with pytest.raises(InfusionRuleBroken) as caught:
            pain(0.3, hours, weight=40)
        assert caught.value.field == "duration_hours"
    else:
        assert pain(0.3, hours, weight=40).outside_band == ("duration_hours",)


@pytest.mark.parametrize(("weight", "refused"), [(100, False), (100.1, True)])
def test_the_total_dose_ceiling_per_infusion_is_hard(weight: float, refused: bool) -> None:
    """Issue 12 (local policy, dose.infusion_ceiling_mg 400): 1 mg/kg/h for 4 h is 400 mg
    at 100 kg; a heavier patient at that rate is refused, override or not."""
    if refused:
        with pytest.raises(InfusionRuleBroken) as caught:
            pain(1.0, 4, weight=weight)
        assert caught.value.field == "duration_hours"
    else:
        assert pain(1.0, 4, weight=weight).total_mg == 400


@pytest.mark.parametrize(("plan_kg", "refused"), [(77, False), (88, False), (88.1, True)])
def test_a_plan_weight_far_from_the_assessments_is_refused(plan_kg: float, refused: bool) -> None:
    """Issue 12, CLINICAL.md "Dosing plan": every dose is computed from the plan's weight;
    more than dose.plan_weight_difference_fraction (10%) from the latest assessment's 80 kg
    is refused (176 lb typed as kg, say)."""
    policy = default_policy().dose
    if refused:
        with pytest.raises(InfusionRuleBroken) as caught:
            check_plan_weight(plan_kg, 80, policy)
        assert caught.value.field == "weight_kg"
    else:
        check_plan_weight(plan_kg, 80, policy)


def test_custom_dose_policy_moves_the_bands() -> None:
    """CLINICAL.md preamble: every threshold is a named setting a clinic can change."""
    policy = replace(
        default_policy().dose,
        depression_max_mg_per_kg=0.8,
        depression_ceiling_mg_per_kg=0.9,
        pain_max_mg_per_kg_per_h=0.5,
        pain_ceiling_mg_per_kg_per_h=0.6,
        pain_min_hours=1.0,
    )
    assert depression(0.76, minutes=61, policy=policy).outside_band == ()
    with pytest.raises(InfusionRuleBroken):
        depression(0.95, policy=policy)
    assert pain(0.5, 1.5, policy=policy).outside_band == ()
    with pytest.raises(InfusionRuleBroken):
        pain(0.7, policy=policy)


@pytest.mark.parametrize(
    ("given", "ok"),
    [(100, True), (110, True), (90, True), (110.1, False), (89.9, False), (0, False)],
)
def test_dose_given_tolerance_edges(given: float, ok: bool) -> None:
    """CLINICAL.md line 61: every dose is computed from the plan; a recorded dose more than
    10% away from it is refused."""
    assert check_dose_given(given, 100) is ok


def test_dose_given_custom_tolerance() -> None:
    policy = replace(default_policy().dose, given_tolerance_fraction=0.05)
    assert check_dose_given(105, 100, policy)
    assert not check_dose_given(105.1, 100, policy)


@pytest.mark.parametrize(("planned", "given"), [(84.0, 92.4), (84.0, 75.6), (21.0, 23.1)])
def test_dose_given_exactly_at_the_tolerance_is_accepted(planned: float, given: float) -> None:
    assert check_dose_given(given, planned)


# --- vitals (CLINICAL.md lines 63-69) ------------------------------------------------------

NORMAL = {"systolic": 120, "diastolic": 80, "heart_rate": 70, "spo2": 98}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("systolic", 60),
        ("systolic", 300),
        ("diastolic", 1),
        ("heart_rate", 1),
        ("heart_rate", 20),
        ("heart_rate", 300),
        ("spo2", 1),
        ("spo2", 45),
        ("spo2", 100),
    ],
)
def test_critically_abnormal_readings_are_accepted(field: str, value: int) -> None:
    """Issue 12: critically abnormal values (SpO2 45, systolic 60) are recorded, never
    refused as out of range (CLINICAL.md "During a session": SpO2 < 92% alerts)."""
    low_systolic = {"diastolic": 1} if field == "systolic" and value < 80 else {}
    check_physiological({**NORMAL, **low_systolic, field: value})


def test_the_highest_diastolic_is_accepted_under_a_higher_systolic() -> None:
    check_physiological({**NORMAL, "systolic": 290, "diastolic": 250})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("systolic", 0),
        ("systolic", -120),
        ("systolic", 301),
        ("systolic", 400),
        ("diastolic", 0),
        ("heart_rate", 0),
        ("heart_rate", 301),
        ("spo2", 0),
        ("spo2", -5),
        ("spo2", 101),
    ],
)
def test_readings_no_body_gives_are_refused_naming_the_field(field: str, value: int) -> None:
    """Issue 12: only physiologically impossible values are refused (SpO2 > 100 or <= 0,
    systolic <= 0 or > 300), the limits being the policy's vitals.impossible_above_*."""
    with pytest.raises(InfusionRuleBroken) as caught:
        check_physiological({**NORMAL, field: value})
    assert caught.value.field == field


def test_diastolic_above_the_impossible_limit_is_refused() -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        check_physiological({**NORMAL, "systolic": 290, "diastolic": 251})
    assert caught.value.field == "diastolic"


@pytest.mark.parametrize("diastolic", [120, 121])
def test_diastolic_at_or_above_systolic_is_refused(diastolic: int) -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        check_physiological({**NORMAL, "systolic": 120, "diastolic": diastolic})
    assert caught.value.field == "diastolic"


def test_missing_readings_are_not_checked() -> None:
    check_physiological({"systolic": 120, "diastolic": None})
    check_physiological({})


@pytest.mark.parametrize(
    ("systolic", "diastolic", "crossed"),
    [
        (159, 99, []),
        (160, 99, ["systolic 160 ≥ 160"]),
        (159, 100, ["diastolic 100 ≥ 100"]),
        (160, 100, ["systolic 160 ≥ 160", "diastolic 100 ≥ 100"]),
    ],
)
def test_before_starting_thresholds(systolic: int, diastolic: int, crossed: list[str]) -> None:
    """CLINICAL.md lines 68-69: systolic ≥ 160 / diastolic ≥ 100 before starting (local
    policy)."""
    values = {**NORMAL, "systolic": systolic, "diastolic": diastolic}
    assert vitals_out_of_range("before", values) == crossed


@pytest.mark.parametrize(
    ("systolic", "diastolic", "crossed"),
    [
        (179, 109, []),
        (160, 100, []),
        (180, 109, ["systolic 180 ≥ 180"]),
        (179, 110, ["diastolic 110 ≥ 110"]),
    ],
)
def test_during_thresholds(systolic: int, diastolic: int, crossed: list[str]) -> None:
    """CLINICAL.md line 68: systolic ≥ 180 or diastolic ≥ 110 during a session."""
    values = {**NORMAL, "systolic": systolic, "diastolic": diastolic}
    assert vitals_out_of_range("during", values) == crossed


@pytest.mark.parametrize("phase", ["before", "during", "after"])
def test_spo2_below_92_alerts_in_every_phase(phase: str) -> None:
    """CLINICAL.md line 69: SpO2 < 92% (local policy)."""
    assert vitals_out_of_range(phase, {**NORMAL, "spo2": 92}) == []
    assert vitals_out_of_range(phase, {**NORMAL, "spo2": 91}) == ["SpO2 91% < 92%"]


def test_after_the_infusion_the_during_thresholds_apply() -> None:
    assert vitals_out_of_range("after", {**NORMAL, "systolic": 170, "diastolic": 105}) == []
    assert vitals_out_of_range("after", {**NORMAL, "systolic": 180}) == ["systolic 180 ≥ 180"]


def test_custom_vitals_policy_moves_the_thresholds() -> None:
    policy = replace(
        default_policy().vitals, before_systolic=150, during_diastolic=100, min_spo2=95
    )
    assert vitals_out_of_range("before", {**NORMAL, "systolic": 150}, policy) == [
        "systolic 150 ≥ 150"
    ]
    assert vitals_out_of_range("during", {**NORMAL, "diastolic": 100}, policy) == [
        "diastolic 100 ≥ 100"
    ]
    assert vitals_out_of_range("during", {**NORMAL, "spo2": 94}, policy) == ["SpO2 94% < 95%"]


# --- the session state machine -------------------------------------------------------------

# Issue 4, "Sessions": schedule, check in, start, complete, cancel or abandon. Written out.
LEGAL = {
    (SCHEDULED, "check-in"): CHECKED_IN,
    (CHECKED_IN, "start"): IN_PROGRESS,
    (IN_PROGRESS, "complete"): COMPLETED,
    (SCHEDULED, "cancel"): CANCELLED,
    (CHECKED_IN, "cancel"): CANCELLED,
    (CHECKED_IN, "abandon"): ABANDONED,
    (IN_PROGRESS, "abandon"): ABANDONED,
}
ACTIONS = ("check-in", "start", "complete", "cancel", "abandon")
ILLEGAL = [(s, a) for s in SESSION_STATUSES for a in ACTIONS if (s, a) not in LEGAL]


def test_the_table_is_the_one_written_here() -> None:
    assert set(SESSION_TRANSITIONS) == set(ACTIONS)
    table = {(s, a): t for a, moves in SESSION_TRANSITIONS.items() for s, t in moves.items()}
    assert table == LEGAL
    assert OPEN_SESSION == (SCHEDULED, CHECKED_IN, IN_PROGRESS)


@pytest.mark.parametrize(("current", "action"), list(LEGAL))
def test_every_legal_transition(current: str, action: str) -> None:
    assert next_session_status(current, action) == LEGAL[(current, action)]


@pytest.mark.parametrize(("current", "action"), ILLEGAL)
def test_every_illegal_transition_is_refused(current: str, action: str) -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_session_status(current, action)
    assert caught.value.current == current
    assert caught.value.action == action


def test_there_are_23_illegal_pairs() -> None:
    assert len(ILLEGAL) == 6 * 5 - 7


def test_an_unknown_action_is_not_an_illegal_transition() -> None:
    with pytest.raises(ValueError, match="unknown action") as caught:
        next_session_status(SCHEDULED, "teleport")
    assert not isinstance(caught.value, IllegalTransition)


@pytest.mark.parametrize("status", [COMPLETED, CANCELLED, ABANDONED])
def test_ended_sessions_are_dead_ends(status: str) -> None:
    for action in ACTIONS:
        with pytest.raises(IllegalTransition):
            next_session_status(status, action)


# --- overlaps and scheduling -------------------------------------------------------------

H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end", "clash"),
    [
        (T0 - 2 * H, T0, False),  # ends as the other starts
        (T0 + 4 * H, T0 + 6 * H, False),  # starts as the other ends
        (T0 - H, T0 + timedelta(minutes=1), True),
        (T0 + 4 * H - timedelta(minutes=1), T0 + 5 * H, True),
        (T0 + H, T0 + 2 * H, True),  # inside
        (T0 - H, T0 + 5 * H, True),  # around
        (T0, T0 + 4 * H, True),  # the same
    ],
)
def test_overlaps_touching_intervals_do_not(start: datetime, end: datetime, clash: bool) -> None:
    """Issue 4: no two sessions for one patient overlapping."""
    assert overlaps(start, end, [(T0, T0 + 4 * H)]) is clash


def test_overlaps_with_nothing_booked() -> None:
    assert overlaps(T0, T0 + H, []) is False


def test_overlaps_checks_every_booked_session() -> None:
    booked = [(T0, T0 + H), (T0 + 5 * H, T0 + 6 * H)]
    assert overlaps(T0 + 2 * H, T0 + 3 * H, booked) is False
    assert overlaps(T0 + 4 * H, T0 + 5 * H + timedelta(seconds=1), booked) is True


SESSION_MAX_HOURS = default_policy().dose.session_max_hours  # 10


def test_schedule_in_the_past_is_refused_naming_start() -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        check_schedule(T0 - timedelta(seconds=1), T0 + H, T0, SESSION_MAX_HOURS)
    assert caught.value.field == "start"


def test_schedule_starting_now_is_accepted() -> None:
    check_schedule(T0, T0 + H, T0, SESSION_MAX_HOURS)


@pytest.mark.parametrize("end", [T0 + H, T0])
def test_schedule_ending_at_or_before_the_start_is_refused(end: datetime) -> None:
    with pytest.raises(InfusionRuleBroken) as caught:
        check_schedule(T0 + H, end, T0, SESSION_MAX_HOURS)
    assert caught.value.field == "end"


def test_schedule_lasting_ten_hours_is_accepted_and_longer_refused() -> None:
    assert SESSION_MAX_HOURS == 10
    check_schedule(T0, T0 + 10 * H, T0, SESSION_MAX_HOURS)
    with pytest.raises(InfusionRuleBroken) as caught:
        check_schedule(T0, T0 + 10 * H + timedelta(seconds=1), T0, SESSION_MAX_HOURS)
    assert caught.value.field == "end"


# --- response (CLINICAL.md lines 33-34 and 78-79) ------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "now", "meaningful", "substantial"),
    [
        (10, 7, True, False),  # exactly 30%
        (10, 8, False, False),  # 20%
        (7, 5, False, False),  # 28.6%
        (3, 2, True, False),  # 33.3%
        (10, 5, True, True),  # exactly 50%
        (10, 6, True, False),  # 40%
        (8, 4, True, True),
        (8, 0, True, True),
        (5, 7, False, False),  # worse
    ],
)
def test_pain_relief_edges(baseline: int, now: int, meaningful: bool, substantial: bool) -> None:
    """CLINICAL.md line 33: NRS falls ≥ 30% from baseline is meaningful, ≥ 50% substantial
    (IMMPACT, Dworkin et al. 2008)."""
    result = response(baseline, now, None, None)
    assert result.pain_meaningful is meaningful
    assert result.pain_substantial is substantial
    assert result.responded is meaningful
    assert result.phq9_change_fraction is None
    assert result.phq9_response is False


def test_pain_fraction_is_a_fall_from_baseline() -> None:
    assert response(8, 4, None, None).pain_change_fraction == 0.5
    assert response(7, 5, None, None).pain_change_fraction == 0.286
    assert response(5, 7, None, None).pain_change_fraction == -0.4


@pytest.mark.parametrize(
    ("baseline", "now", "responded"),
    [(20, 10, True), (20, 11, False), (11, 5, True), (11, 6, False), (10, 0, True)],
)
def test_phq9_response_edge(baseline: int, now: int, responded: bool) -> None:
    """CLINICAL.md line 34: PHQ-9 falls ≥ 50% from baseline (Sanacora et al. 2017)."""
    result = response(None, None, baseline, now)
    assert result.phq9_response is responded
    assert result.responded is responded
    assert result.pain_change_fraction is None


def test_either_measure_is_a_response() -> None:
    """CLINICAL.md line 78: meaningful response is pain ≥ 30% or PHQ-9 ≥ 50% better."""
    assert response(10, 9, 20, 10).responded is True
    assert response(10, 7, 20, 19).responded is True
    assert response(10, 8, 20, 11).responded is False


@pytest.mark.parametrize(
    ("pain_baseline", "pain_now", "phq9_baseline", "phq9_now"),
    [
        (0, 0, 0, 0),  # baseline 0: no fall is possible
        (None, 3, None, 5),  # no baseline
        (8, None, 20, None),  # not measured now
    ],
)
def test_no_baseline_or_no_score_gives_no_fraction_and_no_response(
    pain_baseline: int | None,
    pain_now: int | None,
    phq9_baseline: int | None,
    phq9_now: int | None,
) -> None:
    result = response(pain_baseline, pain_now, phq9_baseline, phq9_now)
    assert result.pain_change_fraction is None
    assert result.phq9_change_fraction is None
    assert not (result.pain_meaningful or result.pain_substantial or result.phq9_response)
    assert result.responded is False


def test_custom_response_policy_moves_the_thresholds() -> None:
    policy = replace(
        default_policy().change,
        pain_meaningful_fraction=0.2,
        pain_substantial_fraction=0.4,
        phq9_response_fraction=0.3,
    )
    result = response(10, 8, None, None, policy)
    assert result.pain_meaningful and not result.pain_substantial
    assert response(10, 6, None, None, policy).pain_substantial
    assert response(None, None, 10, 7, policy).phq9_response
    assert not response(None, None, 10, 8, policy).phq9_response


# --- maintenance (CLINICAL.md lines 80-82) -------------------------------------------------


def test_no_maintenance_during_the_induction_series() -> None:
    """CLINICAL.md line 80: maintenance comes after the initial treatment."""
    assert maintenance_due(T0, 1, 2, 28) is None
    assert maintenance_due(T0, 5, 6, 28) is None


def test_maintenance_falls_due_at_the_interval_after_the_series() -> None:
    """CLINICAL.md lines 80-81: intervals set per patient."""
    assert maintenance_due(T0, 2, 2, 28) == T0 + timedelta(days=28)
    assert maintenance_due(T0, 6, 6, 42) == T0 + timedelta(days=42)


def test_each_maintenance_infusion_moves_the_next_one() -> None:
    later = T0 + timedelta(days=28)
    assert maintenance_due(later, 3, 2, 28) == later + timedelta(days=28)


def test_no_interval_or_nothing_completed_means_nothing_due() -> None:
    assert maintenance_due(T0, 2, 2, None) is None
    assert maintenance_due(None, 2, 2, 28) is None


@pytest.mark.parametrize(
    ("indication", "stray"),
    [
        ("depression", {"rate_mg_per_kg_per_h": 0.3, "duration_hours": None}),
        ("depression", {"rate_mg_per_kg_per_h": None, "duration_hours": 2.0}),
        ("pain", {"dose_mg_per_kg": 0.5, "infusion_minutes": None}),
        ("both", {"dose_mg_per_kg": None, "infusion_minutes": 40}),
    ],
)
def test_a_plan_refuses_values_of_the_other_regimen(indication: str, stray: dict[str, Any]) -> None:
    """A value the plan's regimen does not use would be stored unchecked: refuse it."""
    values = {
        "dose_mg_per_kg": None,
        "infusion_minutes": None,
        "rate_mg_per_kg_per_h": None,
        "duration_hours": None,
    }
    if indication == "depression":
        values |= {"dose_mg_per_kg": 0.5, "infusion_minutes": 40}
    else:
        values |= {"rate_mg_per_kg_per_h": 0.3, "duration_hours": 3.0}
    values |= {k: v for k, v in stray.items() if v is not None}
    field = next(k for k, v in stray.items() if v is not None)
    with pytest.raises(domain.InfusionRuleBroken) as refused:
        domain.check_dose(indication=indication, weight_kg=70, **values)
    assert refused.value.field == field
