"""The therapy service's pure rules (services/therapy/domain.py): diaries and slots, the
appointment state machine, DNA counting, discharge and waiting times.

Rules from ../shared/CLINICAL.md: "Therapy (CBT / psychology)" lines 86-99, "Waiting
times" lines 101-105 and "Measures" lines 11-26; issue 5, "Must be shown by tests".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise, product

import pytest
from msgspec.structs import replace

from services.therapy.domain import (
    APPOINTMENT_STATUSES,
    APPOINTMENT_TRANSITIONS,
    DISCHARGE_REASONS,
    IllegalTransition,
    TherapyPolicy,
    TherapyRuleBroken,
    WorkingHours,
    check_bookable,
    check_working_hours,
    corrected_status,
    discharge_status,
    dna_count,
    dna_threshold_reached,
    next_appointment_status,
    slots,
    waiting,
)
from shared.measures import GAD7, PHQ9, InvalidItems, phq9_item9, score
from shared.policy import default_policy

MONDAY = date(2025, 3, 3)
TUESDAY, WEDNESDAY, SATURDAY, SUNDAY = (MONDAY + timedelta(days=n) for n in (1, 2, 5, 6))
BEFORE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)  # the Saturday before: every slot is future


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def block(weekday: int, start: str, end: str) -> WorkingHours:
    return WorkingHours(weekday, time.fromisoformat(start), time.fromisoformat(end))


WEEKDAYS_9_TO_5 = [block(day, "09:00", "17:00") for day in range(5)]


# --- slots from working hours and leave ---------------------------------------------------


def test_a_working_day_gives_hourly_slots_from_each_block() -> None:
    """Issue 5, "Clinicians and diaries": slots are derived from the working hours, one
    60-minute CBT session per slot (TherapyPolicy.slot_minutes); a lunch break gives none."""
    hours = [block(0, "13:00", "17:00"), block(0, "09:00", "12:00")]  # given out of order
    free = slots(hours, [], [], MONDAY, MONDAY)
    assert free == [at(MONDAY, h) for h in (9, 10, 11, 13, 14, 15, 16)]
    assert all(s.tzinfo is UTC for s in free)


def test_a_slot_must_fit_whole_inside_its_block() -> None:
    """A 90-minute block holds one 60-minute slot; a 59-minute block holds none."""
    assert slots([block(0, "09:00", "10:30")], [], [], MONDAY, MONDAY) == [at(MONDAY, 9)]
    assert slots([block(0, "09:00", "09:59")], [], [], MONDAY, MONDAY) == []
    assert slots([block(0, "09:00", "10:00")], [], [], MONDAY, MONDAY) == [at(MONDAY, 9)]


def test_the_slot_length_is_a_setting() -> None:
    policy = replace(default_policy().therapy, slot_minutes=30)
    free = slots([block(0, "09:00", "10:30")], [], [], MONDAY, MONDAY, policy)
    assert free == [at(MONDAY, 9), at(MONDAY, 9, 30), at(MONDAY, 10)]


def test_slots_span_the_days_asked_for_and_only_days_with_hours() -> None:
    """Monday to Sunday with hours Monday to Friday: nothing on the weekend."""
    free = slots(WEEKDAYS_9_TO_5, [], [], MONDAY, SUNDAY)
    assert len(free) == 5 * 8
    assert {s.date() for s in free} == {MONDAY + timedelta(days=n) for n in range(5)}
    assert slots(WEEKDAYS_9_TO_5, [], [], SATURDAY, SUNDAY) == []
    assert slots(WEEKDAYS_9_TO_5, [], [], TUESDAY, MONDAY) == []  # an empty range


def test_leave_days_give_no_slots_inclusive_of_both_ends() -> None:
    leave = [(TUESDAY, WEDNESDAY)]
    free = slots(WEEKDAYS_9_TO_5, leave, [], MONDAY, SUNDAY)
    days = sorted({s.date() for s in free})
    assert days == [MONDAY, MONDAY + timedelta(days=3), MONDAY + timedelta(days=4)]
    one_day = [(MONDAY, MONDAY)]
    assert slots(WEEKDAYS_9_TO_5, one_day, [], MONDAY, MONDAY) == []


def test_booked_starts_are_not_free() -> None:
    booked = [at(MONDAY, 9), at(MONDAY, 14), at(TUESDAY, 9)]
    free = slots(WEEKDAYS_9_TO_5, [], booked, MONDAY, MONDAY)
    assert at(MONDAY, 9) not in free and at(MONDAY, 14) not in free
    assert len(free) == 6


# --- working hours that make sense --------------------------------------------------------


def test_sensible_working_hours_pass() -> None:
    # Back-to-back blocks touch but do not overlap; the same hours on different days.
    check_working_hours([block(0, "09:00", "12:00"), block(0, "12:00", "17:00")])
    check_working_hours([*WEEKDAYS_9_TO_5, block(6, "00:00", "23:59")])
    check_working_hours([])


@pytest.mark.parametrize(("start", "end"), [("09:00", "09:00"), ("17:00", "09:00")])
def test_a_block_that_ends_at_or_before_its_start_names_its_end(start: str, end: str) -> None:
    with pytest.raises(TherapyRuleBroken) as caught:
        check_working_hours([block(0, "09:00", "10:00"), block(1, start, end)])
    assert caught.value.field == "hours[1].end"


@pytest.mark.parametrize("weekday", [-1, 7])
def test_a_weekday_outside_monday_to_sunday_names_the_weekday(weekday: int) -> None:
    with pytest.raises(TherapyRuleBroken) as caught:
        check_working_hours([block(weekday, "09:00", "10:00")])
    assert caught.value.field == "hours[0].weekday"


def test_overlapping_blocks_on_one_day_name_the_later_block() -> None:
    hours = [block(0, "09:00", "12:00"), block(1, "11:00", "13:00"), block(0, "11:30", "14:00")]
    with pytest.raises(TherapyRuleBroken) as caught:
        check_working_hours(hours)
    assert caught.value.field == "hours[2]"
    assert "overlaps" in caught.value.message
    assert str(caught.value).startswith("hours[2]: ")


def test_a_block_inside_another_overlaps() -> None:
    with pytest.raises(TherapyRuleBroken) as caught:
        check_working_hours([block(3, "09:00", "17:00"), block(3, "10:00", "11:00")])
    assert caught.value.field == "hours[1]"


# --- a booking starts on a free slot in the future ----------------------------------------


def test_a_future_slot_in_working_hours_is_bookable() -> None:
    check_bookable(at(MONDAY, 9), BEFORE, WEEKDAYS_9_TO_5, [])
    check_bookable(at(MONDAY, 16), BEFORE, WEEKDAYS_9_TO_5, [])


@pytest.mark.parametrize(
    ("start", "now", "leave", "says"),
    [
        (at(MONDAY, 9), at(MONDAY, 9), [], "past"),  # now is not the future
        (at(MONDAY, 9), at(MONDAY, 10), [], "past"),
        (at(MONDAY, 9), BEFORE, [(MONDAY, TUESDAY)], "leave"),
        (at(MONDAY, 9, 30), BEFORE, [], "slots"),  # off the hourly grid
        (at(MONDAY, 7), BEFORE, [], "slots"),  # before the day starts
        (at(MONDAY, 17), BEFORE, [], "slots"),  # the last slot starts at 16:00
        (at(SATURDAY, 10), BEFORE, [], "slots"),  # no hours that day
    ],
    ids=["now", "past", "on-leave", "off-grid", "too-early", "at-close", "saturday"],
)
def test_an_unbookable_start_names_the_start(
    start: datetime, now: datetime, leave: list[tuple[date, date]], says: str
) -> None:
    """Issue 5, "Bad input": booking outside working hours or in the past is a problem
    naming the field."""
    with pytest.raises(TherapyRuleBroken) as caught:
        check_bookable(start, now, WEEKDAYS_9_TO_5, leave)
    assert caught.value.field == "start"
    assert says in caught.value.message


def test_the_past_is_checked_before_leave() -> None:
    with pytest.raises(TherapyRuleBroken, match="past"):
        check_bookable(at(MONDAY, 9), at(TUESDAY, 9), WEEKDAYS_9_TO_5, [(MONDAY, MONDAY)])


# --- the appointment state machine (FHIR Appointment statuses) ---------------------------

# Written out here, not read from the module, so a change to the table fails a test.
LEGAL_ACTIONS = {
    ("booked", "check-in"): "arrived",
    ("booked", "attend"): "fulfilled",
    ("arrived", "attend"): "fulfilled",
    ("booked", "miss"): "noshow",
    ("arrived", "miss"): "noshow",
    ("booked", "cancel"): "cancelled",
    ("arrived", "cancel"): "cancelled",
    ("booked", "reschedule"): "booked",
}
ACTIONS = ("check-in", "attend", "miss", "cancel", "reschedule")
ALL_PAIRS = list(product(APPOINTMENT_STATUSES, ACTIONS))


def test_the_statuses_and_actions_are_the_ones_tested() -> None:
    assert set(APPOINTMENT_STATUSES) == {
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
    }
    assert set(APPOINTMENT_TRANSITIONS) == set(ACTIONS)


@pytest.mark.parametrize(("current", "action"), list(LEGAL_ACTIONS))
def test_every_legal_action(current: str, action: str) -> None:
    """CLINICAL.md line 92: statuses follow FHIR Appointment."""
    assert next_appointment_status(current, action) == LEGAL_ACTIONS[(current, action)]


@pytest.mark.parametrize(
    ("current", "action"), [pair for pair in ALL_PAIRS if pair not in LEGAL_ACTIONS]
)
def test_every_illegal_action(current: str, action: str) -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_appointment_status(current, action)
    assert (caught.value.current, caught.value.action) == (current, action)
    assert str(caught.value) == f"an appointment that is {current} cannot be {action}"


def test_an_unknown_action_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="unknown action 'no-show'") as caught:
        next_appointment_status("booked", "no-show")
    assert not isinstance(caught.value, IllegalTransition)


LEGAL_CORRECTIONS = {
    # CLINICAL.md lines 93-94: a noshow is not a dead end.
    ("noshow", "fulfilled"),  # they did come, late
    ("noshow", "booked"),  # rebooked
    ("noshow", "entered-in-error"),
    ("fulfilled", "noshow"),
    ("fulfilled", "entered-in-error"),
    ("cancelled", "booked"),
    ("cancelled", "entered-in-error"),
    ("arrived", "booked"),
    ("arrived", "entered-in-error"),
    ("booked", "entered-in-error"),
}


@pytest.mark.parametrize(("current", "wanted"), sorted(LEGAL_CORRECTIONS))
def test_every_legal_correction(current: str, wanted: str) -> None:
    assert corrected_status(current, wanted) == wanted


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        pair
        for pair in product(APPOINTMENT_STATUSES, APPOINTMENT_STATUSES)
        if pair not in LEGAL_CORRECTIONS
    ],
)
def test_every_illegal_correction(current: str, wanted: str) -> None:
    """Includes correcting to the same status and anything from entered-in-error, which
    is final."""
    with pytest.raises(IllegalTransition) as caught:
        corrected_status(current, wanted)
    assert caught.value.action == f"corrected to {wanted}"


def test_a_noshow_corrected_to_booked_can_then_be_attended() -> None:
    status = next_appointment_status("booked", "miss")
    status = corrected_status(status, "booked")
    assert next_appointment_status(status, "attend") == "fulfilled"


# --- PHQ-9 and GAD-7 as the therapy service uses them -------------------------------------
# The band edges are tested exhaustively in tests/unit/test_measures.py; here only what
# the therapy API relies on: the field names in a 422 and the item 9 flag.


@pytest.mark.parametrize(
    ("instrument", "total", "band"),
    [
        (PHQ9, 4, "minimal"),
        (PHQ9, 5, "mild"),
        (PHQ9, 9, "mild"),
        (PHQ9, 10, "moderate"),
        (PHQ9, 14, "moderate"),
        (PHQ9, 15, "moderately severe"),
        (PHQ9, 19, "moderately severe"),
        (PHQ9, 20, "severe"),
        (GAD7, 4, "minimal"),
        (GAD7, 5, "mild"),
        (GAD7, 9, "mild"),
        (GAD7, 10, "moderate"),
        (GAD7, 14, "moderate"),
        (GAD7, 15, "severe"),
    ],
)
def test_bands_at_each_edge_with_items_filled_from_the_back(
    instrument: object, total: int, band: str
) -> None:
    """CLINICAL.md lines 15 and 17 (Kroenke 2001; Spitzer 2006)."""
    count = 9 if instrument is PHQ9 else 7
    items = [0] * count
    left = total
    for index in reversed(range(count)):
        items[index] = min(3, left)
        left -= items[index]
    result = score(instrument, items)  # type: ignore[arg-type]
    assert (result.total, result.band) == (total, band)


@pytest.mark.parametrize(("instrument", "count"), [(PHQ9, 8), (PHQ9, 7), (GAD7, 9), (GAD7, 6)])
def test_the_wrong_number_of_items_names_items(instrument: object, count: int) -> None:
    """CLINICAL.md line 25: an item count that does not fit is a 422 naming the item."""
    with pytest.raises(InvalidItems) as caught:
        score(instrument, [0] * count, "items")  # type: ignore[arg-type]
    assert caught.value.field == "items"


@pytest.mark.parametrize(("index", "value"), [(0, 4), (8, 4), (4, -1)])
def test_an_item_out_of_range_names_items_index(index: int, value: int) -> None:
    items = [0] * 9
    items[index] = value
    with pytest.raises(InvalidItems) as caught:
        score(PHQ9, items, "items")
    assert caught.value.field == f"items[{index}]"


@pytest.mark.parametrize("item9", [0, 1, 2, 3])
def test_item9_flags_any_answer_above_zero_whatever_the_total(item9: int) -> None:
    """CLINICAL.md line 16: any answer above 0 on item 9 → urgent safety alert. The API
    publishes measure.risk_flagged when phq9 item 9 is truthy; the total does not matter."""
    low = score(PHQ9, [0] * 8 + [item9])
    high = score(PHQ9, [3] * 8 + [item9])
    for result in (low, high):
        assert phq9_item9(result) == item9
        assert (phq9_item9(result) > 0) is (item9 > 0)
    assert low.band == "minimal" and high.band == "severe"


# --- did not attend -----------------------------------------------------------------------


def test_dna_count_counts_only_noshows() -> None:
    assert dna_count([]) == 0
    assert dna_count(["booked", "noshow", "fulfilled", "cancelled", "noshow"]) == 2
    assert dna_count(["entered-in-error", "arrived", "cancelled"]) == 0


def fired_along(statuses: list[list[str]], policy: TherapyPolicy | None = None) -> list[bool]:
    """Whether the threshold fires at each change from one list of statuses to the next."""
    counts = [dna_count(s) for s in statuses]
    return [dna_threshold_reached(a, b, policy) for a, b in pairwise(counts)]


def test_the_threshold_fires_once_as_the_second_dna_is_recorded() -> None:
    """CLINICAL.md lines 95-96: after 2 missed appointments → discharge review alert."""
    history = [
        ["booked", "booked", "booked"],
        ["noshow", "booked", "booked"],  # 1
        ["noshow", "noshow", "booked"],  # 2: fires
        ["noshow", "noshow", "noshow"],  # 3: does not fire again
    ]
    assert fired_along(history) == [False, True, False]


def test_a_correction_below_the_threshold_rearms_it() -> None:
    """What the code does: the check compares the count before and after one change, so a
    noshow corrected to fulfilled (2 → 1) and another noshow (1 → 2) fires again."""
    history = [
        ["noshow", "booked", "booked"],
        ["noshow", "noshow", "booked"],  # 2: fires
        ["noshow", "fulfilled", "booked"],  # corrected: 1
        ["noshow", "fulfilled", "noshow"],  # 2 again: fires again
    ]
    assert fired_along(history) == [True, False, True]


def test_a_correction_that_stays_at_or_above_the_threshold_does_not_fire() -> None:
    assert not dna_threshold_reached(3, 2)
    assert not dna_threshold_reached(2, 2)
    assert not dna_threshold_reached(0, 1)


@pytest.mark.parametrize(
    ("threshold", "fires_at"),
    [(1, 1), (2, 2), (3, 3)],
)
def test_the_threshold_is_a_setting(threshold: int, fires_at: int) -> None:
    """CLINICAL.md line 96: services differ, so it is a setting."""
    policy = replace(default_policy().therapy, dna_threshold=threshold)
    fired = [n for n in range(1, 5) if dna_threshold_reached(n - 1, n, policy)]
    assert fired == [fires_at]


# --- discharge ----------------------------------------------------------------------------


def test_the_discharge_reasons_are_the_clinical_list() -> None:
    """CLINICAL.md lines 88-89: completed, declined, did not attend, moved away, other."""
    assert DISCHARGE_REASONS == ("completed", "declined", "did-not-attend", "moved-away", "other")


@pytest.mark.parametrize(
    ("reason", "note", "attended", "status"),
    [
        ("completed", None, 2, "finished"),
        ("completed", None, 5, "finished"),
        ("declined", None, 0, "cancelled"),
        ("moved-away", None, 0, "finished"),
        ("did-not-attend", "two DNAs, letter sent, no reply", 0, "finished"),
        ("other", "moved to a specialist service", 1, "finished"),
    ],
)
def test_a_discharge_that_meets_the_rules(
    reason: str, note: str | None, attended: int, status: str
) -> None:
    assert discharge_status(reason, note, attended) == status


@pytest.mark.parametrize("reason", ["did-not-attend", "other"])
@pytest.mark.parametrize("note", [None, "", "   "])
def test_did_not_attend_and_other_need_a_note(reason: str, note: str | None) -> None:
    """CLINICAL.md lines 96-98: discharge after a DNA only with a reason, never automatic."""
    with pytest.raises(TherapyRuleBroken) as caught:
        discharge_status(reason, note, 3)
    assert caught.value.field == "note"


@pytest.mark.parametrize("attended", [0, 1])
def test_completed_needs_two_attended_treatment_appointments(attended: int) -> None:
    """CLINICAL.md lines 90-91: a finished course needs at least 2 attended treatment
    appointments (NHS Talking Therapies)."""
    with pytest.raises(TherapyRuleBroken) as caught:
        discharge_status("completed", "finished early", attended)
    assert caught.value.field == "reason"


@pytest.mark.parametrize("reason", ["", "discharged", "dna", "Completed"])
def test_an_unknown_reason_names_reason(reason: str) -> None:
    with pytest.raises(TherapyRuleBroken) as caught:
        discharge_status(reason, "a note", 5)
    assert caught.value.field == "reason"


# --- waiting times ------------------------------------------------------------------------

NOW = datetime(2025, 9, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("days", "state"),
    [
        (0, "within"),
        (41, "within"),
        (42, "at-risk"),  # 6 weeks: alert
        (125, "at-risk"),
        (126, "breached"),  # 18 weeks: breach
        (400, "breached"),
    ],
)
def test_waiting_against_the_6_and_18_week_standards(days: int, state: str) -> None:
    """CLINICAL.md lines 103-105: alert at 6 weeks, breach at 18."""
    assert waiting(NOW - timedelta(days=days), NOW) == (days, state)


def test_waiting_counts_calendar_days() -> None:
    late = datetime(2025, 8, 31, 23, 59, tzinfo=UTC)
    assert waiting(late, datetime(2025, 9, 1, 0, 1, tzinfo=UTC)) == (1, "within")


def test_a_referral_dated_in_the_future_waits_zero_days() -> None:
    assert waiting(NOW + timedelta(days=3), NOW) == (0, "within")


def test_the_waiting_standards_are_settings() -> None:
    policy = replace(default_policy().waits, psychology_alert_weeks=2, psychology_breach_weeks=4)
    assert waiting(NOW - timedelta(days=13), NOW, policy)[1] == "within"
    assert waiting(NOW - timedelta(days=14), NOW, policy)[1] == "at-risk"
    assert waiting(NOW - timedelta(days=28), NOW, policy)[1] == "breached"


def test_the_finished_course_minimum_is_a_setting() -> None:
    policy = replace(default_policy().therapy, min_treatment_appointments=3)
    with pytest.raises(TherapyRuleBroken):
        discharge_status("completed", None, 2, policy)  # type: ignore[call-arg]
