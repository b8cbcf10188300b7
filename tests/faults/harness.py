"""The fault suite's harness: a Redis of the test's own, the whole system as processes, a
load driver that records every acknowledged write, and a checker of their effects.

Issue 10: start the services and workers as processes, drive a mixed load through the
APIs, record every acknowledged write, inject a fault, let it recover, then check that
every acknowledged write has all its effects in every consumer, no effect twice, no
unsent outbox row, and every pathway equal to its rebuild.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from shared.events.subscriptions import consumers_of
from tests.support import (
    JWT_SECRET,
    POSTGRES_ADMIN_URL,
    SERVICES,
    PrivateRedis,
    Processes,
    carepath,
    database_name,
    free_port,
    plain_url,
    postgres_databases,
    token,
    wait_for_http,
    wait_until,
)

# Generous: a 2-core machine running eight carepath processes and PostgreSQL is slow.
START_TIMEOUT_S = 90.0
RECOVERY_TIMEOUT_S = 120.0
# After the first passing check, wait this long (longer than the heartbeat timeout, so a
# killed worker's messages have come back) and check again: the second one is the result.
SETTLE_S = 3.0

# Who may do what (services/*/api.py guards).
REFERRER = ("referrer", "gp-fault")
MDT = ("mdt", "mdt-fault")
INFUSION_CLINICIAN = ("infusion-clinician", "inf-fault")
ADMIN = ("admin", "admin-fault")


# --- Redis --------------------------------------------------------------------------------


# --- databases ------------------------------------------------------------------------------


@contextmanager
def migrated_templates() -> Iterator[dict[str, str]]:
    """One migrated database per service for the whole session (`carepath migrate S`),
    which each test's databases are copied from: a copy takes a fraction of a second,
    four migrations several seconds."""
    with postgres_databases("cp_fault_tpl", SERVICES) as urls:
        env = clean_env()
        env.update({f"CAREPATH_{s.upper()}_DATABASE_URL": url for s, url in urls.items()})
        running = {
            service: subprocess.Popen(
                carepath("migrate", service),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for service in SERVICES
        }
        for service, process in running.items():
            output, _ = process.communicate(timeout=180)
            assert process.returncode == 0, f"carepath migrate {service}: {output.decode()}"
        yield urls


def copied_databases(templates: dict[str, str]) -> AbstractContextManager[dict[str, str]]:
    """The test's own databases, copies of the migrated templates, dropped afterwards."""
    return postgres_databases("cp_fault", SERVICES, templates)


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}


# --- the system as processes ---------------------------------------------------------------


class System:
    """Four APIs and four workers as processes, on the test's own databases and Redis."""

    def __init__(self, databases: dict[str, str], redis_server: PrivateRedis, log_dir: Path):
        self.databases = databases
        self.redis = redis_server
        self.log_dir = log_dir
        self.namespace = f"cp-fault-{uuid.uuid4().hex[:8]}"
        self.processes = Processes(log_dir)
        self.ports = {service: free_port() for service in SERVICES}
        self.settings: dict[str, str] = {
            "CAREPATH_RELAY_INTERVAL_S": "0.2",
            "CAREPATH_RELAY_MAX_BACKOFF_S": "1",
            "CAREPATH_MAX_RETRIES": "5",
            "CAREPATH_MIN_BACKOFF_MS": "50",
            "CAREPATH_MAX_BACKOFF_MS": "500",
            "CAREPATH_HEARTBEAT_TIMEOUT_MS": "1500",
            "CAREPATH_MAINTENANCE_CHANCE": "1000000",
            "CAREPATH_WORKER_THREADS": "2",
            "CAREPATH_CATCHUP_INTERVAL_S": "1",
            "CAREPATH_CLOCK_INTERVAL_S": "0",
        }

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = clean_env()
        env.update(
            {
                "CAREPATH_ENV": "production",
                "CAREPATH_JWT_SECRET": JWT_SECRET,
                "CAREPATH_BROKER": "redis",
                "CAREPATH_REDIS_URL": self.redis.url,
                "CAREPATH_REDIS_NAMESPACE": self.namespace,
                "CAREPATH_LOG_LEVEL": "INFO",
            }
        )
        for service in SERVICES:
            env[f"CAREPATH_{service.upper()}_DATABASE_URL"] = self.databases[service]
            env[f"CAREPATH_{service.upper()}_URL"] = self.url(service)
        env.update(self.settings)
        env.update(overrides)
        return env

    # -- APIs and workers

    def start_api(self, service: str, wait: bool = True, **overrides: str) -> None:
        port = str(self.ports[service])
        command = carepath("serve", service, "--port", port)
        self.processes.start(f"{service}-api", command, self.env(**overrides))
        if wait:
            self.wait_api(service)

    def wait_api(self, service: str) -> None:
        wait_for_http(f"{self.url(service)}/health", timeout=START_TIMEOUT_S)

    def start_worker(self, service: str, wait: bool = True, **overrides: str) -> None:
        name = f"{service}-worker"
        before = self.processes.log(name).count("is consuming")
        self.processes.start(name, carepath("worker", service), self.env(**overrides))
        if wait:
            self.wait_worker(service, before)

    def wait_worker(self, service: str, before: int = 0) -> None:
        name = f"{service}-worker"

        def consuming() -> bool:
            process = self.processes.running.get(name)
            assert process is not None and process.poll() is None, (
                f"{name} exited: {self.processes.log(name)[-3000:]}"
            )
            return self.processes.log(name).count("is consuming") > before

        wait_until(consuming, timeout=START_TIMEOUT_S, interval=0.2, what=f"{name} to consume")

    def start(self, workers: tuple[str, ...] = SERVICES) -> None:
        """Every API (and the named workers), started together, then waited for."""
        counts = {s: self.processes.log(f"{s}-worker").count("is consuming") for s in workers}
        for service in SERVICES:
            self.start_api(service, wait=False)
        for service in workers:
            self.start_worker(service, wait=False)
        for service in SERVICES:
            self.wait_api(service)
        for service in workers:
            self.wait_worker(service, counts[service])

    def start_workers(self, workers: tuple[str, ...] = SERVICES, **overrides: str) -> None:
        counts = {s: self.processes.log(f"{s}-worker").count("is consuming") for s in workers}
        for service in workers:
            self.start_worker(service, wait=False, **overrides)
        for service in workers:
            self.wait_worker(service, counts[service])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        if name in self.processes.running:
            self.processes.stop(name, sig)

    def stop_workers(self, workers: tuple[str, ...] = SERVICES) -> None:
        self._stop_together([f"{service}-worker" for service in workers])

    def stop_all(self) -> None:
        self._stop_together(list(self.processes.running))

    def _stop_together(self, names: list[str]) -> None:
        """SIGTERM to each, then wait for each: a graceful stop takes seconds, in parallel."""
        chosen = [
            (name, self.processes.running[name]) for name in names if name in self.processes.running
        ]
        for _, process in chosen:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, _ in chosen:
            self.processes.stop(name, signal.SIGTERM, timeout=20)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return self.processes.log(name)[-chars:]

    # -- commands

    def run(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            carepath(*args),
            env=self.env(**overrides),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # -- PostgreSQL

    def connect(self, service: str) -> psycopg.Connection[Any]:
        return psycopg.connect(plain_url(self.databases[service]), autocommit=True)

    def query(self, service: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect(service) as connection:
            return list(connection.execute(sql, params).fetchall())

    def execute(self, service: str, sql: str, *params: Any) -> None:
        with self.connect(service) as connection:
            connection.execute(sql, params)

    def terminate_connections(self) -> int:
        """pg_terminate_backend on every connection to this test's own databases."""
        names = [database_name(url) for url in self.databases.values()]
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
                (names,),
            ).fetchall()
        return len(rows)

    def feed_lag(self) -> dict[str, dict[str, Any]]:
        """Each consumer's feed figures as its API's /metrics reports them: the largest
        lag in seconds and in events over its feeds, and the events it recovered."""
        figures: dict[str, dict[str, Any]] = {}
        for service in SERVICES:
            text = httpx.get(f"{self.url(service)}/metrics", timeout=30).text
            mine = [
                line
                for line in text.splitlines()
                if line.startswith("carepath_feed_") and f'consumer="{service}"' in line
            ]

            def values(name: str, lines: list[str] = mine) -> list[float]:
                return [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name)]

            figures[service] = {
                "lag_s": max(values("carepath_feed_lag_seconds{"), default=0.0),
                "lag_events": int(max(values("carepath_feed_lag_events{"), default=0)),
                "recovered": int(sum(values("carepath_feed_recovered_events_total{"))),
            }
        return figures

    def unsent(self) -> dict[str, int]:
        return {
            service: int(
                self.query(service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0]
            )
            for service in SERVICES
        }


# --- the load and its ledger ----------------------------------------------------------------


@dataclass
class ReferralRecord:
    id: str
    patient_id: str
    target: str  # ketamine-infusion | psychology
    # The acknowledged triage decision: accept, reject, or None (not triaged, or unknown).
    decision: str | None = None
    # Whether the infusion course or therapy episode it opened was closed (acknowledged).
    closed: bool = False
    # A write on it was not acknowledged (5xx, no answer): it may or may not have happened.
    uncertain: bool = False
    close_planned: bool = False


@dataclass
class Ledger:
    """Every acknowledged (2xx) write, and what it should have caused."""

    patients: list[str] = field(default_factory=list)
    referrals: dict[str, ReferralRecord] = field(default_factory=dict)
    acknowledged: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def acknowledge(self) -> None:
        self.acknowledged += 1


def _headers(who: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*who)}"}


KETAMINE_BASELINE = {"phq9_items": [2, 2, 1, 1, 2, 1, 1, 1, 0], "pain_nrs": 8}
PSYCHOLOGY_BASELINE = {"phq9_items": [1, 2, 1, 1, 1, 1, 1, 1, 0]}


class LoadDriver:
    """A mixed load through the HTTP APIs, as the clinic's people would make it.

    Each patient: registered; referred to the infusion clinic (even numbers), to
    psychology (not multiples of 3), or both; most referrals accepted by the MDT, one in
    five rejected. Some accepted ones are later ended by the receiving service (an
    infusion course closed, a therapy episode discharged), which closes the referral.
    """

    def __init__(self, system: System, ledger: Ledger, *, label: str = "load") -> None:
        self.system = system
        self.ledger = ledger
        self.label = label
        self.counter = 0
        self.http = httpx.Client(timeout=30)
        self.referrer = _headers(REFERRER)
        self.mdt = _headers(MDT)
        self.clinician = _headers(INFUSION_CLINICIAN)
        self.stop_event = threading.Event()
        # Called with each new referral before it is triaged (a test's chance to arrange
        # a failure for the event its acceptance will send).
        self.before_triage: Callable[[ReferralRecord], None] | None = None

    def close(self) -> None:
        self.http.close()

    # -- one write

    def _write(self, what: str, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
        """The answer's JSON if the write was acknowledged (2xx), else None."""
        try:
            response = self.http.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as error:
            self.ledger.refused[f"{what}: {type(error).__name__}"] += 1
            return None
        if response.is_success:
            self.ledger.acknowledge()
            return response.json()
        self.ledger.refused[f"{what}: {response.status_code}"] += 1
        return None

    # -- the load

    def patients(self, count: int) -> None:
        for _ in range(count):
            if self.stop_event.is_set():
                return
            self.one_patient()

    def one_patient(self) -> None:
        number = self.counter
        self.counter += 1
        referrals_url = self.system.url("referrals")
        patient = self._write(
            "register",
            "POST",
            f"{referrals_url}/api/patients",
            {
                "given_name": f"Fault{number}",
                "family_name": self.label.title(),
                "birth_date": "1971-03-04",
                "sex": "female" if number % 2 else "male",
            },
            self.referrer,
        )
        if patient is None:
            return
        patient_id = patient["id"]
        self.ledger.patients.append(patient_id)
        targets = []
        if number % 2 == 0:
            targets.append("ketamine-infusion")
        if number % 3 != 0:
            targets.append("psychology")
        for target in targets:
            self.refer(patient_id, target, number)

    def refer(self, patient_id: str, target: str, number: int) -> None:
        referrals_url = self.system.url("referrals")
        body: dict[str, Any] = {
            "patient_id": patient_id,
            "target": target,
            "priority": "urgent" if number % 7 == 0 else "routine",
            "reason": "widespread pain with low mood despite treatment",
            "conditions": ["fibromyalgia", "depression"],
            "referrer": {"name": "Dr Fault", "role": "GP", "organisation": "Fault Practice"},
            "prior_treatments": (
                [{"name": "amitriptyline", "kind": "medicine", "outcome": "no relief"}]
                if target == "ketamine-infusion"
                else []
            ),
            "baseline": KETAMINE_BASELINE if target == "ketamine-infusion" else PSYCHOLOGY_BASELINE,
        }
        created = self._write(
            "refer", "POST", f"{referrals_url}/api/referrals", body, self.referrer
        )
        if created is None:
            return
        record = ReferralRecord(id=created["id"], patient_id=patient_id, target=target)
        self.ledger.referrals[record.id] = record
        if self.before_triage is not None:
            self.before_triage(record)
        decision = "reject" if number % 5 == 4 else "accept"
        triage: dict[str, Any] = {"decision": decision}
        if decision == "reject":
            triage["reason"] = "better met by the community pain service"
        answered = self._write(
            "triage",
            "POST",
            f"{referrals_url}/api/referrals/{record.id}/triage",
            triage,
            self.mdt,
        )
        if answered is None:
            record.uncertain = True
            return
        record.decision = decision
        if decision == "accept":
            # Every second infusion referral's course, every third episode, is ended.
            record.close_planned = (
                number % 4 == 0 if target == "ketamine-infusion" else number % 3 == 1
            )

    # -- ending care: needs the course or episode the consumer opened

    def pending_closures(self) -> list[ReferralRecord]:
        return [
            r
            for r in self.ledger.referrals.values()
            if r.close_planned and not r.closed and not r.uncertain
        ]

    def close_ready(self) -> int:
        """End the care of every planned referral whose course or episode exists now;
        returns how many are still waiting for theirs."""
        waiting = 0
        for record in self.pending_closures():
            if self.stop_event.is_set():
                break
            target_id = self._opened_for(record)
            if target_id is None:
                waiting += 1
                continue
            if record.target == "ketamine-infusion":
                url = f"{self.system.url('infusions')}/api/infusion-courses/{target_id}/close"
                done = self._write(
                    "close course", "POST", url, {"reason": "declined"}, self.clinician
                )
            else:
                url = f"{self.system.url('therapy')}/api/therapy-episodes/{target_id}/discharge"
                done = self._write("discharge", "POST", url, {"reason": "declined"}, self.mdt)
            if done is None:
                record.uncertain = True
            else:
                record.closed = True
        return waiting

    def close_all(self, timeout: float = RECOVERY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while self.close_ready() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not self.pending_closures(), (
            f"{len(self.pending_closures())} course(s)/episode(s) never opened to be closed"
        )

    def _opened_for(self, record: ReferralRecord) -> str | None:
        if record.target == "ketamine-infusion":
            url, headers = f"{self.system.url('infusions')}/api/infusion-courses", self.clinician
        else:
            url, headers = f"{self.system.url('therapy')}/api/therapy-episodes", self.mdt
        try:
            response = self.http.get(url, params={"patient_id": record.patient_id}, headers=headers)
        except httpx.HTTPError:
            return None
        if not response.is_success:
            return None
        for item in response.json()["items"]:
            if item["referral_id"] == record.id:
                return str(item["id"])
        return None

    def wait_opened(
        self, timeout: float = RECOVERY_TIMEOUT_S, excluding: frozenset[str] = frozenset()
    ) -> None:
        """Until every accepted referral's course or episode exists."""
        accepted = [
            r
            for r in self.ledger.referrals.values()
            if r.decision == "accept" and r.id not in excluding
        ]
        wait_until(
            lambda: all(self._opened_for(r) for r in accepted),
            timeout=timeout,
            interval=0.5,
            what="every accepted referral's course or episode",
        )

    def run(self, count: int) -> None:
        """The whole load: patients, then the endings (for a background thread)."""
        self.patients(count)
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            if not self.close_ready():
                return
            time.sleep(0.3)


class BackgroundLoad:
    """A LoadDriver.run on its own thread, so a fault can be injected under load."""

    def __init__(self, driver: LoadDriver, count: int) -> None:
        self.driver = driver
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(count,), daemon=True)

    def _run(self, count: int) -> None:
        try:
            self.driver.run(count)
        except BaseException as error:  # reported by join()
            self.error = error

    def start(self) -> BackgroundLoad:
        self.thread.start()
        return self

    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float = 2 * RECOVERY_TIMEOUT_S) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the load did not finish"
        if self.error is not None:
            raise self.error


# --- the check ------------------------------------------------------------------------------


@dataclass
class Findings:
    acknowledged: int = 0
    # An effect an acknowledged write should have had, missing.
    lost: list[str] = field(default_factory=list)
    # An effect present more than once.
    duplicated: list[str] = field(default_factory=list)
    # An effect no acknowledged write asked for (a course for a rejected referral).
    spurious: list[str] = field(default_factory=list)
    # Events in a producer's outbox that a subscribed consumer has not consumed.
    undelivered: list[str] = field(default_factory=list)
    unsent: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    rebuild: str = "not run"
    reconcile: str = "not run"

    @property
    def database_clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.spurious
            or self.undelivered
            or any(self.unsent.values())
            or any(self.dead_letters.values())
        )

    @property
    def passed(self) -> bool:
        return self.database_clean and self.rebuild == "ok" and self.reconcile == "ok"

    def summary(self) -> str:
        return (
            f"acknowledged={self.acknowledged} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} spurious={len(self.spurious)} "
            f"undelivered={len(self.undelivered)} unsent={sum(self.unsent.values())} "
            f"dead_letters={sum(self.dead_letters.values())} rebuild={self.rebuild} "
            f"reconcile={self.reconcile}"
        )

    def details(self, limit: int = 12) -> str:
        lines = [self.summary()]
        for name in ("lost", "duplicated", "spurious", "undelivered"):
            items: list[str] = getattr(self, name)
            lines += [f"  {name}: {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"  {name}: ... and {len(items) - limit} more")
        lines += [f"  unsent in {s}: {n}" for s, n in self.unsent.items() if n]
        lines += [f"  dead letters in {s}: {n}" for s, n in self.dead_letters.items() if n]
        return "\n".join(lines)


ENDED = ("cancelled", "finished")


def check(
    system: System,
    ledger: Ledger,
    *,
    expected_dead_letters: dict[str, int] | None = None,
    commands: bool = True,
) -> Findings:
    """Every acknowledged write's effects, read straight from each service's database;
    then (if those are all there) `carepath coordinator rebuild --check` and
    `carepath reconcile`."""
    found = Findings(acknowledged=ledger.acknowledged)
    expected_dead_letters = expected_dead_letters or {}

    # -- every event of every producer, consumed by every subscribed consumer
    outbox: dict[str, list[tuple[str, str, str]]] = {}
    for service in SERVICES:
        outbox[service] = [
            (str(event_id), kind, subject)
            for event_id, kind, subject in system.query(
                service, "SELECT event_id::text, type, subject_id FROM outbox"
            )
        ]
        found.unsent[service] = int(
            system.query(service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0]
        )
        waiting = int(
            system.query(service, "SELECT count(*) FROM dead_letter WHERE replayed_at IS NULL")[0][
                0
            ]
        )
        found.dead_letters[service] = waiting - expected_dead_letters.get(service, 0)
    inboxes = {
        service: {str(row[0]) for row in system.query(service, "SELECT event_id::text FROM inbox")}
        for service in SERVICES
    }
    for producer, rows in outbox.items():
        for event_id, kind, _ in rows:
            for consumer in sorted(consumers_of(kind)):
                if event_id not in inboxes[consumer]:
                    found.undelivered.append(f"{kind} {event_id} from {producer} -> {consumer}")

    # -- no event produced twice for one cause
    for service, kind, key in (
        ("infusions", "infusion.course.opened", "referral_id"),
        ("therapy", "therapy.episode.opened", "referral_id"),
        ("referrals", "referral.closed", "referral_id"),
    ):
        for value, count in system.query(
            service,
            "SELECT envelope->'data'->>%s, count(*) FROM outbox WHERE type = %s"
            " GROUP BY 1 HAVING count(*) > 1",
            key,
            kind,
        ):
            found.duplicated.append(f"{kind} x{count} for {key} {value}")
    for producer, kind, subject, sequence, count in system.query(
        "coordinator",
        "SELECT producer, subject_type, subject_id, sequence, count(*) FROM stored_event"
        " GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
    ):
        found.duplicated.append(f"stored event x{count}: {producer} {kind} {subject} #{sequence}")

    # -- the consumers' effects
    courses: Counter[str] = Counter(
        {
            str(r): int(n)
            for r, n in system.query(
                "infusions", "SELECT referral_id::text, count(*) FROM infusion_course GROUP BY 1"
            )
        }
    )
    course_ids = {
        str(r): str(c)
        for r, c in system.query(
            "infusions", "SELECT referral_id::text, id::text FROM infusion_course"
        )
    }
    episodes: Counter[str] = Counter(
        {
            str(r): int(n)
            for r, n in system.query(
                "therapy", "SELECT referral_id::text, count(*) FROM therapy_episode GROUP BY 1"
            )
        }
    )
    episode_ids = {
        str(r): str(e)
        for r, e in system.query(
            "therapy", "SELECT referral_id::text, id::text FROM therapy_episode"
        )
    }
    referral_status = {
        str(r): s for r, s in system.query("referrals", "SELECT id::text, status FROM referral")
    }
    closings: Counter[str] = Counter(
        {
            str(r): int(n)
            for r, n in system.query(
                "referrals",
                "SELECT referral_id::text, count(*) FROM referral_transition"
                " WHERE action = 'close' GROUP BY 1",
            )
        }
    )
    pathways = {
        str(patient): (int(count), document)
        for patient, count, document in system.query(
            "coordinator", "SELECT patient_id::text, event_count, document FROM pathway"
        )
    }
    stored = {
        str(patient): int(count)
        for patient, count in system.query(
            "coordinator", "SELECT patient_id::text, count(*) FROM stored_event GROUP BY 1"
        )
    }

    for patient_id in ledger.patients:
        if patient_id not in pathways:
            found.lost.append(f"pathway of patient {patient_id}")
            continue
        count, document = pathways[patient_id]
        timeline = [entry["event_id"] for entry in document.get("timeline", [])]
        if len(timeline) != len(set(timeline)):
            found.duplicated.append(f"pathway {patient_id}: an event twice in the timeline")
        if count != stored.get(patient_id, 0) or len(timeline) != count:
            found.duplicated.append(
                f"pathway {patient_id}: event_count {count}, timeline {len(timeline)},"
                f" stored {stored.get(patient_id, 0)}"
            )

    for record in ledger.referrals.values():
        infusion = record.target == "ketamine-infusion"
        opened, opened_ids = (courses, course_ids) if infusion else (episodes, episode_ids)
        what = "infusion course" if infusion else "therapy episode"
        if opened[record.id] > 1:
            found.duplicated.append(f"{opened[record.id]} {what}s for referral {record.id}")
        if record.decision == "accept" and opened[record.id] == 0:
            found.lost.append(f"{what} for accepted referral {record.id}")
        if record.decision != "accept" and not record.uncertain and opened[record.id]:
            found.spurious.append(
                f"{what} for {record.decision or 'untriaged'} referral {record.id}"
            )
        if record.closed:
            if referral_status.get(record.id) != "closed":
                found.lost.append(
                    f"referral {record.id} closed after its {what} ended"
                    f" (is {referral_status.get(record.id)})"
                )
            if closings[record.id] > 1:
                found.duplicated.append(f"referral {record.id} closed {closings[record.id]} times")

        # The coordinator's pathway: the referral, its status, the course or episode.
        pathway = pathways.get(record.patient_id)
        if pathway is None:
            found.lost.append(f"pathway with referral {record.id}")
            continue
        streams = pathway[1].get("streams", {})
        shown = [r for r in streams.get("referrals", []) if r["id"] == record.id]
        if not shown:
            found.lost.append(f"referral {record.id} on its pathway")
            continue
        status = shown[0]["status"]
        if record.closed:
            expected: tuple[str, ...] = ("closed",)
        elif record.decision == "accept":
            expected = ("accepted", "closed") if record.uncertain else ("accepted",)
        elif record.decision == "reject":
            expected = ("rejected",)
        elif record.uncertain:
            expected = ("received", "accepted", "rejected", "closed")
        else:
            expected = ("received",)
        if status not in expected:
            found.lost.append(
                f"referral {record.id} on its pathway is {status}, expected {'/'.join(expected)}"
            )
        if record.decision == "accept":
            stream = streams.get("infusion_course" if infusion else "therapy_episode") or {}
            if stream.get("id") != opened_ids.get(record.id):
                found.lost.append(f"{what} of referral {record.id} on its pathway")
            elif record.closed and stream.get("status") not in ENDED:
                found.lost.append(
                    f"{what} of referral {record.id} ended on its pathway"
                    f" (is {stream.get('status')})"
                )

    if commands and found.database_clean:
        run_commands(system, found)
    return found


def run_commands(system: System, found: Findings) -> None:
    """The operator's checks: every pathway equals its re-fold; no consumer misses an
    event of any feed it subscribes to."""
    rebuilt = system.run("coordinator", "rebuild", "--check")
    found.rebuild = "ok" if rebuilt.returncode == 0 else f"FAILED: {rebuilt.stdout.strip()[:300]}"
    reconciled = system.run("reconcile")
    found.reconcile = (
        "ok"
        if reconciled.returncode == 0
        else f"FAILED: {(reconciled.stdout + reconciled.stderr).strip()[-600:]}"
    )


@dataclass
class Recovery:
    findings: Findings
    seconds: float


def wait_for_recovery(
    system: System,
    ledger: Ledger,
    since: float,
    *,
    timeout: float = RECOVERY_TIMEOUT_S,
    expected_dead_letters: dict[str, int] | None = None,
) -> Recovery:
    """Check until every effect is there. The time to recover runs from ``since``
    (monotonic) to the first check of the databases that passes, if the operator's
    commands then agree. The whole check is repeated after a pause, so late duplicates
    are caught; that second one is the result."""
    deadline = since + timeout
    while True:
        try:
            findings = check(
                system, ledger, expected_dead_letters=expected_dead_letters, commands=False
            )
        except psycopg.Error as error:
            findings = Findings(acknowledged=ledger.acknowledged)
            findings.lost.append(f"database not answering: {type(error).__name__}")
        if findings.database_clean:
            recovered = time.monotonic() - since
            run_commands(system, findings)
            if findings.passed:
                break
        if time.monotonic() > deadline:
            return Recovery(findings, float("inf"))
        time.sleep(0.5)
    time.sleep(SETTLE_S)
    return Recovery(check(system, ledger, expected_dead_letters=expected_dead_letters), recovered)


FIGURES: list[str] = []


def report(name: str, recovery: Recovery, ledger: Ledger, emit: Callable[[str], None]) -> str:
    findings = recovery.findings
    recovered = f"{recovery.seconds:.1f}s" if recovery.seconds != float("inf") else "never"
    line = (
        f"FAULT {name}: acknowledged={findings.acknowledged} lost={len(findings.lost)}"
        f" duplicated={len(findings.duplicated)} recovered_in={recovered}"
    )
    extra = (
        f"  (spurious={len(findings.spurious)} undelivered={len(findings.undelivered)}"
        f" unsent={sum(findings.unsent.values())}"
        f" dead_letters={sum(findings.dead_letters.values())}"
        f" rebuild={findings.rebuild.split(':')[0]} reconcile={findings.reconcile.split(':')[0]}"
        f" refused={sum(ledger.refused.values())})"
    )
    FIGURES.append(line)
    emit(line + extra)
    return line


def assert_recovered(system: System, recovery: Recovery) -> None:
    findings = recovery.findings
    logs = ", ".join(sorted(p.name for p in system.log_dir.glob("*.log")))
    assert findings.passed and not findings.lost and not findings.duplicated, (
        f"{findings.details()}\nlogs in {system.log_dir}: {logs}\n{troubles(system.log_dir)}"
    )


TROUBLE = re.compile(r'"level": "(warning|error|critical)"|Traceback|Error|ERROR|CRITICAL')


def troubles(log_dir: Path, per_log: int = 25) -> str:
    """The last warnings and errors of each process: CI keeps the output, not the files."""
    parts = []
    for path in sorted(log_dir.glob("*.log")):
        lines = [line[:400] for line in path.read_text(errors="replace").splitlines()]
        found = [line for line in lines if TROUBLE.search(line)][-per_log:]
        parts.append(
            f"--- {path.name}: {len(lines)} lines; last troubles:\n"
            + "\n".join(found or ["(none)"])
            + "\n  last lines:\n"
            + "\n".join(lines[-3:])
        )
    return "\n".join(parts)
