"""The clinical policy: every threshold of ../shared/CLINICAL.md in one typed object.

The values live in one file, ``shared/policy.toml``, shipped with carepath; a clinic
points ``CAREPATH_POLICY_FILE`` at a file of its own whose values replace the shipped
ones key by key. The types and sources live here: each section is a frozen msgspec
Struct, each setting an ``Annotated`` type whose ``Meta`` bounds refuse a nonsense value
and whose ``Meta(description=...)`` is the setting's source (the citation from
CLINICAL.md). Sources stay in code rather than in the file so a clinic's override file
carries only numbers, and ``GET /api/policy`` serves each value with its source and the
shipped default beside it (a changed value is then plain to see).

Every service reads the same object through ``clinical_policy()``, loaded once and
checked when a service starts (``shared.web.build_app``): a bad value stops the
service with a ``PolicyError`` naming the file and the key. Domain functions take a
section as an argument, so they stay pure and each test can pass its own.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

DEFAULT_FILE = Path(__file__).with_name("policy.toml")
POLICY_FILE_VARIABLE = "CAREPATH_POLICY_FILE"
LOCAL = "local policy (CLINICAL.md)"

Weeks = Annotated[int, Meta(ge=1, le=104)]
Days = Annotated[int, Meta(ge=1, le=365)]
Count = Annotated[int, Meta(ge=1, le=100)]
Fraction = Annotated[float, Meta(gt=0, le=1)]
MgPerKg = Annotated[float, Meta(gt=0, le=5)]
Hours = Annotated[float, Meta(gt=0, le=24)]
Pressure = Annotated[int, Meta(ge=40, le=300)]
Spo2 = Annotated[int, Meta(ge=50, le=100)]
# Points on a questionnaire's total: PHQ-9 totals run from 0 to 27, GAD-7 from 0 to 21.
Phq9Points = Annotated[int, Meta(ge=1, le=27)]
Gad7Points = Annotated[int, Meta(ge=1, le=21)]
Milligrams = Annotated[float, Meta(gt=0, le=2000)]
Kilograms = Annotated[float, Meta(gt=0, le=500)]
# A reading's impossible limit: a value above it is a typo or a unit mix-up, not a patient.
Reading = Annotated[int, Meta(ge=1, le=400)]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the key."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


def _order(lower: str, higher: str, values: _Section) -> None:
    low, high = getattr(values, lower), getattr(values, higher)
    if low > high:
        raise ValueError(f"{lower} ({low}) must not be more than {higher} ({high})")


class WaitingPolicy(_Section, frozen=True):
    """CLINICAL.md, "Waiting times"."""

    psychology_alert_weeks: Annotated[
        Weeks,
        Meta(
            description="NHS Talking Therapies access standard: first attended treatment "
            "within 6 weeks of referral for 75% (alert)"
        ),
    ]
    psychology_breach_weeks: Annotated[
        Weeks,
        Meta(description="NHS Talking Therapies access standard: within 18 weeks for 95% (breach)"),
    ]
    consultant_alert_weeks: Annotated[
        Weeks,
        Meta(description=f"{LOCAL}: consultant-led treatment, alert before the 18-week breach"),
    ]
    consultant_breach_weeks: Annotated[
        Weeks,
        Meta(description="NHS referral-to-treatment standard: treatment within 18 weeks"),
    ]
    urgent_triage_working_days: Annotated[
        Days, Meta(description=f"{LOCAL}: urgent referrals triaged within 2 working days")
    ]
    routine_triage_working_days: Annotated[
        Days,
        Meta(
            description="local policy (carepath's working target; CLINICAL.md sets no "
            "routine triage time): routine referrals triaged within 5 working days"
        ),
    ]
    psychology_suggestion_days: Annotated[
        Days,
        Meta(
            description=f"{LOCAL}: suggest a psychology referral within 14 days of an "
            "infusion course starting (the seed: ketamine with CBT)"
        ),
    ]

    def __post_init__(self) -> None:
        _order("psychology_alert_weeks", "psychology_breach_weeks", self)
        _order("consultant_alert_weeks", "consultant_breach_weeks", self)


class ChangePolicy(_Section, frozen=True):
    """CLINICAL.md, "Change that matters"."""

    phq9_caseness: Annotated[
        Phq9Points, Meta(description="NHS Talking Therapies manual: PHQ-9 ≥ 10")
    ]
    gad7_caseness: Annotated[
        Gad7Points, Meta(description="NHS Talking Therapies manual: GAD-7 ≥ 8")
    ]
    phq9_reliable_change: Annotated[
        Phq9Points, Meta(description="NHS Talking Therapies manual: PHQ-9 change of 6 points")
    ]
    gad7_reliable_change: Annotated[
        Gad7Points, Meta(description="NHS Talking Therapies manual: GAD-7 change of 4 points")
    ]
    pain_meaningful_fraction: Annotated[
        Fraction, Meta(description="IMMPACT, Dworkin et al. 2008: pain NRS falls ≥ 30%")
    ]
    pain_substantial_fraction: Annotated[
        Fraction, Meta(description="IMMPACT, Dworkin et al. 2008: pain NRS falls ≥ 50%")
    ]
    phq9_response_fraction: Annotated[
        Fraction,
        Meta(description="trial convention (MADRS/PHQ ≥ 50% = response), Sanacora et al. 2017"),
    ]

    def __post_init__(self) -> None:
        _order("pain_meaningful_fraction", "pain_substantial_fraction", self)


class DosePolicy(_Section, frozen=True):
    """CLINICAL.md, "Ketamine infusions", dosing plan."""

    depression_min_mg_per_kg: Annotated[
        MgPerKg, Meta(description="Sanacora et al. 2017: reported range 0.1 to 0.75 mg/kg")
    ]
    depression_max_mg_per_kg: Annotated[
        MgPerKg, Meta(description="Sanacora et al. 2017: reported range 0.1 to 0.75 mg/kg")
    ]
    depression_ceiling_mg_per_kg: Annotated[
        MgPerKg, Meta(description=f"{LOCAL}: hard ceiling, never overridden")
    ]
    pain_max_mg_per_kg_per_h: Annotated[
        MgPerKg, Meta(description="Cohen et al. 2018: CRPS regimens up to 0.35 mg/kg/h")
    ]
    pain_ceiling_mg_per_kg_per_h: Annotated[
        MgPerKg, Meta(description=f"{LOCAL}: hard ceiling 1 mg/kg/h, never overridden")
    ]
    pain_min_hours: Annotated[
        Hours, Meta(description="Cohen et al. 2018: a first infusion over at least 2 hours")
    ]
    pain_max_hours: Annotated[
        Hours, Meta(description="Cohen et al. 2018: CRPS regimens for 4 h a day")
    ]
    depression_max_mg_per_kg_per_h: Annotated[
        MgPerKg,
        Meta(
            description="Sanacora et al. 2017: the standard regimen, 0.5 mg/kg over 40 "
            "minutes, runs at 0.75 mg/kg/h; a depression plan infused faster (mg/kg over "
            "its minutes) needs a clinician's override with a reason"
        ),
    ]
    pain_ceiling_hours: Annotated[
        Hours,
        Meta(
            description=f"{LOCAL}: hard ceiling on one infusion's duration, never "
            "overridden (twice the longest CRPS regimen day of 4 h, Cohen et al. 2018)"
        ),
    ]
    session_max_hours: Annotated[
        Hours,
        Meta(
            description=f"{LOCAL}: a booked infusion session, with check-in and recovery, "
            "lasts at most 10 hours (the 8-hour infusion ceiling and observation)"
        ),
    ]
    infusion_ceiling_mg: Annotated[
        Milligrams,
        Meta(
            description=f"{LOCAL}: hard ceiling on the total dose of one infusion, never "
            "overridden (the 1 mg/kg/h ceiling for 4 h at 100 kg)"
        ),
    ]
    pain_first_infusion_max_mg: Annotated[
        Milligrams,
        Meta(
            description="Cohen et al. 2018: a first outpatient infusion of about 80 mg, "
            "then reassessment before a series"
        ),
    ]
    min_weight_kg: Annotated[
        Kilograms, Meta(description=f"{LOCAL}: a plan's or assessment's weight of 20 kg or more")
    ]
    max_weight_kg: Annotated[
        Kilograms, Meta(description=f"{LOCAL}: a plan's or assessment's weight of 300 kg or less")
    ]
    plan_weight_difference_fraction: Annotated[
        Fraction,
        Meta(
            description=f"{LOCAL}: a plan's weight within 10% of the latest assessment's "
            "(every dose is computed from it, CLINICAL.md; a weight in pounds is refused)"
        ),
    ]
    given_tolerance_fraction: Annotated[
        Fraction,
        Meta(
            description="local policy: a dose given within 10% of the plan's computed dose; "
            "outside it the dose is recorded with a reason"
        ),
    ]

    def __post_init__(self) -> None:
        _order("depression_min_mg_per_kg", "depression_max_mg_per_kg", self)
        _order("depression_max_mg_per_kg", "depression_ceiling_mg_per_kg", self)
        _order("pain_max_mg_per_kg_per_h", "pain_ceiling_mg_per_kg_per_h", self)
        _order("pain_min_hours", "pain_max_hours", self)
        _order("pain_max_hours", "pain_ceiling_hours", self)
        _order("pain_ceiling_hours", "session_max_hours", self)
        _order("min_weight_kg", "max_weight_kg", self)


class VitalsPolicy(_Section, frozen=True):
    """CLINICAL.md, "Ketamine infusions", during a session: all local policy."""

    before_systolic: Annotated[Pressure, Meta(description=f"{LOCAL}: systolic ≥ 160 before")]
    before_diastolic: Annotated[Pressure, Meta(description=f"{LOCAL}: diastolic ≥ 100 before")]
    during_systolic: Annotated[Pressure, Meta(description=f"{LOCAL}: systolic ≥ 180 during")]
    during_diastolic: Annotated[Pressure, Meta(description=f"{LOCAL}: diastolic ≥ 110 during")]
    min_spo2: Annotated[Spo2, Meta(description=f"{LOCAL}: SpO2 < 92%")]
    interval_minutes: Annotated[
        int,
        Meta(
            ge=1,
            le=60,
            description=f"{LOCAL}: vitals at least every 15 minutes (trials: every 10)",
        ),
    ]
    # Critically abnormal readings (issue 12): an urgent alert, whatever the phase.
    critical_low_systolic: Annotated[
        Pressure,
        Meta(
            description="NEWS2 (Royal College of Physicians 2017): systolic ≤ 90 mmHg scores "
            "3, a single red parameter that needs an urgent clinical response"
        ),
    ]
    critical_high_systolic: Annotated[
        Pressure,
        Meta(description="NEWS2 (Royal College of Physicians 2017): systolic ≥ 220 scores 3"),
    ]
    critical_low_heart_rate: Annotated[
        int,
        Meta(ge=20, le=100, description="NEWS2 (Royal College of Physicians 2017): pulse ≤ 40"),
    ]
    critical_high_heart_rate: Annotated[
        int,
        Meta(ge=60, le=250, description="NEWS2 (Royal College of Physicians 2017): pulse ≥ 131"),
    ]
    critical_low_spo2: Annotated[
        Spo2,
        Meta(
            description=f"{LOCAL}: SpO2 < 88%, below every target range of the BTS guideline "
            "for oxygen use in adults (O'Driscoll et al. 2017, Thorax 72:i1)"
        ),
    ]
    critical_due_minutes: Annotated[
        int,
        Meta(
            ge=1,
            le=240,
            description=f"{LOCAL}: a critically abnormal reading is acted on within 15 "
            "minutes (the monitoring interval), or the alert escalates to the MDT",
        ),
    ]

    # Critically abnormal readings (SpO2 45, systolic 60) are recorded and alerted on;
    # only a reading no body can give (0 or less, or above these) is refused.
    impossible_above_systolic: Annotated[
        Reading, Meta(description=f"{LOCAL}: a systolic above 300 mmHg (or 0) is impossible")
    ]
    impossible_above_diastolic: Annotated[
        Reading, Meta(description=f"{LOCAL}: a diastolic above 250 mmHg (or 0) is impossible")
    ]
    impossible_above_heart_rate: Annotated[
        Reading, Meta(description=f"{LOCAL}: a heart rate above 300/min (or 0) is impossible")
    ]
    impossible_above_spo2: Annotated[
        Reading, Meta(description="SpO2 is a percentage: above 100 (or 0) is impossible")
    ]

    def __post_init__(self) -> None:
        _order("critical_low_spo2", "min_spo2", self)
        _order("critical_low_systolic", "before_systolic", self)
        _order("during_systolic", "critical_high_systolic", self)
        _order("critical_low_heart_rate", "critical_high_heart_rate", self)


class CoursePolicy(_Section, frozen=True):
    """CLINICAL.md, "Ketamine infusions", course rules."""

    no_response_after_sessions: Annotated[
        Count, Meta(description=f"{LOCAL}: no meaningful response after 3 infusions → MDT")
    ]
    relief_worn_off_fraction: Annotated[
        Fraction, Meta(description="the seed: relief worn off, pain back within 10% of baseline")
    ]
    maintenance_grace_days: Annotated[
        int,
        Meta(
            ge=0,
            le=90,
            description=f"{LOCAL}: a planned maintenance infusion is overdue once its due "
            "day has passed",
        ),
    ]


class OpioidPolicy(_Section, frozen=True):
    """CLINICAL.md, "Ketamine infusions", course rules: opioid reduction (shared.opioids)."""

    conversion_table: Annotated[
        Literal["opioids-aware", "cdc-2022"],
        Meta(
            description="Faculty of Pain Medicine, Opioids Aware (default) or CDC 2022 "
            "(Dowell et al., MMWR 71(3)): the oral morphine factors MME per day is "
            "computed with"
        ),
    ]
    high_mme_per_day: Annotated[
        float, Meta(ge=1, le=1000, description="CDC 2022: flag 50 MME/day or more")
    ]
    very_high_mme_per_day: Annotated[
        float, Meta(ge=1, le=1000, description="CDC 2022: flag 90 MME/day or more")
    ]

    def __post_init__(self) -> None:
        _order("high_mme_per_day", "very_high_mme_per_day", self)


class TherapyPolicy(_Section, frozen=True):
    """CLINICAL.md, "Therapy (CBT / psychology)"."""

    dna_threshold: Annotated[
        Count, Meta(description=f"{LOCAL}: after 2 missed appointments → discharge review")
    ]
    min_treatment_appointments: Annotated[
        Count,
        Meta(description="NHS Talking Therapies: a finished course needs 2 attended sessions"),
    ]
    slot_minutes: Annotated[
        int,
        Meta(
            ge=5,
            le=480,
            description="local policy (carepath's diary): one CBT session a slot, on the hour",
        ),
    ]


class AlertPolicy(_Section, frozen=True):
    """When an alert falls due where CLINICAL.md gives no time (same-working-day alerts
    fall due at the end of that day)."""

    review_due_days: Annotated[
        Days,
        Meta(
            description="local policy: a DNA review, reliable deterioration, no response, "
            "overdue maintenance or missing psychology referral is due 7 days after it is "
            "raised"
        ),
    ]
    maintenance_decision_due_days: Annotated[
        Days,
        Meta(
            description="local policy: the MDT decides on maintenance within 14 days of the "
            "induction series ending"
        ),
    ]
    urgent_escalation_minutes: Annotated[
        int,
        Meta(
            ge=0,
            le=1440,
            description="local policy (issue 12): an urgent alert nobody has acknowledged "
            "this many minutes after its due time escalates to a critical alert for the MDT",
        ),
    ]


class RequestPolicy(_Section, frozen=True):
    """Operational: how the API treats a repeated request (shared.idempotency) and a
    referral that may repeat another (issue 16)."""

    idempotency_key_hours: Annotated[
        int,
        Meta(ge=1, le=720),
        Meta(
            description="local policy: a request's Idempotency-Key and the answer stored with "
            "it are kept 24 hours; after that the key acts as new and the stored answer, "
            "which holds patient data, is deleted"
        ),
    ]
    possible_duplicate_days: Annotated[
        Days,
        Meta(
            description="local policy: a second open referral of a patient to the same team "
            "within 30 days of the first is marked in the inbox as a possible duplicate of "
            "it (never refused), so the team triages both together"
        ),
    ]


class ClinicalPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole policy, one section per part of CLINICAL.md, and the API's own."""

    waits: WaitingPolicy
    change: ChangePolicy
    dose: DosePolicy
    vitals: VitalsPolicy
    course: CoursePolicy
    opioids: OpioidPolicy
    therapy: TherapyPolicy
    alerts: AlertPolicy
    requests: RequestPolicy


# --- loading --------------------------------------------------------------------------


def load_policy(path: Path | str | None = None) -> ClinicalPolicy:
    """The shipped policy with ``path`` (or ``$CAREPATH_POLICY_FILE``) laid over it.

    Raises ``PolicyError`` naming the file and the key of the first bad value.
    """
    shipped = _read(DEFAULT_FILE)
    chosen = path if path is not None else os.environ.get(POLICY_FILE_VARIABLE) or None
    if chosen is None:
        return _convert(shipped, DEFAULT_FILE)
    override = Path(chosen)
    return _convert(_overlay(shipped, _read(override)), override)


@cache
def clinical_policy() -> ClinicalPolicy:
    """The policy every service uses, loaded once (``clinical_policy.cache_clear()``
    makes the next call read the files again)."""
    return load_policy()


@cache
def default_policy() -> ClinicalPolicy:
    """The shipped policy alone, whatever ``CAREPATH_POLICY_FILE`` says."""
    return _convert(_read(DEFAULT_FILE), DEFAULT_FILE)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the policy file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{path}: not valid TOML: {error}") from None


def _overlay(shipped: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(shipped)
    for section, values in override.items():
        base = merged.get(section)
        if isinstance(base, dict) and isinstance(values, dict):
            merged[section] = {**base, **values}
        else:
            merged[section] = values  # an unknown section, or not a table: convert says so
    return merged


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _convert(values: dict[str, Any], path: Path) -> ClinicalPolicy:
    try:
        return msgspec.convert(values, ClinicalPolicy)
    except msgspec.ValidationError as error:
        raise PolicyError(f"{path}: {_describe(str(error), values)}") from None


def _describe(error: str, values: dict[str, Any]) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.waits.x`" as "waits.x: expected int >= 1,
    got -3", so the message names the key as it is written in the file."""
    parts = _AT.match(error)
    assert parts is not None  # the pattern matches any text
    message, keys = parts["message"], [k for k in (parts["path"] or "").split(".") if k]
    if unknown := _UNKNOWN.match(message):
        return f"{'.'.join([*keys, unknown['field']])}: is not a policy setting"
    if missing := _MISSING.match(message):
        return f"{'.'.join([*keys, missing['field']])}: is missing"
    text = message.replace("`", "")
    text = text[:1].lower() + text[1:]
    given: Any = values
    for key in keys:
        given = given.get(key) if isinstance(given, dict) else None
    if keys and not isinstance(given, dict):
        text += f" ({given!r})" if ", got" in text else f", got {given!r}"
    return f"{'.'.join(keys) or 'policy'}: {text}"


# --- what GET /api/policy answers -----------------------------------------------------


class PolicySetting(msgspec.Struct, frozen=True, kw_only=True):
    # A count is a number too: `int | float` would make the schema's oneOf match both.
    value: float | str
    default: float | str
    source: str


def described(policy: ClinicalPolicy) -> dict[str, dict[str, PolicySetting]]:
    """Every setting by section: its value, the shipped default and its source."""
    shipped = default_policy()
    sections: dict[str, dict[str, PolicySetting]] = {}
    for section in msgspec.structs.fields(ClinicalPolicy):
        info = msgspec.inspect.type_info(section.type)
        assert isinstance(info, msgspec.inspect.StructType)
        settings: dict[str, PolicySetting] = {}
        for field in info.fields:
            assert isinstance(field.type, msgspec.inspect.Metadata)
            schema = field.type.extra_json_schema or {}
            settings[field.name] = PolicySetting(
                value=getattr(getattr(policy, section.name), field.name),
                default=getattr(getattr(shipped, section.name), field.name),
                source=str(schema.get("description", "")),
            )
        sections[section.name] = settings
    return sections
