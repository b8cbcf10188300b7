"""`carepath up --demo`: a synthetic cohort, made through the services' own APIs.

About fifty patients at different points of the pathway, so a newcomer opens a clinic
that is already running: referrals waiting for triage, questions asked, infusion courses
at every step, psychology episodes on the waiting list and in treatment, and the alerts
those raise. Everything goes through the HTTP APIs as a named (development) clinician, so
every event is a real one and every rule is applied; nothing is written to a database.

The names are invented and the NHS numbers come from the 999 range NHS England keeps
for test patients. Logs carry counts and scenario names only, never a patient's details.

What the APIs do not allow, and how the cohort lives with it (every refusal is a rule):
- nothing can be back-dated: every event happens now, so waits are all short and no
  time-based alert (triage overdue, 6-week wait, maintenance overdue) fires;
- an infusion session and a therapy appointment can only be booked in the future, and
  started, attended or missed on their day (issue 12): the sessions a patient has "had"
  are booked on the next days (at the plan's spacing, on the psychologist's slots) and
  carried out with the embedded clinic clock moved to their day for the moment it takes
  (`on_the_day`, under a lock every seeding call holds).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from shared.auth import Role, issue_token
from shared.clock import clinic_clock
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

THREADS = 4
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


# An infusion is given on the day it was booked for (issue 12), so the demo moves the
# embedded system's clinic clock to that day for the infusion and back at once. Every
# seeding call holds this lock, so no other thread's call sees the moved clock.
CLINIC_TIME = threading.RLock()


@contextmanager
def on_the_day(start: datetime) -> Iterator[None]:
    with CLINIC_TIME:
        clinic_clock().set(start + timedelta(minutes=5))
        try:
            yield
        finally:
            clinic_clock().reset()


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
        with CLINIC_TIME:  # no call lands while another thread has moved the clock
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


class _Diary:
    """The psychologists' free slots, handed out once each across the seeding threads."""

    def __init__(self, slots: Mapping[str, list[str]]) -> None:
        self._free = {clinician: deque(starts) for clinician, starts in slots.items()}
        self._lock = threading.Lock()

    def take(self, clinician: str, count: int) -> list[str]:
        with self._lock:
            free = self._free[clinician]
            if len(free) < count:
                raise RuntimeError(f"{clinician} has no {count} free slots left")
            return [free.popleft() for _ in range(count)]


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
    """One patient moved through the clinic, step by step, as the staff would."""

    api: _Api
    diary: _Diary
    person: Person
    rng: random.Random
    psychologist: str
    patient_id: str = ""
    pain: int = 8
    mood: int = 16  # the latest PHQ-9 total before treatment (the course baseline)
    weight: float = 70.0
    indication: str = "pain"
    next_session_day: int = 1
    spacing_days: int = 3
    session_hours: float = 4.0
    targets: dict[str, str] = field(default_factory=dict)  # referral id → its team
    # appointment id → its start: it is attended or missed on that day (issue 12)
    appointment_starts: dict[str, str] = field(default_factory=dict)

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
            "induction_spacing_days": self.spacing_days,
            "maintenance_interval_days": 28,
        }
        if indication == "depression":
            plan |= {"dose_mg_per_kg": 0.5, "infusion_minutes": 40}
            self.session_hours = 2.0  # 40 minutes and the recovery after
        else:
            self.session_hours = float(self.rng.choice((3, 4)))
            plan |= {"rate_mg_per_kg_per_h": 0.25, "duration_hours": self.session_hours}
        self.indication = indication
        self.api.post(INFUSION_CLINICIAN[0], f"/api/infusion-courses/{course_id}/plan", plan)

    def schedule(
        self, course_id: str, *, kind: str = "induction", day: int | None = None
    ) -> dict[str, Any]:
        """The next session, at 09:00 on a coming day (a session cannot be booked in the
        past, so the ones given today are booked on the next days at the plan's spacing)."""
        if day is None:
            day, self.next_session_day = (
                self.next_session_day,
                self.next_session_day + self.spacing_days,
            )
        start = datetime.combine(
            utcnow().date() + timedelta(days=day), datetime.min.time(), UTC
        ) + timedelta(hours=9)
        end = start + timedelta(hours=self.session_hours)
        return self.api.post(
            INFUSION_CLINICIAN[0],
            f"/api/infusion-courses/{course_id}/sessions",
            {"start": start.isoformat(), "end": end.isoformat(), "kind": kind},
        )

    def infuse(
        self,
        course_id: str,
        *,
        responds: bool,
        high_bp: bool = False,
        serious: str | None = None,
        reassess: bool = False,
    ) -> None:
        """Check in, vitals, scores, start, dose and complete one infusion, on its day
        (and the reassessment after it, that day, where the plan needs one)."""
        booked = self.schedule(course_id)
        with on_the_day(datetime.fromisoformat(booked["scheduled_start"])):
            self._infuse(booked, responds=responds, high_bp=high_bp, serious=serious)
            if reassess and serious is None:
                self.assess(course_id)

    def _infuse(
        self, booked: dict[str, Any], *, responds: bool, high_bp: bool, serious: str | None
    ) -> None:
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
            return
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

    def take_on(self, episode_id: str, appointments: int) -> list[str]:
        """Assign to the psychologist and book the assessment and CBT sessions, in order."""
        psy = self.psychologist
        self.api.post(psy, f"/api/therapy-episodes/{episode_id}/assign", {"clinician_id": psy})
        booked: list[str] = []
        for number, start in enumerate(self.diary.take(psy, appointments)):
            mode = self.rng.choice(("video", "in-person"))
            body: dict[str, Any] = {
                "kind": "assessment" if number == 0 else "cbt",
                "start": start,
                "mode": mode,
            }
            if mode == "in-person":
                body["location"] = "Psychology suite, room 2"
            made = self.api.post(psy, f"/api/therapy-episodes/{episode_id}/appointments", body)
            self.appointment_starts[made["id"]] = start
            booked.append(made["id"])
        return booked

    def _its_day(self, appointment_id: str) -> Any:
        return on_the_day(datetime.fromisoformat(self.appointment_starts[appointment_id]))

    def attend(self, appointment_id: str, phq9_total: int, gad7_total: int, item9: int = 0) -> None:
        path = f"/api/appointments/{appointment_id}"
        psy = self.psychologist
        with self._its_day(appointment_id):
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

    def miss(self, appointment_id: str) -> None:
        with self._its_day(appointment_id):
            self.api.post(self.psychologist, f"/api/appointments/{appointment_id}/noshow")

    def treat(self, episode_id: str, scores: list[tuple[int, int]], booked_after: int = 1) -> None:
        """Attended appointments with these (PHQ-9, GAD-7) totals, and more booked."""
        appointments = self.take_on(episode_id, len(scores) + booked_after)
        for appointment_id, (phq9_total, gad7_total) in zip(appointments, scores, strict=False):
            self.attend(appointment_id, phq9_total, gad7_total)


# --- the scenarios ----------------------------------------------------------------------------


def just_referred(
    target: str, priority: str = "routine", item9: int = 0
) -> Callable[[_Visit], None]:
    def run(visit: _Visit) -> None:
        by = PAIN_REFERRER[0] if target == "ketamine-infusion" else REFERRER[0]
        visit.refer(target, priority=priority, item9=item9, by=by)

    return run


def question_asked(target: str, *, answered: bool) -> Callable[[_Visit], None]:
    def run(visit: _Visit) -> None:
        by = PAIN_REFERRER[0] if target == "ketamine-infusion" else REFERRER[0]
        referral = visit.refer(target, by=by)
        question = (
            "Please confirm current opioid doses and any history of psychosis"
            if target == "ketamine-infusion"
            else "Is there any current risk to self? Please attach the latest GP review"
        )
        visit.triage(referral, "request-info", question=question)
        if answered:
            visit.api.post(
                by,
                f"/api/referrals/{referral}/info",
                {"answer": "No psychosis history; morphine 30 mg twice daily, stable"},
            )

    return run


def rejected(target: str, reason: str) -> Callable[[_Visit], None]:
    def run(visit: _Visit) -> None:
        by = PAIN_REFERRER[0] if target == "ketamine-infusion" else REFERRER[0]
        visit.triage(visit.refer(target, by=by), "reject", reason=reason)

    return run


def withdrawn(visit: _Visit) -> None:
    referral = visit.refer("ketamine-infusion", by=PAIN_REFERRER[0])
    visit.api.post(
        PAIN_REFERRER[0],
        f"/api/referrals/{referral}/cancel",
        {"reason": "patient moving out of area; referred locally instead"},
    )


def accepted_pain_mdt(visit: _Visit) -> None:
    visit.triage(visit.refer("pain-mdt"), "accept")


def psychology(stage: str, priority: str = "routine") -> Callable[[_Visit], None]:
    """A psychology episode at one point: waitlist, booked, in treatment, discharged."""

    def run(visit: _Visit) -> None:
        # The referral's PHQ-9 is the series' first score; the assessment's agrees with it.
        start = 12 if stage == "deteriorating" else visit.rng.randint(14, 20)
        visit.triage(visit.refer("psychology", priority=priority, phq9_total=start), "accept")
        episode = visit.episode()
        if stage == "waitlist":
            return
        if stage == "booked":
            visit.take_on(episode, 1)
        elif stage == "improving":
            visit.treat(episode, [(start, 13), (start - 4, 10), (start - 8, 7)])
        elif stage == "not-improving":
            visit.treat(episode, [(start, 12), (start, 12), (start - 1, 11)])
        elif stage == "deteriorating":  # PHQ-9 up 6 or more: reliable deterioration
            visit.treat(episode, [(12, 9), (15, 11), (19, 14)])
        elif stage == "item9":  # PHQ-9 item 9 above 0 at the assessment: same-day alert
            (assessment, _cbt) = visit.take_on(episode, 2)
            visit.attend(assessment, start, 12, item9=1)
        elif stage == "dna":  # two missed CBT sessions: the discharge review alert
            assessment, first, second, _third = visit.take_on(episode, 4)
            visit.attend(assessment, start, 11)
            visit.miss(first)
            visit.miss(second)
        elif stage == "discharged":
            visit.treat(
                episode, [(start, 12), (start - 5, 8), (start - 9, 5), (max(start - 12, 3), 4)], 0
            )
            visit.api.post(
                visit.psychologist,
                f"/api/therapy-episodes/{episode}/discharge",
                {"reason": "completed", "note": "goals met; relapse-prevention plan agreed"},
            )

    return run


def ketamine(
    stage: str, *, responds: bool = True, psychology_too: str | None = None
) -> Callable[[_Visit], None]:
    """An infusion course at one point; optionally a psychology referral alongside."""

    def run(visit: _Visit) -> None:
        referral = visit.refer(
            "ketamine-infusion",
            by=PAIN_REFERRER[0],
            priority=visit.rng.choice(("routine",) * 3 + ("urgent",)),
        )
        visit.triage(referral, "accept")
        course = visit.course()
        _course_to(visit, course, stage, responds)
        if psychology_too == "referred":
            visit.refer("psychology")
        elif psychology_too is not None:
            psychology(psychology_too)(visit)

    return run


def _course_to(visit: _Visit, course: str, stage: str, responds: bool) -> None:
    api, clinician = visit.api, INFUSION_CLINICIAN[0]
    if stage == "opened":
        return
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
    if stage == "planned":
        visit.schedule(course)  # a pain series waits for the first infusion's reassessment
        return
    given = {"induction-1": 1, "induction-2": 2, "vitals": 2, "serious": 2}.get(stage, 3)
    for number in range(1, given + 1):
        last = number == given
        visit.infuse(
            course,
            # A responder feels the benefit from the second infusion (or the only one).
            responds=responds and (number >= 2 or given == 1),
            high_bp=stage == "vitals" and last,
            serious="hypertension" if stage == "serious" and last else None,
            # Chronic pain (Cohen 2018): reassess after the first infusion, before a series.
            reassess=number == 1 and visit.indication != "depression",
        )
    if stage == "serious":
        return
    if maintenance:  # the first maintenance infusion, due at the plan's interval
        visit.schedule(course, kind="maintenance", day=28)
    else:
        visit.schedule(course)
    if stage == "on-hold":
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
        ketamine("induction-1", psychology_too="referred"),
    ),
    Scenario("ketamine-induction", "induction", ketamine("induction-1", responds=False)),
    Scenario("ketamine-induction", "induction", ketamine("induction-2")),
    Scenario("ketamine-vitals-out-of-range", "induction", ketamine("vitals")),
    Scenario(
        "ketamine-no-response",
        "induction",
        ketamine("induction-3", responds=False, psychology_too="waitlist"),
    ),
    Scenario("ketamine-no-response", "induction", ketamine("induction-3", responds=False)),
    Scenario("ketamine-responding", "induction", ketamine("induction-3")),
    Scenario("ketamine-serious-adverse-event", "induction", ketamine("serious")),
    Scenario(
        "ketamine-maintenance",
        "maintenance",
        ketamine("maintenance", psychology_too="improving"),
    ),
    Scenario("ketamine-maintenance", "maintenance", ketamine("maintenance")),
    Scenario(
        "ketamine-maintenance",
        "maintenance",
        ketamine("maintenance", psychology_too="waitlist"),
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


def _open_diaries(api: _Api) -> _Diary:
    """Each psychologist's own record and working hours, and their free slots ahead."""
    soon = utcnow() + timedelta(minutes=15)
    free: dict[str, list[str]] = {}
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
        slots = api.get(clinician, f"/api/clinicians/{clinician}/slots", days=28)["slots"]
        free[clinician] = [s for s in slots if datetime.fromisoformat(s) > soon]
    return _Diary(free)


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
    base_url: str,
    platform: PlatformSettings,
    patients: int = 50,
    seed: int = 7,
    *,
    threads: int = THREADS,
) -> DemoSummary:
    """Make the synthetic cohort through the running server's APIs, unless it has patients.

    Each patient's journey runs in one thread, a few journeys at once. A journey an API
    refuses part-way is logged (scenario and error type) and counted; the rest go on.
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
        diary = _open_diaries(setup)
    finally:
        setup.close()
    plan = cohort(patients)
    people = invent_people(len(plan), seed)
    log.info("demo.seeding", patients=len(plan), threads=threads)

    def journey(index: int) -> bool:
        scenario = plan[index]
        api = _Api(base_url, platform)
        visit = _Visit(
            api=api,
            diary=diary,
            person=people[index],
            rng=random.Random(f"{seed}-{index}"),  # noqa: S311 - invented scores, not secrets
            psychologist=PSYCHOLOGISTS[index % len(PSYCHOLOGISTS)][0],
        )
        try:
            visit.register()
            scenario.run(visit)
            return True
        except (DemoStepRefused, httpx.HTTPError, TimeoutError, RuntimeError) as error:
            status = error.status if isinstance(error, DemoStepRefused) else None
            log.warning(
                "demo.patient_failed",
                scenario=scenario.name,
                error=type(error).__name__,
                status=status,
            )
            return False
        finally:
            api.close()

    made: list[Scenario] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="demo") as pool:
        futures = {pool.submit(journey, index): plan[index] for index in range(len(plan))}
        for done, future in enumerate(as_completed(futures), start=1):
            if future.result():
                made.append(futures[future])
            if done % 10 == 0 or done == len(plan):
                log.info("demo.progress", done=done, total=len(plan), failed=done - len(made))
    _wait_for_pathways(base_url, platform, len(made))
    seconds = round(time.monotonic() - began, 1)
    failed = len(plan) - len(made)
    log.info("demo.seeded", patients=len(made), failed=failed, seconds=seconds)
    return DemoSummary(
        seeded=True,
        patients=len(made),
        failed=failed,
        seconds=seconds,
        stages=dict(Counter(scenario.stage for scenario in made)),
    )


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
