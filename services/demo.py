"""`carepath up --demo`: a synthetic clinic six months in, made through the services' APIs.

About fifty patients at different points of the pathway, so a newcomer opens a clinic
that has been running for months: referrals waiting for triage (some past their due
time), questions asked, infusion courses at every step, psychology episodes on the
waiting list (some past the 6-week wait) and in treatment, and the alerts those raise.
Everything goes through the HTTP APIs as a named (development) clinician, so every event
is a real one and every rule is applied; nothing is written to a database.

Nothing can be back-dated, so the demo lives the months instead: the clinic clock is set
to the day the clinic opened, and every patient's steps run in time order, the clock
moved forward to each (`Timeline`), with the coordinator's time rules run at every move.
An appointment or infusion is booked ahead and carried out on its day, as issue 12 asks.
At the end the clock is put back to the system's time.

The names are invented and the NHS numbers come from the 999 range NHS England keeps
for test patients. Logs carry counts and scenario names only, never a patient's details.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from shared.auth import Role, issue_token
from shared.observability import get_logger
from shared.settings import PlatformSettings
from shared.tables import utcnow

log = get_logger(__name__)

# The development identities the cohort is made by; `carepath token --role R --user U`
# gives a newcomer the same view.
REFERRER = ("dr-gp-ahmed", Role.referrer)
PAIN_REFERRER = ("dr-pain-osei", Role.referrer)
PSYCHOLOGISTS = (("psy-jones", Role.psychologist), ("psy-khan", Role.psychologist))
INFUSION_CLINICIAN = ("nurse-okafor", Role.infusion_clinician)
MDT = ("dr-mdt-lead", Role.mdt)
ADMIN = ("admin-demo", Role.admin)
DEV_IDENTITIES: tuple[tuple[str, Role], ...] = (
    REFERRER,
    PAIN_REFERRER,
    *PSYCHOLOGISTS,
    INFUSION_CLINICIAN,
    MDT,
    ADMIN,
)
PSYCHOLOGIST_NAMES = {"psy-jones": "Dr R. Jones", "psy-khan": "Dr S. Khan"}
WEEKDAYS_9_TO_5 = [{"weekday": day, "start": "09:00:00", "end": "17:00:00"} for day in range(5)]

MONTHS_AGO_DAYS = 183  # the clinic opened this long before today
SPACING_DAYS = 3  # between induction infusions
MAINTENANCE_DAYS = 28  # from the last induction infusion to the first maintenance one
OPEN_TIMEOUT_S = 30.0  # an accepted referral's course or episode is opened by a worker
POLL_S = 0.05

# --- invented people ----------------------------------------------------------------------

FEMALE_NAMES = (
    "Abigail", "Bethany", "Carys", "Deborah", "Eleanor", "Fatima", "Gemma", "Harriet",
    "Imogen", "Joanna", "Katarzyna", "Leonie", "Margaret", "Niamh", "Olivia", "Priya",
    "Rosalind", "Siobhan", "Theresa", "Yasmin", "Zofia", "Amara", "Bridget", "Philippa",
)  # fmt: skip
MALE_NAMES = (
    "Alasdair", "Bartholomew", "Callum", "Declan", "Emeka", "Finlay", "Gareth", "Hamish",
    "Ibrahim", "Jasper", "Kieran", "Lachlan", "Marcus", "Nathaniel", "Oluwaseun", "Rhodri",
    "Sebastian", "Tobias", "Wojciech", "Desmond", "Ambrose", "Cormac", "Leopold", "Torquil",
)  # fmt: skip
FAMILY_NAMES = (
    "Ashworth", "Bellamy", "Brennan", "Castellano", "Dempsey", "Ellwood", "Fairbairn",
    "Gallagher", "Hargreaves", "Iqbal", "Jenkinson", "Kowalski", "Lindqvist", "MacAllister",
    "Nakamura", "O'Donnell", "Pemberton", "Quigley", "Rasmussen", "Sandhu", "Thornbury",
    "Underhill", "Varga", "Whitfield", "Yardley", "Zielinski", "Abernethy", "Blackwood",
    "Chaudhry", "Delacroix", "Eastwood", "Fitzgerald", "Greenhalgh", "Haworth", "Ibekwe",
    "Jablonski", "Kavanagh", "Llewellyn", "Mensah", "Nowak", "Oyelaran", "Penhaligon",
    "Radcliffe", "Szabo", "Tennant", "Vasquez", "Wainwright", "Adeyemi", "Bhattacharya",
    "Cartwright", "Dunmore", "Ferreira", "Goldsworthy", "Holloway", "Ingleby", "Kershaw",
)  # fmt: skip


def nhs_number(rng: random.Random) -> str:
    """A number in the 999 range kept for test patients, with its modulus-11 check digit."""
    while True:
        digits = [9, 9, 9, *(rng.randrange(10) for _ in range(6))]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:  # 10: no valid number has these nine digits
            return "".join(map(str, digits)) + str(check)


@dataclass(frozen=True)
class Person:
    given_name: str
    family_name: str
    birth_date: date
    sex: str
    nhs_number: str | None


def invent_people(count: int, seed: int) -> list[Person]:
    rng = random.Random(seed)  # noqa: S311 - invented demo people, not secrets
    families = list(FAMILY_NAMES)
    rng.shuffle(families)
    numbers: set[str] = set()
    people: list[Person] = []
    today = utcnow().date()
    for index in range(count):
        sex = rng.choice(("female", "male"))
        given = rng.choice(FEMALE_NAMES if sex == "female" else MALE_NAMES)
        family = families[index % len(families)]
        number: str | None = None
        if rng.random() < 0.9:  # some arrive without their NHS number
            number = nhs_number(rng)
            while number in numbers:
                number = nhs_number(rng)
            numbers.add(number)
        age_days = rng.randrange(24 * 365, 78 * 365)
        people.append(Person(given, family, today - timedelta(days=age_days), sex, number))
    return people


# --- the HTTP side ------------------------------------------------------------------------


class DemoStepRefused(RuntimeError):
    """An API refused a step. Carries the call and the problem's title, never its body."""

    def __init__(self, method: str, path: str, status: int, title: str) -> None:
        super().__init__(f"{method} {path}: {status} {title}")
        self.status = status


class _Api:
    """Plain httpx against the running server, each call as one of the dev identities."""

    def __init__(self, base_url: str, platform: PlatformSettings) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=30.0)
        self._auth = {
            user: {"Authorization": f"Bearer {issue_token(platform, user, role)}"}
            for user, role in DEV_IDENTITIES
        }

    def close(self) -> None:
        self._http.close()

    def call(
        self, method: str, as_user: str, path: str, body: Any = None, **params: Any
    ) -> dict[str, Any]:
        response = self._http.request(
            method, path, json=body, params=params or None, headers=self._auth[as_user]
        )
        if response.status_code >= 400:
            try:
                title = str(response.json().get("title", ""))
            except ValueError:
                title = ""
            raise DemoStepRefused(method, path, response.status_code, title)
        result: dict[str, Any] = response.json()
        return result

    def post(self, as_user: str, path: str, body: Any = None) -> dict[str, Any]:
        return self.call("POST", as_user, path, body)

    def get(self, as_user: str, path: str, **params: Any) -> dict[str, Any]:
        return self.call("GET", as_user, path, **params)

    def wait_for_one(self, as_user: str, path: str, **params: Any) -> dict[str, Any]:
        """The first item of a list that a worker fills in after an event."""
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            items = self.get(as_user, path, **params)["items"]
            if items:
                first: dict[str, Any] = items[0]
                return first
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing at {path} after {OPEN_TIMEOUT_S:.0f}s")
            time.sleep(POLL_S)

    def set_clock(self, moment: datetime) -> None:
        # Through the clock API, not the clock itself: the coordinator runs its time rules
        # on every move, so a wait breached in March raises its alert in March.
        self.post(ADMIN[0], "/api/clock/set", {"at": moment.isoformat()})

    def reset_clock(self) -> None:
        self.post(ADMIN[0], "/api/clock/reset")


class Timeline:
    """The cohort's months, lived once in time order on the one clinic clock.

    Every patient's journey runs in a thread of its own and asks, before each step, for
    the moment it happens (`at`). One journey runs at a time: once every journey still
    going is waiting, the one with the earliest moment goes on, with the clinic clock
    moved forward to that moment. The clock never goes back, so every rule sees the
    order a clinic would and nothing needs back-dating.
    """

    def __init__(
        self, move_clock: Callable[[datetime], None], journeys: int, now: datetime
    ) -> None:
        self._move_clock = move_clock
        self._going = journeys  # journeys not yet finished
        self._waiting: list[tuple[datetime, int, int]] = []  # (moment, arrival, thread)
        self._arrivals = itertools.count()
        self._turn: int | None = None  # the thread whose step runs now
        self._now = now
        self._changed = threading.Condition()

    def at(self, moment: datetime) -> None:
        """Wait until it is this journey's turn, at ``moment`` (or now, if that has passed)."""
        me = threading.get_ident()
        with self._changed:
            heapq.heappush(self._waiting, (moment, next(self._arrivals), me))
            if self._turn == me:
                self._turn = None
            self._hand_on()
            self._changed.wait_for(lambda: self._turn == me)
            if moment > self._now:
                self._move_clock(moment)
                self._now = moment

    def finish(self) -> None:
        with self._changed:
            self._going -= 1
            if self._turn == threading.get_ident():
                self._turn = None
            self._hand_on()

    def _hand_on(self) -> None:
        if self._turn is None and self._waiting and len(self._waiting) == self._going:
            _moment, _arrival, thread = heapq.heappop(self._waiting)
            self._turn = thread
            self._changed.notify_all()


# --- scores -------------------------------------------------------------------------------


def _items(rng: random.Random, count: int, total: int) -> list[int]:
    """``count`` answers of 0 to 3 adding up to ``total`` (capped at the maximum)."""
    items = [0] * count
    left = max(0, min(total, 3 * count))
    while left:
        index = rng.randrange(count)
        if items[index] < 3:
            items[index] += 1
            left -= 1
    return items


def phq9(rng: random.Random, total: int, item9: int = 0) -> list[int]:
    """PHQ-9 items adding up to ``total``, item 9 as given (above 0 raises the alert)."""
    return [*_items(rng, 8, total - item9), item9]


def gad7(rng: random.Random, total: int) -> list[int]:
    return _items(rng, 7, total)


CHECKLIST = (
    "uncontrolled-cardiovascular-disease",
    "psychosis",
    "severe-hepatic-impairment",
    "raised-intracranial-or-intraocular-pressure",
    "pregnancy",
    "active-substance-misuse",
    "moderate-hepatic-impairment",
    "controlled-hypertension",
    "history-of-substance-misuse",
)

# What a referrer writes, with the conditions that go with it.
REFERRAL_TEXT: dict[str, tuple[tuple[str, list[str]], ...]] = {
    "psychology": (
        (
            "Low mood and poor sleep alongside widespread pain; would like help coping",
            ["depression", "fibromyalgia"],
        ),
        ("Depression with catastrophising about back pain; keen to try CBT", ["depression"]),
        (
            "Anxiety and low mood since the pain began; withdrawn from work and friends",
            ["depression", "spinal-pain"],
        ),
        (
            "Persistent low mood, fatigue and pain-related avoidance; counselling helped before",
            ["depression", "neuropathic-pain"],
        ),
    ),
    "ketamine-infusion": (
        (
            "Refractory neuropathic pain with low mood despite adequate trials of first-line drugs",
            ["neuropathic-pain", "depression"],
        ),
        (
            "CRPS of the right hand, pain 8/10, sleep badly affected; standard treatments tried",
            ["crps", "depression"],
        ),
        (
            "Fibromyalgia with treatment-resistant depression; asks about ketamine infusions",
            ["fibromyalgia", "depression"],
        ),
        (
            "Chronic spinal pain with depression, opioid dose creeping up; seeking alternatives",
            ["spinal-pain", "depression"],
        ),
    ),
    "pain-mdt": (
        ("Complex widespread pain with rising opioid use; please advise on a plan", ["other"]),
        ("Post-surgical spinal pain, not coping at work; MDT opinion requested", ["spinal-pain"]),
    ),
}
PRIOR_TREATMENTS = (
    {"name": "amitriptyline", "kind": "medicine", "outcome": "drowsy, little relief"},
    {"name": "pregabalin", "kind": "medicine", "outcome": "stopped: dizziness"},
    {"name": "duloxetine", "kind": "medicine", "outcome": "partial relief of mood only"},
    {"name": "pain management programme", "kind": "therapy", "outcome": "completed"},
)


# --- one patient's journey ------------------------------------------------------------------


@dataclass
class _Visit:
    """One patient moved through the clinic, step by step, as the staff would, each step at
    its moment on the timeline (`at`), counted back from the demo's today."""

    api: _Api
    timeline: Timeline
    today: datetime  # when the seeding began: the months end here
    person: Person
    rng: random.Random
    psychologist: str
    patient_id: str = ""
    pain: int = 8
    mood: int = 16  # the latest PHQ-9 total before treatment (the course baseline)
    weight: float = 70.0
    indication: str = "pain"
    session_hours: float = 4.0
    targets: dict[str, str] = field(default_factory=dict)  # referral id → its team

    # time

    def at(self, moment: datetime) -> None:
        """The next step happens at ``moment``; the patient is registered at their first."""
        self.timeline.at(moment)
        if not self.patient_id:
            self.register()

    def days_ago(self, days: int, hour: float = 10.0) -> datetime:
        """Office hours ``days`` before today (a weekend's step moves to the Friday before),
        never later than today's real time."""
        day = self.today.date() - timedelta(days=days)
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour)
        return min(moment, self.today - timedelta(minutes=5))

    def has_come(self, moment: datetime) -> bool:
        """Whether a booked moment is before today's real time (the months end there)."""
        return moment < self.today - timedelta(minutes=5)

    def clinic_day(self, days_ago: int) -> datetime:
        """09:00 on a day counted back from today (forward when negative)."""
        day = self.today.date() - timedelta(days=days_ago)
        return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=9)

    # referrals

    def register(self) -> None:
        body: dict[str, Any] = {
            "given_name": self.person.given_name,
            "family_name": self.person.family_name,
            "birth_date": self.person.birth_date.isoformat(),
            "sex": self.person.sex,
            "contact_preference": self.rng.choice(("phone", "email", "letter", "sms")),
        }
        if self.person.nhs_number:
            body["nhs_number"] = self.person.nhs_number
        self.patient_id = self.api.post(REFERRER[0], "/api/patients", body)["id"]

    def refer(
        self,
        target: str,
        *,
        priority: str = "routine",
        item9: int = 0,
        phq9_total: int | None = None,
        by: str = REFERRER[0],
    ) -> str:
        self.pain = self.rng.randint(6, 9)
        self.mood = phq9_total if phq9_total is not None else self.rng.randint(12, 21)
        baseline: dict[str, Any] = {"phq9_items": phq9(self.rng, self.mood, item9)}
        if target != "psychology":
            baseline["pain_nrs"] = self.pain
        referrer = (
            {"name": "Dr Y. Ahmed", "role": "GP", "organisation": "Riverside Medical Practice"}
            if by == REFERRER[0]
            else {
                "name": "Dr K. Osei",
                "role": "pain consultant",
                "organisation": "City Hospital Pain Service",
            }
        )
        reason, conditions = self.rng.choice(REFERRAL_TEXT[target])
        body = {
            "patient_id": self.patient_id,
            "target": target,
            "priority": priority,
            "reason": reason,
            "conditions": conditions,
            "referrer": referrer,
            "prior_treatments": self.rng.sample(PRIOR_TREATMENTS, 2)
            if target == "ketamine-infusion"
            else [],
            "baseline": baseline,
        }
        referral_id = str(self.api.post(by, "/api/referrals", body)["id"])
        self.targets[referral_id] = target
        return referral_id

    def triage(self, referral_id: str, decision: str, **why: str) -> None:
        """As the receiving team: the psychologist, the infusion clinic or the MDT."""
        triager = {
            "psychology": self.psychologist,
            "ketamine-infusion": INFUSION_CLINICIAN[0],
        }.get(self.targets[referral_id], MDT[0])
        self.api.post(
            triager, f"/api/referrals/{referral_id}/triage", {"decision": decision, **why}
        )

    # infusions

    def course(self) -> str:
        course = self.api.wait_for_one(
            INFUSION_CLINICIAN[0], "/api/infusion-courses", patient_id=self.patient_id
        )
        return str(course["id"])

    def assess(self, course_id: str, *, blocked_by: str | None = None) -> None:
        self.weight = float(self.rng.randint(55, 105))
        self.mood = max(10, min(22, self.mood + self.rng.randint(-1, 2)))
        hypertension = blocked_by is None and self.rng.random() < 0.25
        checklist: dict[str, dict[str, Any]] = {
            item: {"present": item == blocked_by or (hypertension and item == CHECKLIST[7])}
            for item in CHECKLIST
        }
        if blocked_by:
            checklist[blocked_by]["note"] = "documented in GP and mental health records"
        body: dict[str, Any] = {
            "weight_kg": self.weight,
            "systolic": self.rng.randint(118, 142),
            "diastolic": self.rng.randint(70, 88),
            "heart_rate": self.rng.randint(60, 88),
            "opioid_mme_per_day": float(self.rng.choice((0, 20, 30, 45, 60, 90))),
            "pain_nrs": self.pain,
            "phq9_items": phq9(self.rng, self.mood),
            "prior_treatments": self.rng.sample(PRIOR_TREATMENTS, 2),
            "checklist": checklist,
        }
        if hypertension:
            body["overrides"] = [
                {
                    "caution": "controlled-hypertension",
                    "reason": "stable on amlodipine; BP checked every 15 minutes",
                }
            ]
        self.api.post(INFUSION_CLINICIAN[0], f"/api/infusion-courses/{course_id}/assessments", body)

    def agree_plan(self, course_id: str, *, induction_count: int = 6) -> None:
        indication = self.rng.choice(("pain", "pain", "both", "depression"))
        plan: dict[str, Any] = {
            "indication": indication,
            "weight_kg": self.weight,
            "induction_count": induction_count,
            "induction_spacing_days": SPACING_DAYS,
            "maintenance_interval_days": MAINTENANCE_DAYS,
        }
        if indication == "depression":
            plan |= {"dose_mg_per_kg": 0.5, "infusion_minutes": 40}
            self.session_hours = 2.0  # 40 minutes and the recovery after
        else:
            self.session_hours = float(self.rng.choice((3, 4)))
            plan |= {"rate_mg_per_kg_per_h": 0.25, "duration_hours": self.session_hours}
        self.indication = indication
        self.api.post(INFUSION_CLINICIAN[0], f"/api/infusion-courses/{course_id}/plan", plan)

    def book_session(
        self, course_id: str, start: datetime, kind: str = "induction"
    ) -> dict[str, Any]:
        end = start + timedelta(hours=self.session_hours)
        return self.api.post(
            INFUSION_CLINICIAN[0],
            f"/api/infusion-courses/{course_id}/sessions",
            {"start": start.isoformat(), "end": end.isoformat(), "kind": kind},
        )

    def infuse(
        self,
        course_id: str,
        booked: dict[str, Any],
        *,
        responds: bool,
        high_bp: bool = False,
        serious: str | None = None,
        reassess: bool = False,
    ) -> bool:
        """Check in, vitals, scores, start, dose and complete one infusion, on its day
        (and the reassessment after it, that day, where the plan needs one); False when
        its day has not come yet."""
        moment = datetime.fromisoformat(booked["scheduled_start"]) + timedelta(minutes=5)
        if not self.has_come(moment):
            return False
        self.at(moment)
        path = f"/api/infusion-sessions/{booked['id']}"
        clinician = INFUSION_CLINICIAN[0]
        self.api.post(clinician, f"{path}/check-in")
        self.api.post(clinician, f"{path}/vitals", self._vitals("before"))
        pain_before = min(10, self.pain + self.rng.choice((-1, 0, 0)))
        self.api.post(
            clinician,
            f"{path}/scores-before",
            {"pain_nrs": pain_before, "mood": self.rng.randint(2, 5)},
        )
        self.api.post(clinician, f"{path}/start")
        self.api.post(clinician, f"{path}/vitals", self._vitals("during", high=high_bp))
        if high_bp:
            self.api.post(
                clinician,
                f"{path}/adverse-events",
                {"code": "hypertension", "severity": "moderate", "note": "rate halved; settled"},
            )
        if serious is not None:
            # A serious adverse event ends the session (CLINICAL.md): no dose, no scores.
            self.api.post(
                clinician,
                f"{path}/adverse-events",
                {"code": serious, "severity": "serious", "note": "infusion stopped; observed"},
            )
            return True
        if self.rng.random() < 0.3:
            self.api.post(
                clinician,
                f"{path}/adverse-events",
                {"code": self.rng.choice(("nausea", "dissociation")), "severity": "mild"},
            )
        # The session's own dose: a first chronic-pain infusion is capped (issue 12).
        self.api.post(clinician, f"{path}/dose", {"given_mg": booked["planned_mg"]})
        if responds:  # pain at least 30% lower, or PHQ-9 at least halved
            pain_after = int(self.pain * 0.6)
            mood_after = self.rng.randint(self.mood // 3, self.mood // 2)
        else:
            pain_after = max(self.pain - 1, int(self.pain * 0.75) + 1)
            mood_after = self.rng.randint(self.mood // 2 + 2, self.mood)
        self.api.post(
            clinician,
            f"{path}/complete",
            {
                "pain_nrs": pain_after,
                "mood": self.rng.randint(4, 7) if responds else self.rng.randint(2, 4),
                "phq9_items": phq9(self.rng, mood_after),
            },
        )
        # Observed after the infusion: the session, now completed, names the phase.
        self.api.post(clinician, f"{path}/vitals", self._vitals("after"))
        if reassess:
            self.assess(course_id)
        return True

    def _vitals(self, phase: str, *, high: bool = False) -> dict[str, Any]:
        if high:  # at or above 180/110 during an infusion (CLINICAL.md, local policy)
            return {"systolic": 186, "diastolic": 112, "heart_rate": 96, "spo2": 97}
        rise = 14 if phase == "during" else 0
        return {
            "systolic": self.rng.randint(118, 138) + rise,
            "diastolic": self.rng.randint(70, 84) + rise // 2,
            "heart_rate": self.rng.randint(62, 90),
            "spo2": self.rng.randint(95, 99),
        }

    # therapy

    def episode(self) -> str:
        episode = self.api.wait_for_one(
            self.psychologist, "/api/therapy-episodes", patient_id=self.patient_id
        )
        return str(episode["id"])

    def take_on(self, episode_id: str) -> None:
        psy = self.psychologist
        self.api.post(psy, f"/api/therapy-episodes/{episode_id}/assign", {"clinician_id": psy})

    def book(self, episode_id: str, kind: str, on_or_after: date) -> Booked:
        """The psychologist's first free slot from that day, as their diary gives it now."""
        psy = self.psychologist
        slots = self.api.get(
            psy, f"/api/clinicians/{psy}/slots", from_day=on_or_after.isoformat(), days=14
        )["slots"]
        if not slots:
            raise RuntimeError("no free slot in the psychologist's diary")
        mode = self.rng.choice(("video", "in-person"))
        body: dict[str, Any] = {"kind": kind, "start": slots[0], "mode": mode}
        if mode == "in-person":
            body["location"] = "Psychology suite, room 2"
        made = self.api.post(psy, f"/api/therapy-episodes/{episode_id}/appointments", body)
        return Booked(made["id"], datetime.fromisoformat(slots[0]))

    def attend(self, booked: Booked, phq9_total: int, gad7_total: int, item9: int = 0) -> bool:
        """On the appointment's day (issue 12): attended, then the measures item by item;
        False when its day has not come yet."""
        if not self.has_come(booked.start + timedelta(minutes=10)):
            return False
        self.at(booked.start + timedelta(minutes=10))
        path = f"/api/appointments/{booked.id}"
        psy = self.psychologist
        if self.rng.random() < 0.5:
            self.api.post(psy, f"{path}/check-in")
        self.api.post(psy, f"{path}/attend")
        # PEG (pain, enjoyment, activity) follows the mood a little: people in pain clinics.
        peg_item = min(10, max(0, round(phq9_total / 3) + self.rng.randint(0, 2)))
        measures = (
            ("PHQ-9", phq9(self.rng, phq9_total, item9)),
            ("GAD-7", gad7(self.rng, gad7_total)),
            ("PEG", [peg_item, max(0, peg_item - 1), min(10, peg_item + 1)]),
        )
        for instrument, items in measures:
            self.api.post(psy, f"{path}/measures", {"instrument": instrument, "items": items})
        return True

    def miss(self, booked: Booked) -> None:
        if not self.has_come(booked.start + timedelta(minutes=20)):
            return
        self.at(booked.start + timedelta(minutes=20))
        self.api.post(self.psychologist, f"/api/appointments/{booked.id}/noshow")

    def treat(
        self, episode_id: str, scores: list[tuple[int, int]], first_on: date, booked_after: bool
    ) -> None:
        """Weekly appointments attended with these (PHQ-9, GAD-7) totals, each booking the
        next at the end of the last, as a psychologist does."""
        booked = self.book(episode_id, "assessment", first_on)
        for number, (phq9_total, gad7_total) in enumerate(scores, start=1):
            if not self.attend(booked, phq9_total, gad7_total):
                return  # its day is still to come: it stays booked
            if number < len(scores) or booked_after:
                booked = self.book(episode_id, "cbt", booked.start.date() + timedelta(days=7))


@dataclass(frozen=True)
class Booked:
    id: str
    start: datetime


# --- the scenarios ----------------------------------------------------------------------------
# Each counts back from today: how long ago the referral came, the first appointment or the
# last infusion was, so that today finds each patient at their point of the pathway.


def _referrer_for(target: str) -> str:
    return PAIN_REFERRER[0] if target == "ketamine-infusion" else REFERRER[0]


def just_referred(
    target: str, priority: str = "routine", item9: int = 0
) -> Callable[[_Visit], None]:
    """Waiting for triage; some past the triage due time (2 or 5 working days)."""

    def run(visit: _Visit) -> None:
        days = visit.rng.randint(1, 4) if priority == "urgent" else visit.rng.randint(0, 10)
        visit.at(visit.days_ago(days, hour=visit.rng.uniform(9, 16)))
        visit.refer(target, priority=priority, item9=item9, by=_referrer_for(target))

    return run


def question_asked(target: str, *, answered: bool) -> Callable[[_Visit], None]:
    def run(visit: _Visit) -> None:
        referred = visit.rng.randint(8, 20)
        by = _referrer_for(target)
        visit.at(visit.days_ago(referred))
        referral = visit.refer(target, by=by)
        question = (
            "Please confirm current opioid doses and any history of psychosis"
            if target == "ketamine-infusion"
            else "Is there any current risk to self? Please attach the latest GP review"
        )
        visit.at(visit.days_ago(referred - 2))
        visit.triage(referral, "request-info", question=question)
        if answered:
            visit.at(visit.days_ago(referred - 4))
            visit.api.post(
                by,
                f"/api/referrals/{referral}/info",
                {"answer": "No psychosis history; morphine 30 mg twice daily, stable"},
            )

    return run


def rejected(target: str, reason: str) -> Callable[[_Visit], None]:
    def run(visit: _Visit) -> None:
        referred = visit.rng.randint(14, 120)
        visit.at(visit.days_ago(referred))
        referral = visit.refer(target, by=_referrer_for(target))
        visit.at(visit.days_ago(referred - 2))
        visit.triage(referral, "reject", reason=reason)

    return run


def withdrawn(visit: _Visit) -> None:
    referred = visit.rng.randint(20, 60)
    visit.at(visit.days_ago(referred))
    referral = visit.refer("ketamine-infusion", by=PAIN_REFERRER[0])
    visit.at(visit.days_ago(referred - 7))
    visit.api.post(
        PAIN_REFERRER[0],
        f"/api/referrals/{referral}/cancel",
        {"reason": "patient moving out of area; referred locally instead"},
    )


def accepted_pain_mdt(visit: _Visit) -> None:
    referred = visit.rng.randint(10, 40)
    visit.at(visit.days_ago(referred))
    referral = visit.refer("pain-mdt")
    visit.at(visit.days_ago(referred - 3))
    visit.triage(referral, "accept")


def psychology(stage: str, priority: str = "routine") -> Callable[[_Visit], None]:
    """A psychology episode at one point: waitlist, booked, in treatment, discharged."""

    def run(visit: _Visit) -> None:
        rng = visit.rng
        # The referral's PHQ-9 is the series' first score; the assessment's agrees with it.
        start = 12 if stage == "deteriorating" else rng.randint(14, 20)
        # Days ago of the first appointment (negative: still to come).
        seen = {
            "booked": -rng.randint(2, 9),
            "item9": rng.randint(1, 3),
            "dna": rng.randint(17, 19),
            "discharged": rng.randint(50, 90),
        }.get(stage, rng.randint(1, 6) + 14)
        if stage == "waitlist":  # some past the 6-week wait, one past 18 weeks
            referred = rng.randint(8, 14) if priority == "urgent" else rng.choice((20, 35, 48, 130))
        else:
            # the first patients discharged waited longest: the clinic was new
            waited = rng.randint(56, 90) if stage == "discharged" else rng.randint(28, 70)
            referred = max(seen, 0) + 10 + waited
        visit.at(visit.days_ago(referred))
        referral = visit.refer("psychology", priority=priority, phq9_total=start)
        visit.at(visit.days_ago(referred - rng.randint(2, 4)))
        visit.triage(referral, "accept")
        episode = visit.episode()
        if stage == "waitlist":
            return
        visit.at(visit.days_ago(max(seen, 0) + 10))
        visit.take_on(episode)
        first_on = visit.today.date() - timedelta(days=seen)
        if stage == "booked":
            visit.book(episode, "assessment", first_on)
        elif stage == "improving":
            visit.treat(episode, [(start, 13), (start - 4, 10), (start - 8, 7)], first_on, True)
        elif stage == "not-improving":
            visit.treat(episode, [(start, 12), (start, 12), (start - 1, 11)], first_on, True)
        elif stage == "deteriorating":  # PHQ-9 up 6 or more: reliable deterioration
            visit.treat(episode, [(12, 9), (15, 11), (19, 14)], first_on, True)
        elif stage == "item9":  # PHQ-9 item 9 above 0 at the assessment: same-day alert
            assessment = visit.book(episode, "assessment", first_on)
            visit.attend(assessment, start, 12, item9=1)
            visit.book(episode, "cbt", assessment.start.date() + timedelta(days=7))
        elif stage == "dna":  # two missed CBT sessions: the discharge review alert
            booked = visit.book(episode, "assessment", first_on)
            visit.attend(booked, start, 11)
            for _missed in range(2):
                booked = visit.book(episode, "cbt", booked.start.date() + timedelta(days=7))
                visit.miss(booked)
            visit.book(episode, "cbt", visit.today.date() + timedelta(days=2))
        elif stage == "discharged":
            scores = [(start, 12), (start - 5, 8), (start - 9, 5), (max(start - 12, 3), 4)]
            visit.treat(episode, scores, first_on, False)
            visit.api.post(
                visit.psychologist,
                f"/api/therapy-episodes/{episode}/discharge",
                {"reason": "completed", "note": "goals met; relapse-prevention plan agreed"},
            )

    return run


def psychology_referral(visit: _Visit) -> None:
    """Referred to psychology in the last days, alongside an infusion course."""
    visit.at(visit.days_ago(visit.rng.randint(0, 2), hour=15))
    visit.refer("psychology")


INFUSIONS_GIVEN = {"induction-1": 1, "induction-2": 2, "vitals": 2, "serious": 2}


def ketamine(
    stage: str, *, responds: bool = True, overdue: bool = False
) -> Callable[[_Visit], None]:
    """An infusion course at one point of its months."""

    def run(visit: _Visit) -> None:
        rng = visit.rng
        given = 0 if stage in ("opened", "assessed", "ineligible", "planned") else 3
        given = INFUSIONS_GIVEN.get(stage, given)
        maintenance = stage == "maintenance"
        # Days ago of the last infusion: the next is booked at the plan's spacing, so it
        # falls in the coming days; a maintenance one 28 days on, overdue when missed.
        last = rng.randint(33, 38) if overdue else rng.randint(8, 20) if maintenance else 1
        first = last + SPACING_DAYS * (given - 1)
        assessed = {
            "opened": None,
            "assessed": rng.randint(1, 5),
            "ineligible": rng.randint(30, 60),
            "planned": rng.randint(3, 6),
        }.get(stage, first + rng.randint(5, 9))
        referred = (assessed if assessed is not None else 0) + rng.randint(10, 25)
        visit.at(visit.days_ago(referred))
        referral = visit.refer(
            "ketamine-infusion",
            by=PAIN_REFERRER[0],
            priority=rng.choice(("routine",) * 3 + ("urgent",)),
        )
        visit.at(visit.days_ago(referred - rng.randint(2, 4)))
        visit.triage(referral, "accept")
        course = visit.course()
        if assessed is None:
            return
        visit.at(visit.days_ago(assessed, hour=11))
        _course_to(visit, course, stage, responds=responds, given=given, first=first)

    return run


def _course_to(
    visit: _Visit, course: str, stage: str, *, responds: bool, given: int, first: int
) -> None:
    api, clinician = visit.api, INFUSION_CLINICIAN[0]
    if stage == "ineligible":
        visit.assess(course, blocked_by="psychosis")
        api.post(
            clinician,
            f"/api/infusion-courses/{course}/close",
            {"reason": "ineligible", "note": "history of psychotic disorder"},
        )
        return
    visit.assess(course)
    if stage == "assessed":
        return
    maintenance = stage == "maintenance"
    visit.agree_plan(course, induction_count=3 if maintenance else 6)
    if stage == "planned":  # on today's list; a pain series waits for its reassessment
        clinic_opens = visit.clinic_day(0)
        soon = visit.today.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
        visit.book_session(course, clinic_opens if clinic_opens > visit.today else soon)
        return
    booked = visit.book_session(course, visit.clinic_day(first))
    for number in range(1, given + 1):
        last = number == given
        given_now = visit.infuse(
            course,
            booked,
            # A responder feels the benefit from the second infusion (or the only one).
            responds=responds and (number >= 2 or given == 1),
            high_bp=stage == "vitals" and last,
            serious="hypertension" if stage == "serious" and last else None,
            # Chronic pain (Cohen 2018): reassess after the first infusion, before a series.
            reassess=number == 1 and visit.indication != "depression",
        )
        if not given_now:
            return  # its day is still to come: it stays booked
        if stage == "serious" and last:
            return
        start = datetime.fromisoformat(booked["scheduled_start"])
        if last and maintenance:  # the first maintenance infusion, at the plan's interval
            visit.book_session(course, start + timedelta(days=MAINTENANCE_DAYS), "maintenance")
        else:
            booked = visit.book_session(course, start + timedelta(days=SPACING_DAYS))
    if stage == "on-hold":
        visit.at(visit.days_ago(0, hour=8))
        api.post(
            MDT[0],
            f"/api/infusion-courses/{course}/hold",
            {"reason": "no meaningful response after 3 infusions: MDT review first"},
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    stage: str  # the pathway stage the coordinator should show
    run: Callable[[_Visit], None]
    # What happens to the same patient meanwhile, on the same timeline (psychology
    # alongside an infusion course).
    alongside: Callable[[_Visit], None] | None = None


# Fifty patients across the pathway; a smaller or larger cohort takes an even spread.
COHORT: tuple[Scenario, ...] = (
    # referrals waiting, asked about, refused, withdrawn
    Scenario("referred-psychology", "referred", just_referred("psychology")),
    Scenario("referred-ketamine", "referred", just_referred("ketamine-infusion")),
    Scenario(
        "referred-psychology-urgent-item9", "referred", just_referred("psychology", "urgent", 1)
    ),
    Scenario("referred-pain-mdt", "referred", just_referred("pain-mdt")),
    Scenario("referred-psychology", "referred", just_referred("psychology")),
    Scenario("referred-ketamine-urgent", "referred", just_referred("ketamine-infusion", "urgent")),
    Scenario("referred-psychology-urgent", "referred", just_referred("psychology", "urgent")),
    Scenario("referred-pain-mdt", "referred", just_referred("pain-mdt", "urgent")),
    Scenario("question-asked", "referred", question_asked("ketamine-infusion", answered=False)),
    Scenario("question-asked", "referred", question_asked("psychology", answered=False)),
    Scenario("question-answered", "referred", question_asked("ketamine-infusion", answered=True)),
    Scenario(
        "rejected",
        "referred",
        rejected("psychology", "needs are better met by the community mental health team"),
    ),
    Scenario(
        "rejected",
        "referred",
        rejected("ketamine-infusion", "uncontrolled hypertension: GP to optimise first"),
    ),
    Scenario("rejected", "referred", rejected("pain-mdt", "seen by the spinal team last month")),
    Scenario("withdrawn", "referred", withdrawn),
    Scenario("accepted-pain-mdt", "triaged", accepted_pain_mdt),
    # psychology
    Scenario("psychology-waitlist", "triaged", psychology("waitlist")),
    Scenario("psychology-waitlist", "triaged", psychology("waitlist", "urgent")),
    Scenario("psychology-waitlist", "triaged", psychology("waitlist")),
    Scenario("psychology-assessment-booked", "triaged", psychology("booked")),
    Scenario("psychology-assessment-booked", "triaged", psychology("booked")),
    Scenario("psychology-improving", "triaged", psychology("improving")),
    Scenario("psychology-improving", "triaged", psychology("improving")),
    Scenario("psychology-improving", "triaged", psychology("improving")),
    Scenario("psychology-not-improving", "triaged", psychology("not-improving")),
    Scenario("psychology-deteriorating", "triaged", psychology("deteriorating")),
    Scenario("psychology-item9", "triaged", psychology("item9")),
    Scenario("psychology-dna", "triaged", psychology("dna")),
    Scenario("psychology-discharged", "discharged", psychology("discharged")),
    Scenario("psychology-discharged", "discharged", psychology("discharged")),
    # ketamine infusions
    Scenario("ketamine-awaiting-assessment", "assessment", ketamine("opened")),
    Scenario("ketamine-awaiting-assessment", "assessment", ketamine("opened")),
    Scenario("ketamine-assessed", "assessment", ketamine("assessed")),
    Scenario("ketamine-assessed", "assessment", ketamine("assessed")),
    Scenario("ketamine-ineligible", "discharged", ketamine("ineligible")),
    Scenario("ketamine-planned", "assessment", ketamine("planned")),
    Scenario("ketamine-planned", "assessment", ketamine("planned")),
    Scenario(
        "ketamine-induction",
        "induction",
        ketamine("induction-1"),
        alongside=psychology_referral,
    ),
    Scenario("ketamine-induction", "induction", ketamine("induction-1", responds=False)),
    Scenario("ketamine-induction", "induction", ketamine("induction-2")),
    Scenario("ketamine-vitals-out-of-range", "induction", ketamine("vitals")),
    Scenario(
        "ketamine-no-response",
        "induction",
        ketamine("induction-3", responds=False),
        alongside=psychology("waitlist"),
    ),
    Scenario("ketamine-no-response", "induction", ketamine("induction-3", responds=False)),
    Scenario("ketamine-responding", "induction", ketamine("induction-3")),
    Scenario("ketamine-serious-adverse-event", "induction", ketamine("serious")),
    Scenario(
        "ketamine-maintenance",
        "maintenance",
        ketamine("maintenance"),
        alongside=psychology("improving"),
    ),
    Scenario("ketamine-maintenance", "maintenance", ketamine("maintenance")),
    Scenario(
        "ketamine-maintenance-overdue",
        "maintenance",
        ketamine("maintenance", overdue=True),
        alongside=psychology("waitlist"),
    ),
    Scenario("ketamine-maintenance", "maintenance", ketamine("maintenance")),
    Scenario("ketamine-on-hold", "induction", ketamine("on-hold", responds=False)),
)


def cohort(patients: int) -> list[Scenario]:
    """``patients`` scenarios: the whole cohort, an even spread of it, or it repeated."""
    size = len(COHORT)
    if patients <= size:
        return [COHORT[index * size // patients] for index in range(patients)]
    return [COHORT[index % size] for index in range(patients)]


# --- seeding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSummary:
    seeded: bool  # False: the data folder had patients already, nothing was added
    patients: int  # journeys made in full now (seeded), or pathways already there
    failed: int  # journeys an API refused part-way (each logged: scenario, error type)
    seconds: float
    stages: dict[str, int]  # the stage each seeded scenario aims at, counted


def already_seeded(api: _Api) -> bool:
    """Any referral or pathway means a clinic in use: the demo adds nobody to it."""
    referrals = api.get(MDT[0], "/api/referrals", limit=1)["items"]
    pathways = api.get(MDT[0], "/api/pathways", limit=1)["items"]
    return bool(referrals or pathways)


def count_pathways(api: _Api) -> int:
    count, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = api.get(MDT[0], "/api/pathways", **params)
        count += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return count


def _open_diaries(api: _Api) -> None:
    """Each psychologist's own record and working hours, on the clinic's first day."""
    for clinician, _role in PSYCHOLOGISTS:
        try:
            api.post(
                clinician,
                "/api/clinicians",
                {"id": clinician, "display_name": PSYCHOLOGIST_NAMES[clinician]},
            )
        except DemoStepRefused as refused:
            if refused.status != 409:  # 409: already in the service
                raise
        api.call(
            "PUT",
            clinician,
            f"/api/clinicians/{clinician}/working-hours",
            {"hours": WEEKDAYS_9_TO_5},
        )


def wait_for_server(base_url: str, timeout: float = 120.0) -> None:
    """Until /health answers 200 (the server is started by the same process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url.rstrip('/')}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not answer /health within {timeout:.0f}s")
        time.sleep(0.2)


def seed_cohort(
    base_url: str, platform: PlatformSettings, patients: int = 50, seed: int = 7
) -> DemoSummary:
    """Make the synthetic cohort through the running server's APIs, unless it has patients.

    The clinic opens MONTHS_AGO_DAYS before today, and the cohort's steps are lived in time
    order on the clinic clock (`Timeline`), which is put back to the system's time at the
    end, whatever happened. A journey an API refuses part-way is logged (scenario and error
    type) and counted; the rest go on.
    """
    began = time.monotonic()
    setup = _Api(base_url, platform)
    try:
        if already_seeded(setup):
            log.info("demo.skipped", reason="the data folder already has patients")
            return DemoSummary(
                seeded=False,
                patients=count_pathways(setup),
                failed=0,
                seconds=time.monotonic() - began,
                stages={},
            )
        today = utcnow()
        opened = today - timedelta(days=MONTHS_AGO_DAYS)
        setup.set_clock(opened)
        try:
            _open_diaries(setup)
            made = _live_the_months(base_url, platform, cohort(patients), seed, today, opened)
        finally:
            setup.reset_clock()
    finally:
        setup.close()
    _wait_for_pathways(base_url, platform, len(made))
    seconds = round(time.monotonic() - began, 1)
    failed = patients - len(made)
    log.info("demo.seeded", patients=len(made), failed=failed, seconds=seconds)
    return DemoSummary(
        seeded=True,
        patients=len(made),
        failed=failed,
        seconds=seconds,
        stages=dict(Counter(scenario.stage for scenario in made)),
    )


def _live_the_months(
    base_url: str,
    platform: PlatformSettings,
    plan: list[Scenario],
    seed: int,
    today: datetime,
    opened: datetime,
) -> list[Scenario]:
    """Every journey's strands, one thread each, taking turns on the timeline; the
    scenarios whose every strand ran to its end."""
    people = invent_people(len(plan), seed)
    api = _Api(base_url, platform)
    strands = [
        (index, run)
        for index, scenario in enumerate(plan)
        for run in (scenario.run, scenario.alongside)
        if run is not None
    ]
    timeline = Timeline(api.set_clock, len(strands), opened)
    visits = [
        _Visit(
            api=api,
            timeline=timeline,
            today=today,
            person=people[index],
            rng=random.Random(f"{seed}-{index}"),  # noqa: S311 - invented scores, not secrets
            psychologist=PSYCHOLOGISTS[index % len(PSYCHOLOGISTS)][0],
        )
        for index in range(len(plan))
    ]
    failed: set[int] = set()
    log.info("demo.seeding", patients=len(plan), days=MONTHS_AGO_DAYS)

    def live(index: int, run: Callable[[_Visit], None]) -> None:
        try:
            run(visits[index])
        except (DemoStepRefused, httpx.HTTPError, TimeoutError, RuntimeError) as error:
            failed.add(index)
            log.warning(
                "demo.patient_failed",
                scenario=plan[index].name,
                error=type(error).__name__,
                status=error.status if isinstance(error, DemoStepRefused) else None,
            )
        finally:
            timeline.finish()

    threads = [
        threading.Thread(target=live, args=strand, name=f"demo-{number}", daemon=True)
        for number, strand in enumerate(strands)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        api.close()
    return [scenario for index, scenario in enumerate(plan) if index not in failed]


def _wait_for_pathways(base_url: str, platform: PlatformSettings, expected: int) -> None:
    """The coordinator folds the events a moment later: wait (briefly) for every pathway."""
    api = _Api(base_url, platform)
    try:
        deadline = time.monotonic() + 30.0
        while count_pathways(api) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        api.close()


def describe(summary: DemoSummary) -> str:
    """One line for the terminal: counts only, no names."""
    if not summary.seeded:
        return (
            "demo cohort not seeded again: the data folder already has patients "
            f"({summary.patients} pathways)"
        )
    stages = ", ".join(f"{stage} {count}" for stage, count in sorted(summary.stages.items()))
    failed = f"; {summary.failed} failed part-way (see the log)" if summary.failed else ""
    return (
        f"demo cohort ready: {summary.patients} patients in {summary.seconds:.0f}s "
        f"({stages}){failed}"
    )
