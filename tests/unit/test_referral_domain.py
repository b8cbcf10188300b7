"""Referral rules, pure: the state machine, triage input, waiting-time standards, and who
may do what (issue 3, "Referrals service"; CLINICAL.md "Waiting times" and "Standards to
map to")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from msgspec.structs import replace

from services.referrals.domain import (
    ACCEPTED,
    CANCELLED,
    CLOCK_STOPPED,
    CLOSED,
    FHIR_SERVICE_REQUEST_STATUS,
    FHIR_TASK_STATUS,
    INFO_REQUESTED,
    PRIORITY_RANK,
    RECEIVED,
    REJECTED,
    STATUSES,
    TRANSITIONS,
    IllegalTransition,
    ReferralRuleBroken,
    WaitingStandard,
    can_act_as_referrer,
    can_see_referral,
    can_triage,
    check_triage,
    next_status,
    possible_duplicates,
    sees_clinical_detail,
    standard_for,
    triage_state,
    waiting_days,
    waiting_state,
    working_days_between,
)
from shared.calendar import working_calendar
from shared.policy import default_policy
from shared.triage import triage_due

TARGETS = ("psychology", "ketamine-infusion", "pain-mdt")
ROLES = ("referrer", "psychologist", "infusion-clinician", "mdt", "admin", "service")
ACTIONS = tuple(TRANSITIONS)

# --- the state machine ---------------------------------------------------------------

# Issue 3: "received → (info-requested ↔ received) → accepted | rejected; accepted →
# closed when the receiving service reports the course or episode ended; cancelled by
# the referrer at any point before closure." Written out here, not read from TRANSITIONS,
# so a change to the table has to change this test too.
LEGAL = {
    (RECEIVED, "request-info"): INFO_REQUESTED,
    (INFO_REQUESTED, "provide-info"): RECEIVED,
    (RECEIVED, "accept"): ACCEPTED,
    (RECEIVED, "reject"): REJECTED,
    (RECEIVED, "cancel"): CANCELLED,
    (INFO_REQUESTED, "cancel"): CANCELLED,
    (ACCEPTED, "cancel"): CANCELLED,
    (ACCEPTED, "close"): CLOSED,
}
ILLEGAL = [
    (status, action) for status in STATUSES for action in ACTIONS if (status, action) not in LEGAL
]


def test_the_transition_table_is_the_issues_lifecycle() -> None:
    """Issue 3, "A referral's life follows FHIR ServiceRequest with a Task-style business
    status": exactly these moves, no more."""
    table = {
        (start, action): end
        for action, moves in TRANSITIONS.items()
        for start, end in moves.items()
    }
    assert table == LEGAL
    assert set(STATUSES) == {RECEIVED, INFO_REQUESTED, ACCEPTED, REJECTED, CANCELLED, CLOSED}


@pytest.mark.parametrize(
    ("current", "action", "expected"),
    [(start, action, end) for action, moves in TRANSITIONS.items() for start, end in moves.items()],
)
def test_every_legal_transition(current: str, action: str, expected: str) -> None:
    assert next_status(current, action) == expected
    assert LEGAL[(current, action)] == expected


@pytest.mark.parametrize(("current", "action"), ILLEGAL)
def test_every_illegal_transition_names_the_current_status(current: str, action: str) -> None:
    """Issue 3: "Illegal transitions are a 409 naming the current status"; the API builds
    the 409 from the error's ``current``."""
    with pytest.raises(IllegalTransition) as raised:
        next_status(current, action)
    assert raised.value.current == current
    assert raised.value.action == action
    assert current in str(raised.value)


def test_the_illegal_list_covers_every_other_pair() -> None:
    assert len(ILLEGAL) + len(LEGAL) == len(STATUSES) * len(ACTIONS)
    assert len(ILLEGAL) == 6 * 6 - 8


@pytest.mark.parametrize("action", ["approve", "", "ACCEPT", "refer", "triage"])
def test_an_unknown_action_is_a_value_error_not_an_illegal_transition(action: str) -> None:
    with pytest.raises(ValueError, match="unknown action") as raised:
        next_status(RECEIVED, action)
    assert not isinstance(raised.value, IllegalTransition)


def test_terminal_statuses_are_the_ones_that_stop_the_waiting_clock() -> None:
    """A status with no way out is off the waiting list, and only those are."""
    terminal = {s for s in STATUSES if not any(s in moves for moves in TRANSITIONS.values())}
    assert terminal == set(CLOCK_STOPPED) == {REJECTED, CANCELLED, CLOSED}


# CLINICAL.md "Standards to map to": the FHIR R4 value sets.
FHIR_REQUEST_STATUS_SET = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
FHIR_TASK_STATUS_SET = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_maps_into_the_fhir_r4_value_sets(status: str) -> None:
    """CLINICAL.md Standards to map to: ServiceRequest status and Task status (FHIR R4)."""
    assert FHIR_SERVICE_REQUEST_STATUS[status] in FHIR_REQUEST_STATUS_SET
    assert FHIR_TASK_STATUS[status] in FHIR_TASK_STATUS_SET


def test_the_fhir_maps_have_no_stray_statuses() -> None:
    assert set(FHIR_SERVICE_REQUEST_STATUS) == set(STATUSES)
    assert set(FHIR_TASK_STATUS) == set(STATUSES)


@pytest.mark.parametrize("status", CLOCK_STOPPED)
def test_a_finished_referral_is_not_an_active_service_request(status: str) -> None:
    assert FHIR_SERVICE_REQUEST_STATUS[status] in {"revoked", "completed"}


def test_task_statuses_that_share_a_name_keep_it() -> None:
    """received, accepted, rejected and cancelled are Task statuses of the same meaning."""
    for status in (RECEIVED, ACCEPTED, REJECTED, CANCELLED):
        assert FHIR_TASK_STATUS[status] == status
    assert FHIR_TASK_STATUS[CLOSED] == "completed"


# --- triage input --------------------------------------------------------------------


@pytest.mark.parametrize("reason", [None, "", "   ", "\t\n"])
def test_a_rejection_needs_a_reason(reason: str | None) -> None:
    """Issue 3, Triage: "reject (reason required)"."""
    with pytest.raises(ReferralRuleBroken) as raised:
        check_triage("reject", reason, "a question is not a reason")
    assert raised.value.field == "reason"


@pytest.mark.parametrize("question", [None, "", "   ", "\t\n"])
def test_a_request_for_information_needs_a_question(question: str | None) -> None:
    """Issue 3, Triage: "request-info (question required)"."""
    with pytest.raises(ReferralRuleBroken) as raised:
        check_triage("request-info", "a reason is not a question", question)
    assert raised.value.field == "question"


@pytest.mark.parametrize(
    ("decision", "reason", "question"),
    [
        ("accept", None, None),
        ("accept", "", "  "),
        ("reject", "not suitable for this service", None),
        ("request-info", None, "which medicines were tried?"),
    ],
)
def test_complete_triage_decisions_pass(
    decision: str, reason: str | None, question: str | None
) -> None:
    check_triage(decision, reason, question)


# --- waiting-time standards ----------------------------------------------------------

POLICY = default_policy().waits


def test_psychology_is_measured_against_the_talking_therapies_standard() -> None:
    """CLINICAL.md Waiting times: psychology, alert at 6 weeks, breach at 18 (NHS Talking
    Therapies access standard)."""
    for priority, status in (("routine", RECEIVED), ("routine", ACCEPTED), ("urgent", ACCEPTED)):
        standard = standard_for("psychology", priority, status, POLICY)
        assert (standard.at_risk_after_days, standard.breach_after_days) == (42, 126)
        assert not standard.working_days
        assert "Talking Therapies" in standard.source


@pytest.mark.parametrize("target", ["ketamine-infusion", "pain-mdt"])
def test_consultant_led_teams_use_referral_to_treatment(target: str) -> None:
    """CLINICAL.md Waiting times: consultant-led treatment (infusion clinic, pain MDT),
    alert at 12 weeks (local policy), breach at 18 (NHS referral-to-treatment)."""
    for status in (RECEIVED, INFO_REQUESTED, ACCEPTED):
        standard = standard_for(target, "routine", status, POLICY)
        assert (standard.at_risk_after_days, standard.breach_after_days) == (84, 126)
        assert not standard.working_days
        assert "referral-to-treatment" in standard.source


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("status", [RECEIVED, INFO_REQUESTED])
def test_untriaged_urgent_referrals_are_measured_in_working_days(target: str, status: str) -> None:
    """CLINICAL.md Waiting times: urgent referrals, triage within 2 working days (local
    policy). At risk from the first working day, breached on the second."""
    standard = standard_for(target, "urgent", status, POLICY)
    assert standard.working_days
    assert (standard.at_risk_after_days, standard.breach_after_days) == (1, 2)
    assert "working days" in standard.name


@pytest.mark.parametrize(
    ("target", "at_risk", "breach"),
    [("psychology", 42, 126), ("ketamine-infusion", 84, 126), ("pain-mdt", 84, 126)],
)
@pytest.mark.parametrize("status", [ACCEPTED, REJECTED, CANCELLED, CLOSED])
def test_urgent_after_triage_falls_back_to_the_teams_standard(
    target: str, at_risk: int, breach: int, status: str
) -> None:
    """The urgent standard is about triage; once triaged the team's own standard applies."""
    standard = standard_for(target, "urgent", status, POLICY)
    assert not standard.working_days
    assert (standard.at_risk_after_days, standard.breach_after_days) == (at_risk, breach)


def _boundaries() -> list[tuple[str, str, str, int, str]]:
    """(target, priority, status, days, expected state) either side of every boundary."""
    cases = []
    for target, priority, status, at_risk, breach in (
        ("psychology", "routine", RECEIVED, 42, 126),
        ("ketamine-infusion", "routine", RECEIVED, 84, 126),
        ("pain-mdt", "routine", RECEIVED, 84, 126),
        ("psychology", "urgent", RECEIVED, 1, 2),
        ("pain-mdt", "urgent", INFO_REQUESTED, 1, 2),
        ("psychology", "urgent", ACCEPTED, 42, 126),
    ):
        cases += [
            (target, priority, status, at_risk - 1, "within"),
            (target, priority, status, at_risk, "at-risk"),
            (target, priority, status, breach - 1, "at-risk"),
            (target, priority, status, breach, "breached"),
        ]
    return cases


@pytest.mark.parametrize(("target", "priority", "status", "days", "state"), _boundaries())
def test_waiting_state_at_each_boundary(
    target: str, priority: str, status: str, days: int, state: str
) -> None:
    """CLINICAL.md Waiting times: "alert at" is at-risk from that day on, "breach at" is
    breached from that day on."""
    standard = standard_for(target, priority, status, POLICY)
    assert waiting_state(days, standard) == state


def test_day_zero_is_within_every_standard() -> None:
    for target in TARGETS:
        for priority in ("routine", "urgent"):
            assert waiting_state(0, standard_for(target, priority, RECEIVED, POLICY)) == "within"


# 2026-11-27 is a Friday.
LONDON = working_calendar()
FRIDAY = date(2026, 11, 27)
SATURDAY, SUNDAY, MONDAY = (FRIDAY + timedelta(days=n) for n in (1, 2, 3))


def test_the_calendar_fixture_is_right() -> None:
    assert [d.weekday() for d in (FRIDAY, SATURDAY, SUNDAY, MONDAY)] == [4, 5, 6, 0]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (FRIDAY, MONDAY, 1),
        (SATURDAY, MONDAY, 1),
        (SUNDAY, MONDAY, 1),
        (FRIDAY, SATURDAY, 0),
        (FRIDAY, SUNDAY, 0),
        (FRIDAY, FRIDAY, 0),
        (MONDAY, FRIDAY, 0),  # end before start
        (MONDAY, MONDAY + timedelta(days=1), 1),
        (MONDAY, MONDAY + timedelta(days=4), 4),  # Monday -> Friday
        (MONDAY, MONDAY + timedelta(days=7), 5),
        (MONDAY, MONDAY + timedelta(days=14), 10),  # two full weeks
        (SATURDAY, SATURDAY + timedelta(days=14), 10),
        (FRIDAY, FRIDAY + timedelta(days=14), 10),
        (FRIDAY, FRIDAY + timedelta(days=17), 11),  # two weeks and a weekend, then Monday
    ],
)
def test_working_days_between(start: date, end: date, expected: int) -> None:
    """Monday to Friday days after the start, up to and including the end."""
    assert working_days_between(start, end) == expected


def test_working_days_agree_with_counting_day_by_day() -> None:
    for start_offset in range(7):
        start = MONDAY + timedelta(days=start_offset)
        for length in range(40):
            end = start + timedelta(days=length)
            slow = sum(
                1 for n in range(1, length + 1) if LONDON.is_working_day(start + timedelta(days=n))
            )
            assert working_days_between(start, end) == slow, (start, end)


def test_bank_holidays_are_not_working_days() -> None:
    """CLINICAL.md, Waiting times: England and Wales bank holidays; Christmas 2026 falls on
    a Friday, Boxing Day's substitute is Monday 28 December."""
    assert working_days_between(date(2026, 12, 24), date(2026, 12, 29)) == 1


def test_the_inbox_breaches_an_urgent_referral_when_the_coordinator_does() -> None:
    """One triage clock (shared/triage.py): the inbox's state turns at the very moment the
    coordinator's triage-overdue alert falls due, not at midnight before it."""
    standard = standard_for("psychology", "urgent", RECEIVED, POLICY)
    received = datetime(2026, 11, 27, 16, 30, tzinfo=UTC)  # Friday
    due = triage_due(received, "urgent")
    assert due == datetime(2026, 12, 1, 16, 30, tzinfo=UTC)
    assert triage_state(received, due - timedelta(minutes=1), standard) == "at-risk"
    assert triage_state(received, due, standard) == "breached"


def test_an_urgent_referral_on_friday_breaches_on_tuesday_not_sunday() -> None:
    """2 working days (CLINICAL.md): a Friday referral is at risk on Monday, breached on
    Tuesday; the weekend does not count."""
    standard = standard_for("psychology", "urgent", RECEIVED, POLICY)
    received = datetime(2026, 11, 27, 16, 30, tzinfo=UTC)
    states = {
        offset: waiting_state(
            waiting_days(received, received + timedelta(days=offset), standard), standard
        )
        for offset in range(5)
    }
    assert states == {0: "within", 1: "within", 2: "within", 3: "at-risk", 4: "breached"}


def test_waiting_days_in_working_days_and_in_calendar_days() -> None:
    received = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # Friday
    until = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # Monday, earlier in the day
    working = standard_for("pain-mdt", "urgent", RECEIVED, POLICY)
    calendar = standard_for("pain-mdt", "routine", RECEIVED, POLICY)
    assert working.working_days and not calendar.working_days
    assert waiting_days(received, until, working) == 1
    assert waiting_days(received, until, calendar) == 3


def test_waiting_days_counts_dates_not_24_hour_periods() -> None:
    calendar = standard_for("psychology", "routine", RECEIVED, POLICY)
    received = datetime(2026, 11, 2, 23, 59, tzinfo=UTC)
    assert waiting_days(received, datetime(2026, 11, 3, 0, 1, tzinfo=UTC), calendar) == 1
    assert waiting_days(received, received + timedelta(hours=23), calendar) == 1
    assert waiting_days(received, received, calendar) == 0


def test_waiting_days_never_goes_negative() -> None:
    received = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    earlier = received - timedelta(days=3)
    for priority in ("routine", "urgent"):
        standard = standard_for("psychology", priority, RECEIVED, POLICY)
        assert waiting_days(received, earlier, standard) == 0


def test_thresholds_are_settings_psychology_alert() -> None:
    """CLINICAL.md: "Every threshold is a named setting with this default"."""
    policy = replace(POLICY, psychology_alert_weeks=4)
    standard = standard_for("psychology", "routine", RECEIVED, policy)
    assert standard.at_risk_after_days == 28
    assert waiting_state(27, standard) == "within"
    assert waiting_state(28, standard) == "at-risk"
    assert waiting_state(41, standard) == "at-risk"
    # The default would still call day 28 within.
    assert waiting_state(28, standard_for("psychology", "routine", RECEIVED, POLICY)) == "within"
    assert "4 weeks" in standard.name


def test_thresholds_are_settings_other_standards() -> None:
    policy = replace(
        POLICY,
        psychology_breach_weeks=16,
        consultant_alert_weeks=10,
        consultant_breach_weeks=20,
        urgent_triage_working_days=3,
    )
    psychology = standard_for("psychology", "routine", RECEIVED, policy)
    assert (psychology.at_risk_after_days, psychology.breach_after_days) == (42, 112)
    consultant = standard_for("ketamine-infusion", "routine", ACCEPTED, policy)
    assert (consultant.at_risk_after_days, consultant.breach_after_days) == (70, 140)
    urgent = standard_for("pain-mdt", "urgent", RECEIVED, policy)
    assert (urgent.at_risk_after_days, urgent.breach_after_days) == (2, 3)
    assert waiting_state(2, urgent) == "at-risk"
    assert waiting_state(3, urgent) == "breached"


def test_a_one_day_urgent_standard_has_no_negative_at_risk_day() -> None:
    standard = standard_for(
        "psychology", "urgent", RECEIVED, replace(POLICY, urgent_triage_working_days=1)
    )
    assert (standard.at_risk_after_days, standard.breach_after_days) == (0, 1)
    assert waiting_state(1, standard) == "breached"


def test_waiting_state_is_ordered_by_days() -> None:
    standard = WaitingStandard("test", 10, 20, False, "test")
    order = {"within": 0, "at-risk": 1, "breached": 2}
    states = [order[waiting_state(day, standard)] for day in range(30)]
    assert states == sorted(states)


def test_urgent_sorts_before_routine() -> None:
    """Issue 3, Inbox: "sorted by priority then waiting time"."""
    assert PRIORITY_RANK["urgent"] < PRIORITY_RANK["routine"]


# --- who may do what -----------------------------------------------------------------

ME, SOMEONE_ELSE = "user-1", "user-2"

# Issue 3, "Who may do what": referrers create and cancel their own referrals and see
# their status; psychologists see and triage psychology referrals only; infusion
# clinicians the ketamine-infusion ones; the MDT all; admins see statuses and waiting
# times but not free-text clinical notes.
# role, target, own?  ->  sees, triages, acts as referrer (cancel, answer, add a letter)
PERMISSIONS: list[tuple[str, str, bool, bool, bool, bool]] = [
    # role                 target               own    see    triage referrer
    ("referrer",           "psychology",        True,  True,  False, True),
    ("referrer",           "psychology",        False, False, False, False),
    ("referrer",           "ketamine-infusion", True,  True,  False, True),
    ("referrer",           "ketamine-infusion", False, False, False, False),
    ("referrer",           "pain-mdt",          True,  True,  False, True),
    ("referrer",           "pain-mdt",          False, False, False, False),
    ("psychologist",       "psychology",        True,  True,  True,  True),
    ("psychologist",       "psychology",        False, True,  True,  False),
    ("psychologist",       "ketamine-infusion", True,  True,  False, True),
    ("psychologist",       "ketamine-infusion", False, False, False, False),
    ("psychologist",       "pain-mdt",          True,  True,  False, True),
    ("psychologist",       "pain-mdt",          False, False, False, False),
    ("infusion-clinician", "psychology",        True,  True,  False, True),
    ("infusion-clinician", "psychology",        False, False, False, False),
    ("infusion-clinician", "ketamine-infusion", True,  True,  True,  True),
    ("infusion-clinician", "ketamine-infusion", False, True,  True,  False),
    ("infusion-clinician", "pain-mdt",          True,  True,  False, True),
    ("infusion-clinician", "pain-mdt",          False, False, False, False),
    ("mdt",                "psychology",        True,  True,  True,  True),
    ("mdt",                "psychology",        False, True,  True,  True),
    ("mdt",                "ketamine-infusion", True,  True,  True,  True),
    ("mdt",                "ketamine-infusion", False, True,  True,  True),
    ("mdt",                "pain-mdt",          True,  True,  True,  True),
    ("mdt",                "pain-mdt",          False, True,  True,  True),
    ("admin",              "psychology",        True,  True,  False, False),
    ("admin",              "psychology",        False, True,  False, False),
    ("admin",              "ketamine-infusion", True,  True,  False, False),
    ("admin",              "ketamine-infusion", False, True,  False, False),
    ("admin",              "pain-mdt",          True,  True,  False, False),
    ("admin",              "pain-mdt",          False, True,  False, False),
    # The service identity has no view of referrals through the API (it closes them from
    # events), and never acts as a referrer, even on a referral that somehow names it.
    ("service",            "psychology",        True,  True,  False, False),
    ("service",            "psychology",        False, False, False, False),
    ("service",            "ketamine-infusion", True,  True,  False, False),
    ("service",            "ketamine-infusion", False, False, False, False),
    ("service",            "pain-mdt",          True,  True,  False, False),
    ("service",            "pain-mdt",          False, False, False, False),
]  # fmt: skip


def test_the_permission_table_is_complete() -> None:
    keys = {(role, target, own) for role, target, own, *_ in PERMISSIONS}
    assert keys == {(r, t, o) for r in ROLES for t in TARGETS for o in (True, False)}
    assert len(PERMISSIONS) == len(keys)


@pytest.mark.parametrize(
    ("role", "target", "own", "sees", "triages", "referrer"),
    PERMISSIONS,
    ids=[f"{r}-{t}-{'own' if o else 'other'}" for r, t, o, *_ in PERMISSIONS],
)
def test_permissions_per_object(
    role: str, target: str, own: bool, sees: bool, triages: bool, referrer: bool
) -> None:
    """Issue 3: "Checked per object, not only per role"."""
    created_by = ME if own else SOMEONE_ELSE
    assert can_see_referral(role, ME, target, created_by) is sees
    assert can_triage(role, target) is triages
    assert can_act_as_referrer(role, ME, created_by) is referrer


@pytest.mark.parametrize(
    ("role", "clinical"),
    [
        ("referrer", True),
        ("psychologist", True),
        ("infusion-clinician", True),
        ("mdt", True),
        ("admin", False),
        ("service", False),
        ("nurse", False),  # a role nobody has decided about yet sees nothing clinical
    ],
)
def test_who_reads_free_text_scores_and_names(role: str, clinical: bool) -> None:
    """Issue 3: admins see statuses and waiting times but not free-text clinical notes."""
    assert sees_clinical_detail(role) is clinical


def test_an_unknown_role_never_acts_as_the_referrer() -> None:
    assert not can_act_as_referrer("nurse", ME, ME)


def test_a_clinician_cannot_triage_what_they_can_only_see_as_referrer() -> None:
    """A psychologist who referred someone to the infusion clinic sees that referral (as its
    referrer) but does not triage it."""
    for role, target, own, sees, triages, _ in PERMISSIONS:
        if triages:
            assert sees, (role, target, own)
    assert can_see_referral("psychologist", ME, "ketamine-infusion", ME)
    assert not can_triage("psychologist", "ketamine-infusion")


def test_only_the_mdt_triages_pain_mdt_referrals() -> None:
    assert [role for role in ROLES if can_triage(role, "pain-mdt")] == ["mdt"]


def test_unknown_roles_get_nothing_beyond_their_own() -> None:
    for target in TARGETS:
        assert not can_see_referral("nurse", ME, target, SOMEONE_ELSE)
        assert not can_triage("nurse", target)
    assert not sees_clinical_detail("nurse")


# --- natural duplicates (issue 16) ---------------------------------------------------------


@dataclass
class _Referral:
    patient_id: UUID
    target: str
    received_at: datetime
    status: str = "received"
    id: UUID = field(default_factory=uuid4)


def test_a_second_open_referral_to_the_same_team_within_the_window_repeats_the_first() -> None:
    window = timedelta(days=30)
    patient, t0 = uuid4(), datetime(2026, 1, 5, 9, tzinfo=UTC)
    first = _Referral(patient, "psychology", t0)
    second = _Referral(patient, "psychology", t0 + window)  # the window's last moment
    late = _Referral(patient, "psychology", t0 + window + timedelta(seconds=1), id=uuid4())
    other_team = _Referral(patient, "pain-mdt", t0 + timedelta(days=1))
    other_patient = _Referral(uuid4(), "psychology", t0 + timedelta(days=1))
    everyone = [first, second, other_team, other_patient]
    marked = possible_duplicates(everyone, everyone, window)
    assert marked == {second.id: first}
    # More than the window after the first, it repeats the second if that is open.
    assert possible_duplicates([late], [first, second, late], window) == {late.id: second}
    assert possible_duplicates([late], [first, late], window) == {}
    # A first referral closed (rejected, withdrawn, completed) marks nothing.
    first.status = "rejected"
    assert possible_duplicates([second], [first, second], window) == {}
    # A closed second referral is not marked either.
    first.status, second.status = "received", "cancelled"
    assert possible_duplicates([second], [first, second], window) == {}
