"""The clinical policy (shared/policy.py, shared/policy.toml): one typed object holding
every threshold of CLINICAL.md, overridable with CAREPATH_POLICY_FILE, checked at start,
and served read-only at GET /api/policy with each value's source."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from click.testing import CliRunner
from dramatiq.brokers.stub import StubBroker

from services.cli import main
from services.coordinator.domain import ReferralStream, Streams
from services.coordinator.projection import project
from services.coordinator.rules import Crossing, crossed, depression_anxiety_change
from services.infusions.domain import check_dose
from shared.auth import Role
from shared.policy import (
    POLICY_FILE_VARIABLE,
    AlertPolicy,
    ChangePolicy,
    ClinicalPolicy,
    CoursePolicy,
    DosePolicy,
    OpioidPolicy,
    PolicyError,
    RequestPolicy,
    TherapyPolicy,
    VitalsPolicy,
    WaitingPolicy,
    clinical_policy,
    default_policy,
    load_policy,
)
from shared.settings import PlatformSettings, RunMode
from shared.web import build_app
from tests.embedded import SECRET, Embedded

from .factories import T0, patient_registered, referral_received

# CLINICAL.md's defaults, written out once: the shipped file must say exactly this.
TODAY = ClinicalPolicy(
    waits=WaitingPolicy(
        psychology_alert_weeks=6,
        psychology_breach_weeks=18,
        consultant_alert_weeks=12,
        consultant_breach_weeks=18,
        urgent_triage_working_days=2,
        routine_triage_working_days=5,
        psychology_suggestion_days=14,
    ),
    change=ChangePolicy(
        phq9_caseness=10,
        gad7_caseness=8,
        phq9_reliable_change=6,
        gad7_reliable_change=4,
        pain_meaningful_fraction=0.30,
        pain_substantial_fraction=0.50,
        phq9_response_fraction=0.50,
    ),
    dose=DosePolicy(
        depression_min_mg_per_kg=0.1,
        depression_max_mg_per_kg=0.75,
        depression_ceiling_mg_per_kg=1.0,
        pain_max_mg_per_kg_per_h=0.35,
        pain_ceiling_mg_per_kg_per_h=1.0,
        pain_min_hours=2.0,
        pain_max_hours=4.0,
        depression_max_mg_per_kg_per_h=0.75,
        pain_ceiling_hours=8.0,
        session_max_hours=10.0,
        infusion_ceiling_mg=400.0,
        pain_first_infusion_max_mg=80.0,
        min_weight_kg=20.0,
        max_weight_kg=300.0,
        plan_weight_difference_fraction=0.10,
        given_tolerance_fraction=0.10,
    ),
    vitals=VitalsPolicy(
        before_systolic=160,
        before_diastolic=100,
        during_systolic=180,
        during_diastolic=110,
        min_spo2=92,
        interval_minutes=15,
        critical_low_systolic=90,
        critical_high_systolic=220,
        critical_low_heart_rate=40,
        critical_high_heart_rate=131,
        critical_low_spo2=88,
        critical_due_minutes=15,
        impossible_above_systolic=300,
        impossible_above_diastolic=250,
        impossible_above_heart_rate=300,
        impossible_above_spo2=100,
    ),
    course=CoursePolicy(
        no_response_after_sessions=3, relief_worn_off_fraction=0.10, maintenance_grace_days=1
    ),
    opioids=OpioidPolicy(
        conversion_table="opioids-aware", high_mme_per_day=50, very_high_mme_per_day=90
    ),
    therapy=TherapyPolicy(dna_threshold=2, min_treatment_appointments=2, slot_minutes=60),
    alerts=AlertPolicy(
        review_due_days=7, maintenance_decision_due_days=14, urgent_escalation_minutes=0
    ),
    requests=RequestPolicy(idempotency_key_hours=24, possible_duplicate_days=30),
)
SECTIONS = (
    "waits",
    "change",
    "dose",
    "vitals",
    "course",
    "opioids",
    "therapy",
    "alerts",
    "requests",
)


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test loads the policy from its own environment; later tests get the default."""
    monkeypatch.delenv(POLICY_FILE_VARIABLE, raising=False)
    clinical_policy.cache_clear()
    yield
    clinical_policy.cache_clear()


def override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clinic-policy.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv(POLICY_FILE_VARIABLE, str(path))
    clinical_policy.cache_clear()
    return path


# --- the shipped default ----------------------------------------------------------------


def test_the_shipped_file_holds_todays_thresholds() -> None:
    assert load_policy() == TODAY
    assert default_policy() == TODAY
    assert clinical_policy() == TODAY


# --- an override file changes a rule's outcome -------------------------------------------


def test_an_override_file_replaces_only_the_keys_it_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    override(monkeypatch, tmp_path, "[change]\nphq9_caseness = 12\n")
    policy = clinical_policy()
    assert policy.change.phq9_caseness == 12
    assert policy.change.gad7_caseness == TODAY.change.gad7_caseness
    assert policy.waits == TODAY.waits
    assert default_policy() == TODAY  # the shipped values stay known beside it


def test_a_clinics_caseness_changes_the_change_that_matters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PHQ-9 of 11 is at caseness by the NHS Talking Therapies default (≥ 10), not by a
    clinic's 12: the rule reads the loaded policy."""
    assert depression_anxiety_change("phq9", 11, 4).at_caseness_first is True
    assert depression_anxiety_change("phq9", 11, 4).recovered is True
    override(monkeypatch, tmp_path, "[change]\nphq9_caseness = 12\n")
    change = depression_anxiety_change("phq9", 11, 4)
    assert change.at_caseness_first is False
    assert change.recovered is None


def test_a_clinics_wait_moves_the_waiting_alert(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    referral = ReferralStream(
        id="r1", target="psychology", priority="routine", status="accepted", received_at=T0
    )
    four_weeks = T0 + timedelta(weeks=4)
    assert crossed(Streams(referrals=[referral]), four_weeks) == []
    override(monkeypatch, tmp_path, "[waits]\npsychology_alert_weeks = 4\n")
    assert crossed(Streams(referrals=[referral]), four_weeks) == [
        Crossing("waiting-time", "r1", four_weeks)
    ]


def test_a_clinics_triage_time_moves_the_pathways_next_action(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through the coordinator's whole fold: an urgent referral received on Monday is due
    for triage on Wednesday by default, on Thursday with three working days."""
    patient = uuid4()
    events = [patient_registered(patient), referral_received(patient, priority="urgent")]
    (action,) = project(patient, events).next_actions
    assert action.due == T0 + timedelta(days=2)
    override(monkeypatch, tmp_path, "[waits]\nurgent_triage_working_days = 3\n")
    (action,) = project(patient, events).next_actions
    assert action.due == T0 + timedelta(days=3)


def test_a_clinics_dose_band_moves_the_override_requirement(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def plan() -> tuple[str, ...]:
        return check_dose(
            indication="depression",
            weight_kg=70,
            dose_mg_per_kg=0.78,
            infusion_minutes=63,  # 0.74 mg/kg/h: only the dose is outside its band
            rate_mg_per_kg_per_h=None,
            duration_hours=None,
        ).outside_band

    assert plan() == ("dose_mg_per_kg",)
    override(monkeypatch, tmp_path, "[dose]\ndepression_max_mg_per_kg = 0.8\n")
    assert plan() == ()


# --- a bad policy stops the service, naming the key --------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[waits]\npsychology_breach_weeks = -3\n",
            "waits.psychology_breach_weeks: expected int >= 1, got -3",
        ),
        ("[change]\nphq9_caseness = 9.5\n", "change.phq9_caseness: expected int, got float (9.5)"),
        ("[vitals]\nmin_spo2 = 120\n", "vitals.min_spo2: expected int <= 100, got 120"),
        ("[dose]\npain_min_hours = 0\n", "dose.pain_min_hours: expected float > 0"),
        (
            "[waits]\npsychology_alert_weeks = 20\n",
            "waits: psychology_alert_weeks (20) must not be more than psychology_breach_weeks",
        ),
        (
            "[dose]\ndepression_max_mg_per_kg = 2.0\n",
            "dose: depression_max_mg_per_kg (2.0) must not be more than "
            "depression_ceiling_mg_per_kg",
        ),
    ],
)
def test_a_bad_value_fails_naming_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    path = override(monkeypatch, tmp_path, text)
    with pytest.raises(PolicyError) as refused:
        clinical_policy()
    assert str(refused.value).startswith(f"{path}: ")
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[waits]\npsychology_alert_week = 4\n", "waits.psychology_alert_week"),
        ("[wait]\npsychology_alert_weeks = 4\n", "wait"),
    ],
)
def test_an_unknown_key_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, key: str
) -> None:
    """A misspelt key would otherwise leave the default silently in force."""
    path = override(monkeypatch, tmp_path, text)
    with pytest.raises(PolicyError, match="is not a policy setting") as refused:
        clinical_policy()
    assert str(refused.value) == f"{path}: {key}: is not a policy setting"


def test_a_missing_or_broken_file_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.toml")
    path = override(monkeypatch, tmp_path, "[waits\n")
    with pytest.raises(PolicyError, match="not valid TOML") as refused:
        clinical_policy()
    assert str(path) in str(refused.value)


def test_building_the_app_with_a_bad_policy_stops_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    override(monkeypatch, tmp_path, "[therapy]\ndna_threshold = 0\n")
    platform = PlatformSettings(env=RunMode.development, jwt_secret=SECRET, data_dir=tmp_path)
    with pytest.raises(PolicyError, match=r"therapy\.dna_threshold: expected int >= 1, got 0"):
        build_app([], StubBroker(), platform, embedded=True, migrate_on_start=False)


def test_the_carepath_command_refuses_to_start_with_a_bad_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    override(monkeypatch, tmp_path, "[alerts]\nreview_due_days = 0\n")
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["migrate", "referrals"])
    assert result.exit_code == 1
    assert "alerts.review_due_days: expected int >= 1, got 0" in result.output
    assert not list(tmp_path.glob("*.sqlite3"))  # nothing was migrated


# --- GET /api/policy --------------------------------------------------------------------


def test_every_staff_role_reads_the_policy_with_values_and_sources(embedded: Embedded) -> None:
    for role in (Role.referrer, Role.psychologist, Role.infusion_clinician, Role.mdt, Role.admin):
        response = embedded.client.get("/api/policy", headers=embedded.headers(role))
        assert response.status_code == 200, role
    body = response.json()
    assert tuple(body) == SECTIONS
    assert body["waits"]["psychology_alert_weeks"]["value"] == 6
    assert body["waits"]["psychology_alert_weeks"]["default"] == 6
    assert "NHS Talking Therapies" in body["waits"]["psychology_alert_weeks"]["source"]
    assert body["change"]["phq9_caseness"]["value"] == 10
    assert body["dose"]["depression_max_mg_per_kg"]["value"] == 0.75
    assert "Sanacora" in body["dose"]["depression_max_mg_per_kg"]["source"]
    assert body["vitals"]["during_systolic"]["source"].startswith("local policy")
    settings = [setting for section in body.values() for setting in section.values()]
    assert len(settings) == sum(
        len(getattr(TODAY, section).__struct_fields__) for section in SECTIONS
    )
    assert all(setting["source"] and setting["value"] == setting["default"] for setting in settings)


def test_the_policy_needs_a_staff_token_and_is_read_only(embedded: Embedded) -> None:
    embedded.client.cookies.clear()
    assert embedded.client.get("/api/policy").status_code == 401
    service = embedded.headers(Role.service)
    assert embedded.client.get("/api/policy", headers=service).status_code == 403
    admin = embedded.headers(Role.admin)
    assert embedded.client.post("/api/policy", headers=admin, json={}).status_code == 405
    assert embedded.client.put("/api/policy", headers=admin, json={}).status_code == 405


def test_the_policy_served_is_the_loaded_one(
    embedded: Embedded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed value is served with the shipped default beside it."""
    override(monkeypatch, tmp_path, "[therapy]\ndna_threshold = 3\n")
    response = embedded.client.get("/api/policy", headers=embedded.headers(Role.mdt))
    setting = response.json()["therapy"]["dna_threshold"]
    assert (setting["value"], setting["default"]) == (3, 2)
