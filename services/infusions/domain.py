"""Ketamine infusion rules, pure: eligibility, dose bands, vitals, sessions, response.

Sources (../shared/CLINICAL.md, "Ketamine infusions"): Cohen et al. 2018, Reg Anesth Pain
Med 43:521 (ASRA/AAPM/ASA consensus on IV ketamine for chronic pain); Sanacora et al.
2017, JAMA Psychiatry 74:399 (APA consensus on ketamine for mood disorders). Thresholds
marked *(local policy)* are reasonable defaults, not published standards; every one is a
setting of the clinical policy (shared/policy.py, shared/policy.toml) so a clinic can
change it. A rule takes its section of the policy; without one it uses the loaded policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from shared.domain import IllegalTransition as IllegalTransition
from shared.domain import RuleBroken, StateMachine
from shared.events.catalogue import COURSE_STATUS_AFTER_CLOSING, InfusionResponse
from shared.policy import ChangePolicy, DosePolicy, VitalsPolicy, clinical_policy
from shared.vitals import critical_vitals


class InfusionRuleBroken(RuleBroken):
    """Input that breaks a clinical rule; ``field`` names what to correct (a 422)."""


# --- eligibility (CLINICAL.md "Eligibility assessment") --------------------------------

BLOCKING = {
    "uncontrolled-cardiovascular-disease": "poorly controlled cardiovascular disease",
    "psychosis": "current or past psychotic disorder",
    "severe-hepatic-impairment": "severe hepatic impairment",
    "raised-intracranial-or-intraocular-pressure": "raised intracranial or intraocular pressure",
    "pregnancy": "pregnancy (local policy)",
    "active-substance-misuse": "active substance misuse (blocks a series of infusions)",
}
CAUTIONS = {
    "moderate-hepatic-impairment": "moderate hepatic impairment",
    "controlled-hypertension": "controlled hypertension",
    "history-of-substance-misuse": "history of substance misuse",
}
CHECKLIST = tuple(BLOCKING) + tuple(CAUTIONS)


@dataclass(frozen=True)
class Eligibility:
    outcome: str  # eligible | ineligible | needs-override
    blocked_by: tuple[str, ...]
    cautions_without_override: tuple[str, ...]
    cautions_overridden: tuple[str, ...]


def assess_eligibility(
    findings: Mapping[str, bool],
    overridden_cautions: Iterable[str],
    prior_treatment_count: int,
) -> Eligibility:
    """Every checklist item must be answered; blocks make the patient ineligible; each
    caution present needs a named clinician's override with a reason."""
    missing = [item for item in CHECKLIST if item not in findings]
    if missing:
        raise InfusionRuleBroken(f"checklist.{missing[0]}", "every checklist item needs yes or no")
    unknown = sorted(set(findings) - set(CHECKLIST))
    if unknown:
        raise InfusionRuleBroken(f"checklist.{unknown[0]}", "is not a checklist item")
    if prior_treatment_count == 0:
        # Ketamine is not first line (the seed; Cohen 2018).
        raise InfusionRuleBroken("prior_treatments", "record the treatments already tried")
    overridden = set(overridden_cautions)
    stray = sorted(overridden - {item for item in CAUTIONS if findings[item]})
    if stray:
        raise InfusionRuleBroken(f"overrides.{stray[0]}", "overrides a caution that is not present")
    blocked = tuple(item for item in BLOCKING if findings[item])
    present = [item for item in CAUTIONS if findings[item]]
    waiting = tuple(item for item in present if item not in overridden)
    if blocked:
        outcome = "ineligible"
    elif waiting:
        outcome = "needs-override"
    else:
        outcome = "eligible"
    return Eligibility(outcome, blocked, waiting, tuple(i for i in present if i in overridden))


# --- dosing (CLINICAL.md "Dosing plan") ------------------------------------------------


@dataclass(frozen=True)
class DoseCheck:
    total_mg: float
    rate_mg_per_h: float
    outside_band: tuple[str, ...]  # the fields outside their band, each needing an override
    why: tuple[str, ...] = ()  # for each field outside its band, what would bring it inside


def check_dose(
    *,
    indication: str,
    weight_kg: float,
    dose_mg_per_kg: float | None,
    infusion_minutes: int | None,
    rate_mg_per_kg_per_h: float | None,
    duration_hours: float | None,
    policy: DosePolicy | None = None,
) -> DoseCheck:
    """The dose computed from the plan's weight, and which values sit outside their band.

    Above a hard ceiling (rate, total dose, duration) is refused outright, override or
    not; outside the band needs an override.
    """
    policy = policy or clinical_policy().dose
    check_weight(weight_kg, policy)
    given = {
        "dose_mg_per_kg": dose_mg_per_kg,
        "infusion_minutes": infusion_minutes,
        "rate_mg_per_kg_per_h": rate_mg_per_kg_per_h,
        "duration_hours": duration_hours,
    }
    for name, value in given.items():
        if value is not None and value <= 0:
            raise InfusionRuleBroken(name, "must be above 0")
    # A plan is one regimen: a depression plan is dosed in mg/kg over minutes, a pain (or
    # pain and depression) plan in mg/kg/h over hours; a stray value would be stored
    # unchecked, so it is refused.
    foreign = (
        ("rate_mg_per_kg_per_h", "duration_hours")
        if indication == "depression"
        else ("dose_mg_per_kg", "infusion_minutes")
    )
    for name in foreign:
        if given[name] is not None:
            raise InfusionRuleBroken(name, f"does not belong to a {indication} plan")
    if indication == "depression":
        dose = _needed(dose_mg_per_kg, "dose_mg_per_kg", "a dose in mg/kg", "depression")
        minutes = _needed(infusion_minutes, "infusion_minutes", "its minutes", "depression")
        return _depression_dose(weight_kg, dose, minutes, policy)
    rate = _needed(rate_mg_per_kg_per_h, "rate_mg_per_kg_per_h", "a rate in mg/kg/h", "pain")
    hours = _needed(duration_hours, "duration_hours", "its duration in hours", "pain")
    return _pain_dose(weight_kg, rate, hours, policy)


def check_weight(weight_kg: float, policy: DosePolicy) -> None:
    if not policy.min_weight_kg <= weight_kg <= policy.max_weight_kg:
        raise InfusionRuleBroken(
            "weight_kg",
            f"must be between {policy.min_weight_kg:g} and {policy.max_weight_kg:g} kg",
        )


def check_plan_weight(plan_kg: float, assessed_kg: float, policy: DosePolicy) -> None:
    """Every dose is computed from the plan's weight (CLINICAL.md): it must be the
    patient's, so one far from the latest assessment's (a weight in pounds) is refused."""
    allowed = policy.plan_weight_difference_fraction
    if round(abs(plan_kg - assessed_kg), 6) > round(assessed_kg * allowed, 6):
        raise InfusionRuleBroken(
            "weight_kg",
            f"{plan_kg:g} kg differs from the latest assessment's {assessed_kg:g} kg by more "
            f"than {allowed:.0%}: give the weight in kg, or record a new assessment first",
        )


def _ceiling(field: str, total_mg: float, policy: DosePolicy) -> None:
    if total_mg > policy.infusion_ceiling_mg:
        raise InfusionRuleBroken(
            field,
            f"{total_mg:g} mg in one infusion is above the hard ceiling of "
            f"{policy.infusion_ceiling_mg:g} mg, which no override passes",
        )


Amount = TypeVar("Amount", int, float)


def _needed(value: Amount | None, field: str, what: str, regimen: str) -> Amount:
    """A value the regimen is dosed from; a plan without it cannot be checked."""
    if value is None:
        raise InfusionRuleBroken(field, f"a {regimen} plan needs {what}")
    return value


def _at_most(field: str, value: float, ceiling: float, unit: str) -> None:
    """A hard ceiling on what is given per kg: refused, override or not."""
    if value > ceiling:
        raise InfusionRuleBroken(field, f"above the hard ceiling of {ceiling} {unit}")


def _depression_dose(
    weight_kg: float, dose_mg_per_kg: float, minutes: int, policy: DosePolicy
) -> DoseCheck:
    _at_most("dose_mg_per_kg", dose_mg_per_kg, policy.depression_ceiling_mg_per_kg, "mg/kg")
    total = dose_mg_per_kg * weight_kg
    _ceiling("dose_mg_per_kg", round(total, 1), policy)
    outside: list[str] = []
    why: list[str] = []
    if not policy.depression_min_mg_per_kg <= dose_mg_per_kg <= policy.depression_max_mg_per_kg:
        outside.append("dose_mg_per_kg")
        why.append(
            f"inside {policy.depression_min_mg_per_kg}-{policy.depression_max_mg_per_kg} mg/kg"
        )
    # The rate, not only the total: mg/kg over the minutes is mg/kg/h (Sanacora 2017).
    rate_per_kg = dose_mg_per_kg * 60 / minutes
    if round(rate_per_kg, 6) > policy.depression_max_mg_per_kg_per_h:
        slowest = dose_mg_per_kg * 60 / policy.depression_max_mg_per_kg_per_h
        outside.append("infusion_minutes")
        why.append(
            f"{dose_mg_per_kg:g} mg/kg over {minutes} minutes is {rate_per_kg:.3g} mg/kg/h, "
            f"faster than {policy.depression_max_mg_per_kg_per_h:g} mg/kg/h: over at least "
            f"{slowest:.0f} minutes"
        )
    return DoseCheck(round(total, 1), round(total * 60 / minutes, 1), tuple(outside), tuple(why))


def _pain_dose(weight_kg: float, rate_per_kg: float, hours: float, policy: DosePolicy) -> DoseCheck:
    _at_most("rate_mg_per_kg_per_h", rate_per_kg, policy.pain_ceiling_mg_per_kg_per_h, "mg/kg/h")
    if hours > policy.pain_ceiling_hours:
        raise InfusionRuleBroken(
            "duration_hours",
            f"above the hard ceiling of {policy.pain_ceiling_hours:g} hours, which no "
            "override passes",
        )
    rate = rate_per_kg * weight_kg
    total = round(rate * hours, 1)
    _ceiling("duration_hours", total, policy)
    outside: list[str] = []
    why: list[str] = []
    if rate_per_kg > policy.pain_max_mg_per_kg_per_h:
        outside.append("rate_mg_per_kg_per_h")
        why.append(f"at most {policy.pain_max_mg_per_kg_per_h} mg/kg/h")
    if not policy.pain_min_hours <= hours <= policy.pain_max_hours:
        outside.append("duration_hours")
        why.append(f"between {policy.pain_min_hours:g} and {policy.pain_max_hours:g} hours")
    return DoseCheck(total, round(rate, 1), tuple(outside), tuple(why))


def check_dose_given(given_mg: float, planned_mg: float, policy: DosePolicy | None = None) -> bool:
    """Whether a recorded dose is within the tolerance of the plan's computed dose."""
    tolerance = (policy or clinical_policy().dose).given_tolerance_fraction
    # Rounded: 84 mg ± 10% must accept 92.4 and 75.6, which floats put a hair outside.
    return round(abs(given_mg - planned_mg), 6) <= round(planned_mg * tolerance, 6)


# --- vitals (CLINICAL.md "During a session") -------------------------------------------


def check_physiological(
    values: Mapping[str, int | None], policy: VitalsPolicy | None = None
) -> None:
    """Refuse only readings no body gives (a typo, a unit mix-up): 0 or less, or above the
    policy's impossible limit. A critically abnormal reading (SpO2 45, systolic 60) is
    recorded, never refused: it is the reading that most needs to be seen."""
    policy = policy or clinical_policy().vitals
    highest = {
        "systolic": policy.impossible_above_systolic,
        "diastolic": policy.impossible_above_diastolic,
        "heart_rate": policy.impossible_above_heart_rate,
        "spo2": policy.impossible_above_spo2,
    }
    for name, high in highest.items():
        value = values.get(name)
        if value is not None and not 0 < value <= high:
            raise InfusionRuleBroken(name, f"must be above 0 and at most {high}")
    systolic, diastolic = values.get("systolic"), values.get("diastolic")
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        raise InfusionRuleBroken("diastolic", "must be below the systolic pressure")


def above_start_limit(systolic: int, diastolic: int, policy: VitalsPolicy | None = None) -> bool:
    """A pre-infusion blood pressure at or above the start limit (local policy: 160/100)."""
    policy = policy or clinical_policy().vitals
    return systolic >= policy.before_systolic or diastolic >= policy.before_diastolic


def vitals_out_of_range(
    phase: str, values: Mapping[str, int | None], policy: VitalsPolicy | None = None
) -> list[str]:
    """Which readings cross the alert thresholds (before starting, or during), and which
    are critically abnormal in any phase: a lone systolic of 60 crosses no alert
    threshold but must reach the coordinator as an urgent alert (issue 12)."""
    policy = policy or clinical_policy().vitals
    crossed: list[str] = []
    systolic_limit, diastolic_limit = (
        (policy.before_systolic, policy.before_diastolic)
        if phase == "before"
        else (policy.during_systolic, policy.during_diastolic)
    )
    systolic, diastolic, spo2 = values.get("systolic"), values.get("diastolic"), values.get("spo2")
    if systolic is not None and systolic >= systolic_limit:
        crossed.append(f"systolic {systolic} ≥ {systolic_limit}")
    if diastolic is not None and diastolic >= diastolic_limit:
        crossed.append(f"diastolic {diastolic} ≥ {diastolic_limit}")
    if spo2 is not None and spo2 < policy.min_spo2:
        crossed.append(f"SpO2 {spo2}% < {policy.min_spo2}%")
    heart_rate = values.get("heart_rate")
    if systolic is not None and heart_rate is not None and spo2 is not None:
        crossed += critical_vitals(systolic, heart_rate, spo2, policy)
    return crossed


# --- sessions ----------------------------------------------------------------------------

SCHEDULED, CHECKED_IN, IN_PROGRESS = "scheduled", "checked-in", "in-progress"
COMPLETED, CANCELLED, ABANDONED = "completed", "cancelled", "abandoned"
SESSION_STATUSES = (SCHEDULED, CHECKED_IN, IN_PROGRESS, COMPLETED, CANCELLED, ABANDONED)
SESSION_TRANSITIONS: dict[str, dict[str, str]] = {
    "check-in": {SCHEDULED: CHECKED_IN},
    "start": {CHECKED_IN: IN_PROGRESS},
    "complete": {IN_PROGRESS: COMPLETED},
    "cancel": {SCHEDULED: CANCELLED, CHECKED_IN: CANCELLED},
    "abandon": {CHECKED_IN: ABANDONED, IN_PROGRESS: ABANDONED},
}
OPEN_SESSION = (SCHEDULED, CHECKED_IN, IN_PROGRESS)


SESSION = StateMachine("session", SESSION_TRANSITIONS)


def next_session_status(current: str, action: str) -> str:
    return SESSION.next_status(current, action)


def overlaps(start: datetime, end: datetime, others: Iterable[tuple[datetime, datetime]]) -> bool:
    return any(start < other_end and other_start < end for other_start, other_end in others)


def check_schedule(start: datetime, end: datetime, now: datetime, max_hours: float) -> None:
    if start < now:
        raise InfusionRuleBroken("start", "cannot be in the past")
    if end <= start:
        raise InfusionRuleBroken("end", "must be after the start")
    if end - start > timedelta(hours=max_hours):
        raise InfusionRuleBroken("end", f"a session lasts at most {max_hours:g} hours")


# --- course statuses (FHIR EpisodeOfCare) -----------------------------------------------

PLANNED, ACTIVE, ONHOLD, FINISHED = "planned", "active", "onhold", "finished"
COURSE_STATUSES = (PLANNED, ACTIVE, ONHOLD, FINISHED, CANCELLED)
COURSE_CLOSED = (FINISHED, CANCELLED)
COURSE_OPEN = (PLANNED, ACTIVE, ONHOLD)
COURSE_TRANSITIONS: dict[str, dict[str, str]] = {
    "activate": {PLANNED: ACTIVE},  # the first dosing plan is agreed
    "hold": {ACTIVE: ONHOLD},
    "resume": {ONHOLD: ACTIVE},
    "finish": dict.fromkeys(COURSE_OPEN, FINISHED),
    "cancel": dict.fromkeys(COURSE_OPEN, CANCELLED),
}
COURSE = StateMachine("course", COURSE_TRANSITIONS)


# Why a course closed decides how it ends (FHIR EpisodeOfCare): a course completed or
# stopped after treatment is finished; one that never got going is cancelled. The
# coordinator's projection writes the same rule; this is the one to import.
def status_after_closing(reason: str) -> str:
    """The status a course closed for this reason ends in: finished or cancelled."""
    return COURSE_STATUS_AFTER_CLOSING[reason]


def close_action(reason: str) -> str:
    """The course state machine's action that closing for this reason takes."""
    return "finish" if status_after_closing(reason) == FINISHED else "cancel"


# --- response (CLINICAL.md "Change that matters", "Course rules") ------------------------


def _fall(baseline: int | None, now: int | None) -> float | None:
    if baseline is None or now is None or baseline == 0:
        return None
    return round((baseline - now) / baseline, 3)


def response(
    baseline_pain: int | None,
    pain_now: int | None,
    baseline_phq9: int | None,
    phq9_now: int | None,
    policy: ChangePolicy | None = None,
) -> InfusionResponse:
    """Change from the course baseline (a fall is positive) and the thresholds met
    (the policy's "change that matters" section: pain relief and PHQ-9 response)."""
    policy = policy or clinical_policy().change
    pain = _fall(baseline_pain, pain_now)
    phq9 = _fall(baseline_phq9, phq9_now)
    meaningful = pain is not None and pain >= policy.pain_meaningful_fraction
    substantial = pain is not None and pain >= policy.pain_substantial_fraction
    phq9_response = phq9 is not None and phq9 >= policy.phq9_response_fraction
    # The shape the session's completed event carries, so the event states it unchanged.
    return InfusionResponse(
        pain_change_fraction=pain,
        phq9_change_fraction=phq9,
        pain_meaningful=meaningful,
        pain_substantial=substantial,
        phq9_response=phq9_response,
        responded=meaningful or phq9_response,
    )


def maintenance_due(
    last_completed: datetime | None,
    completed_count: int,
    induction_count: int,
    maintenance_interval_days: int | None,
) -> datetime | None:
    """After the induction series, the next infusion falls due at the plan's interval."""
    if last_completed is None or maintenance_interval_days is None:
        return None
    if completed_count < induction_count:
        return None
    return last_completed + timedelta(days=maintenance_interval_days)
