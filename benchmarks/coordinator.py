"""Benchmark the coordinator: 1,000 patients' 100,000 events folded, rebuilt and read.

Runs carepath in distributed mode as subprocesses against a throwaway PostgreSQL
database and Redis DB 14, and measures:

1. the fold: P patients' histories of E realistic events each (registration, referrals,
   infusion course and sessions, therapy appointments and questionnaires ...) enqueued
   onto the coordinator's queue as the relay sends them, then consumed by
   `carepath worker coordinator`: events folded into pathways per second,
2. `carepath coordinator rebuild --check` over the same store: seconds, pathways/s, and
   what it reports (it should find no difference),
3. what one re-fold of one patient's E-event history costs, in this process, and what
   one event applied to the kept fold of the others costs,
4. GET /api/pathways/{patient_id} on `carepath serve coordinator` under C concurrent
   clients for D seconds: requests/s, p50/p99,

each beside the raw dramatiq no-op throughput and the GET /health throughput of the same
run, and the peak RSS (VmHWM) of the worker and the server.

Usage: .venv/bin/python benchmarks/coordinator.py [--patients P] [--events-per-patient E]
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import itertools
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import msgspec
import psycopg
import redis
from harness import (
    CAREPATH,
    PG_BASE,
    REDIS_URL,
    ROOT,
    Processes,
    base_env,
    create_databases,
    drop_databases,
    free_port,
    machine,
    migrate,
    percentiles,
    timed,
    wait_until,
    write_results,
)
from inbox import PG_PLAIN, closed_loop, machine_busy, process_cpu_s
from pipeline import raw_dramatiq
from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.coordinator.handlers import handle_event, refresh_pathway, stored_events
from services.coordinator.models import StoredEvent
from services.coordinator.projection import place, project
from services.infusions.domain import maintenance_due, response
from shared.auth import Role, issue_token
from shared.db import make_engine, make_session_factory
from shared.events import Actor, Subject, decode_envelope, encode_envelope, new_event
from shared.events import catalogue as c
from shared.measures import GAD7, PHQ9, Instrument, score
from shared.messaging import make_broker, queue_sender
from shared.settings import BrokerKind, PlatformSettings

SERVICE = "coordinator"
PEERS = ("referrals", "infusions", "therapy")
GRANIAN = str(Path(sys.executable).parent / "granian")
UVICORN = str(Path(sys.executable).parent / "uvicorn")
# How each server is started on a port with N worker processes; both run `carepath serve`'s
# own app (services.cli:service_app, for the service in CAREPATH_SERVE).
SERVERS: dict[str, Callable[[int, str], list[str]]] = {
    "uvicorn": lambda port, workers: [
        *(CAREPATH, "serve", SERVICE, "--port", str(port), "--workers", workers)
    ],
    # uvicorn as carepath served before issue 15: h11's pure-Python parser, asyncio's loop.
    "uvicorn-h11": lambda port, workers: [
        *(UVICORN, "--factory", "--http", "services.http_server:H11WithoutNagle"),
        *("--loop", "asyncio", "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", workers, "--no-access-log", "services.cli:service_app"),
    ],
    "granian": lambda port, workers: [
        *(GRANIAN, "--interface", "asgi", "--factory", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", workers, "services.cli:service_app"),
    ],
}
PATHWAY = "/api/pathways/{patient_id}"  # each request's id is filled in by the client's hook
CONDITIONS = ("fibromyalgia", "neuropathic-pain", "crps", "spinal-pain", "depression", "other")
INDUCTION = 6  # infusions in the induction series, then maintenance
MAINTENANCE_DAYS = 28
DNA_THRESHOLD = 2
CLOSING_EVENTS = 5  # course finished + closed, referral closed, discharged, referral closed
ROLES = {"referrals": "mdt", "infusions": "infusion-clinician", "therapy": "psychologist"}


# --- the histories ---------------------------------------------------------------------


def answers(instrument: Instrument, total: int, rng: random.Random, last: int = 0) -> list[int]:
    """Item answers adding up to ``total`` (as far as the items allow), the last one fixed."""
    items = [0] * (instrument.item_count - 1)
    room = [i for i in range(len(items))]
    for _ in range(min(total - last, len(items) * instrument.item_max)):
        pick = rng.choice(room)
        items[pick] += 1
        if items[pick] == instrument.item_max:
            room.remove(pick)
    return [*items, last]


class History:
    """One patient's events in time order, each aggregate numbered 1, 2, 3 ... as the
    producers' outboxes number them, so the coordinator sees no gaps.

    ``limit`` caps the events kept: a block that would pass it is cut short, as a live
    system's history is cut off at any moment.
    """

    def __init__(self, patient_id: UUID, start: datetime, rng: random.Random, limit: int) -> None:
        self.patient_id = patient_id
        self.at = start
        self.rng = rng
        self.limit = limit
        self.events: list[dict[str, Any]] = []
        self.sequences: dict[tuple[str, str], int] = {}
        # The patient: scores at referral, and whether the treatments help.
        self.pain_base = rng.randint(6, 9)
        self.phq9_base = rng.randint(10, 22)
        self.gad7_base = rng.randint(8, 18)
        self.responder = rng.random() < 0.6
        self.referrals: dict[str, dict[str, Any]] = {}
        self.course_id, self.episode_id = uuid4(), uuid4()
        self.total_mg = 0.0
        self.clinician = f"bench-psychologist-{rng.randint(1, 6)}"
        self.infusions = self.appointments = self.attended = self.missed = 0

    def full(self) -> bool:
        return len(self.events) >= self.limit

    def wait(self, low_h: float, high_h: float) -> datetime:
        self.at += timedelta(hours=self.rng.uniform(low_h, high_h))
        return self.at

    def add(self, event_type: str, data: msgspec.Struct, producer: str, subject: Subject) -> None:
        if self.full():
            return
        key = (subject.type, subject.id)
        self.sequences[key] = sequence = self.sequences.get(key, 0) + 1
        envelope = new_event(
            type=event_type,
            data=data,
            producer=producer,
            patient_id=self.patient_id,
            subject=subject,
            actor=Actor(user_id=f"bench-{ROLES[producer]}", role=ROLES[producer]),
            correlation_id=uuid4().hex,
            occurred_at=self.at,
        )
        self.events.append(encode_envelope(msgspec.structs.replace(envelope, sequence=sequence)))

    def improved(self, base: int, best_fall: float, progress: int, top: int) -> int:
        """A score that falls towards ``best_fall`` over the first sessions if the
        treatment helps, and wobbles around the baseline if not."""
        fall = best_fall * min(1.0, progress / 4) if self.responder else 0.0
        return max(0, min(top, round(base * (1 - fall)) + self.rng.randint(-1, 1)))

    def item9(self) -> int:
        return 1 if self.rng.random() < 0.02 else 0

    # referrals ...

    def referral(self, target: c.ReferralTarget) -> None:
        referral_id = uuid4()
        at = self.wait(1, 72)
        facts: dict[str, Any] = {
            "id": referral_id,
            "target": target,
            "priority": "urgent" if self.rng.random() < 0.15 else "routine",
            "conditions": self.rng.sample(CONDITIONS, 2),
            "received_at": at,
            "baseline": c.BaselineScores(
                phq9_total=self.phq9_base, phq9_item9=0, pain_nrs=self.pain_base
            ),
        }
        self.referrals[target] = facts
        self.add(
            "referral.received",
            c.ReferralReceived(
                referral_id=referral_id,
                target=target,
                priority=facts["priority"],
                conditions=facts["conditions"],
                referrer_role="GP",
                prior_treatment_count=self.rng.randint(0, 3),
                received_at=at,
                baseline=facts["baseline"],
            ),
            "referrals",
            Subject(type="referral", id=str(referral_id)),
        )

    def accept(self, target: c.ReferralTarget) -> None:
        facts = self.referrals[target]
        at = self.wait(24, 240)
        self.add(
            "referral.accepted",
            c.ReferralAccepted(
                referral_id=facts["id"],
                target=target,
                priority=facts["priority"],
                conditions=facts["conditions"],
                accepted_at=at,
                baseline=facts["baseline"],
                received_at=facts["received_at"],
            ),
            "referrals",
            Subject(type="referral", id=str(facts["id"])),
        )

    def close_referral(self, target: c.ReferralTarget, closed_by: str) -> None:
        facts = self.referrals[target]
        self.add(
            "referral.closed",
            c.ReferralClosed(
                referral_id=facts["id"],
                target=target,
                closed_at=self.wait(0.01, 0.1),
                closed_by=closed_by,
                outcome="completed",
            ),
            "referrals",
            Subject(type="referral", id=str(facts["id"])),
        )

    # infusions ...

    def course(self, event_type: str, data: msgspec.Struct) -> None:
        self.add(
            event_type, data, "infusions", Subject(type="infusion-course", id=str(self.course_id))
        )

    def open_course(self) -> None:
        facts, course_id = self.referrals["ketamine-infusion"], self.course_id
        at = self.wait(24, 168)
        self.course(
            "infusion.course.opened",
            c.InfusionCourseOpened(
                course_id=course_id,
                referral_id=facts["id"],
                priority=facts["priority"],
                opened_at=at,
            ),
        )
        at = self.wait(72, 336)
        self.course(
            "infusion.assessment.recorded",
            c.InfusionAssessmentRecorded(
                course_id=course_id,
                assessment_id=uuid4(),
                outcome="eligible",
                blocked_by=[],
                cautions_overridden=[],
                pain_nrs=self.pain_base,
                phq9_total=self.phq9_base,
                phq9_item9=0,
                opioid_mme_per_day=self.rng.choice((0.0, 15.0, 30.0, 45.5)),
                assessed_at=at,
            ),
        )
        at = self.wait(1, 48)
        weight = self.rng.uniform(55, 110)
        self.total_mg = round(0.5 * weight, 1)
        self.course(
            "infusion.plan.agreed",
            c.InfusionPlanAgreed(
                course_id=course_id,
                plan_id=uuid4(),
                indication="both",
                total_mg=self.total_mg,
                rate_mg_per_h=round(self.total_mg / 0.67, 1),
                induction_count=INDUCTION,
                induction_spacing_days=3,
                maintenance_interval_days=MAINTENANCE_DAYS,
                overridden_fields=[],
                agreed_at=at,
            ),
        )
        self.course(
            "infusion.course.status_changed",
            c.InfusionCourseStatusChanged(
                course_id=course_id, status="active", previous_status="planned", changed_at=at
            ),
        )

    def infusion(self) -> None:
        """Scheduled, started, perhaps vitals out of range or a mild adverse event, done."""
        self.infusions += 1
        number, course_id, session_id = self.infusions, self.course_id, uuid4()
        kind: Any = "induction" if number <= INDUCTION else "maintenance"
        at = self.wait(1, 24)
        self.course(
            "infusion.session.scheduled",
            c.InfusionSessionScheduled(
                course_id=course_id,
                session_id=session_id,
                number=number,
                kind=kind,
                scheduled_start=at + timedelta(days=2),
                scheduled_end=at + timedelta(days=2, hours=2),
            ),
        )
        at = self.wait(48, 48.5)
        self.course(
            "infusion.session.started",
            c.InfusionSessionStarted(
                course_id=course_id, session_id=session_id, number=number, started_at=at
            ),
        )
        if self.rng.random() < 0.05:
            self.course(
                "infusion.vitals.out_of_range",
                c.InfusionVitalsOutOfRange(
                    course_id=course_id,
                    session_id=session_id,
                    phase="during",
                    systolic=182,
                    diastolic=96,
                    heart_rate=92,
                    spo2=97,
                    crossed=["systolic"],
                    measured_at=self.wait(0.3, 0.6),
                ),
            )
        if self.rng.random() < 0.04:
            self.course(
                "infusion.adverse_event.recorded",
                c.InfusionAdverseEventRecorded(
                    course_id=course_id,
                    session_id=session_id,
                    code="nausea",
                    severity="mild",
                    serious=False,
                    recorded_at=self.wait(0.1, 0.5),
                ),
            )
        at = self.wait(1.5, 2.5)
        pain_after = self.improved(self.pain_base, 0.45, number, 10)
        phq9 = score(PHQ9, answers(PHQ9, self.improved(self.phq9_base, 0.5, number, 27), self.rng))
        result = response(self.pain_base, pain_after, self.phq9_base, phq9.total)
        self.course(
            "infusion.session.completed",
            c.InfusionSessionCompleted(
                course_id=course_id,
                session_id=session_id,
                number=number,
                kind=kind,
                completed_at=at,
                given_mg=self.total_mg,
                pain_before=min(10, pain_after + self.rng.randint(0, 2)),
                pain_after=pain_after,
                phq9_total=phq9.total,
                phq9_item9=phq9.items[8],
                response=result,
                completed_sessions=number,
                maintenance_due_at=maintenance_due(at, number, INDUCTION, MAINTENANCE_DAYS),
            ),
        )

    # therapy ...

    def episode(self, event_type: str, data: msgspec.Struct) -> None:
        subject = Subject(type="therapy-episode", id=str(self.episode_id))
        self.add(event_type, data, "therapy", subject)

    def open_episode(self) -> None:
        facts = self.referrals["psychology"]
        at = self.wait(1, 72)
        self.episode(
            "therapy.episode.opened",
            c.TherapyEpisodeOpened(
                episode_id=self.episode_id,
                referral_id=facts["id"],
                priority=facts["priority"],
                referred_at=facts["received_at"],
                opened_at=at,
            ),
        )
        self.episode(
            "therapy.episode.assigned",
            c.TherapyEpisodeAssigned(
                episode_id=self.episode_id,
                clinician_id=self.clinician,
                assigned_at=self.wait(1, 240),
            ),
        )

    def appointment(self) -> None:
        """Booked, then missed (10 %), or checked in, attended, PHQ-9 and GAD-7 recorded."""
        self.appointments += 1
        appointment_id, episode_id = uuid4(), self.episode_id
        kind: Any = "assessment" if self.appointments == 1 else "cbt"
        if self.appointments % 6 == 0:
            kind = "review"
        booked = self.wait(1, 24)
        start = booked + timedelta(days=self.rng.randint(2, 7))
        end = start + timedelta(minutes=50)
        self.episode(
            "appointment.booked",
            c.AppointmentBooked(
                episode_id=episode_id,
                appointment_id=appointment_id,
                kind=kind,
                mode="video" if self.rng.random() < 0.5 else "in-person",
                clinician_id=self.clinician,
                start=start,
                end=end,
            ),
        )
        self.at = start

        def status(event_type: str, previous: str, new: str) -> None:
            self.episode(
                event_type,
                c.AppointmentStatusChanged(
                    episode_id=episode_id,
                    appointment_id=appointment_id,
                    kind=kind,
                    start=start,
                    previous_status=previous,
                    status=new,
                    attended_treatment=self.attended,
                    dna_count=self.missed,
                ),
            )

        if self.rng.random() < 0.1:
            self.missed += 1
            self.wait(0.5, 1)
            status("appointment.missed", "booked", "noshow")
            if self.missed == DNA_THRESHOLD:
                self.episode(
                    "therapy.dna_threshold_reached",
                    c.TherapyDnaThresholdReached(
                        episode_id=episode_id,
                        dna_count=self.missed,
                        threshold=DNA_THRESHOLD,
                        reached_at=self.at,
                    ),
                )
            return
        self.at = start - timedelta(minutes=self.rng.randint(2, 15))
        status("appointment.checked_in", "booked", "arrived")
        self.at = end
        self.attended += kind != "assessment"
        status("appointment.attended", "arrived", "fulfilled")
        item9 = self.item9()
        progress = self.attended
        phq9 = score(
            PHQ9,
            answers(PHQ9, self.improved(self.phq9_base, 0.5, progress, 27), self.rng, item9),
        )
        gad7 = score(
            GAD7, answers(GAD7, self.improved(self.gad7_base, 0.5, progress, 21), self.rng)
        )
        for measured in (phq9, gad7):
            self.episode(
                "measure.recorded",
                c.MeasureRecorded(
                    episode_id=episode_id,
                    appointment_id=appointment_id,
                    instrument=measured.instrument,  # type: ignore[arg-type]
                    total=measured.total,
                    band=measured.band,
                    item9=item9 if measured is phq9 else None,
                    recorded_at=self.wait(0.01, 0.05),
                ),
            )
        if item9:
            self.episode(
                "measure.risk_flagged",
                c.MeasureRiskFlagged(
                    episode_id=episode_id,
                    appointment_id=appointment_id,
                    item9=item9,
                    recorded_at=self.at,
                ),
            )

    def finish(self) -> None:
        """Both treatments completed: the course and the episode closed, both referrals too."""
        at = self.wait(24, 168)
        self.course(
            "infusion.course.status_changed",
            c.InfusionCourseStatusChanged(
                course_id=self.course_id, status="finished", previous_status="active", changed_at=at
            ),
        )
        self.course(
            "infusion.course.closed",
            c.InfusionCourseClosed(
                course_id=self.course_id,
                referral_id=self.referrals["ketamine-infusion"]["id"],
                reason="completed",
                closed_at=at,
            ),
        )
        self.close_referral("ketamine-infusion", "infusion.course.closed")
        self.episode(
            "therapy.episode.discharged",
            c.TherapyEpisodeDischarged(
                episode_id=self.episode_id,
                referral_id=self.referrals["psychology"]["id"],
                reason="completed",
                discharged_at=self.wait(24, 168),
            ),
        )
        self.close_referral("psychology", "therapy.episode.discharged")


def patient_history(index: int, events: int, seed: int, now: datetime) -> list[dict[str, Any]]:
    """``events`` valid envelopes (JSON-ready, as the relay sends them) for one patient."""
    rng = random.Random(f"{seed}-{index}")
    patient_id = UUID(int=rng.getrandbits(128), version=4)
    start = now - timedelta(days=rng.uniform(200, 730))
    # About a third finish both treatments; the others are still in them.
    finishes = events >= 4 * CLOSING_EVENTS and rng.random() < 0.3
    history = History(patient_id, start, rng, events - (CLOSING_EVENTS if finishes else 0))
    history.add(
        "patient.registered",
        c.PatientRegistered(patient_id=patient_id),
        "referrals",
        Subject(type="patient", id=str(patient_id)),
    )
    history.referral("ketamine-infusion")
    history.referral("psychology")
    history.accept("ketamine-infusion")
    history.accept("psychology")
    history.open_course()
    history.open_episode()
    while not history.full():
        history.infusion()
        history.appointment()
        history.appointment()
    if finishes:
        history.limit = events
        history.finish()
    return history.events


def make_histories(patients: int, events: int, seed: int) -> dict[str, Any]:
    """Every patient's history (under "histories"), each event checked as the consumer
    checks it on receipt."""
    started = time.monotonic()
    now = datetime.now(UTC)
    histories = [patient_history(i, events, seed, now) for i in range(patients)]
    types: dict[str, int] = {}
    for history in histories:
        for raw in history:
            decode_envelope(raw)  # raises InvalidEvent on anything the consumer would refuse
            types[raw["type"]] = types.get(raw["type"], 0) + 1
    return {
        "histories": histories,
        "seconds": time.monotonic() - started,
        "events": sum(len(history) for history in histories),
        "types": dict(sorted(types.items(), key=lambda item: -item[1])),
    }


# --- phases ----------------------------------------------------------------------------


def row(engine: Engine, sql: str) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(sql)).one())


def enqueue(histories: list[list[dict[str, Any]]], namespace: str, secret: str) -> dict[str, Any]:
    """Every event onto the coordinator's queue with the relay's own sender, patient by
    patient in turn (each patient's 1st event, then each one's 2nd ...), as a clinic's
    events interleave."""
    platform = PlatformSettings(
        broker=BrokerKind.redis, redis_url=REDIS_URL, redis_namespace=namespace, jwt_secret=secret
    )
    broker = make_broker(platform)
    send = queue_sender(broker)
    sent = 0
    started = time.monotonic()
    try:
        for turn in itertools.zip_longest(*histories):
            for envelope in turn:
                if envelope is not None:
                    send(SERVICE, envelope)
                    sent += 1
    finally:
        broker.close()
    elapsed = time.monotonic() - started
    return {"messages": sent, "seconds": elapsed, "msgs_per_s": sent / elapsed}


COMPLETE_PATHWAYS = """
SELECT count(*) FROM pathway p
JOIN (SELECT patient_id, count(*) AS n FROM stored_event GROUP BY patient_id) s USING (patient_id)
WHERE p.event_count = s.n
"""


def fold(
    procs: Processes, url: str, total: int, patients: int, processes: int = 1
) -> dict[str, Any]:
    """`carepath worker coordinator` (one process or several, as a deployment scales out)
    starts on a full queue; the clock runs from the last one's "consuming" line until
    every event is stored and every pathway counts them all."""
    names = [f"worker-coordinator-{n}" for n in range(1, processes + 1)]
    engine = make_engine(url)
    progress: list[tuple[float, int]] = []
    every = 0.02 if total <= 5_000 else 0.5  # count(*) over the store is not free
    try:
        workers = [procs.start(name, [CAREPATH, "worker", SERVICE]) for name in names]
        started = max(procs.wait_for_log(name, "worker is consuming") for name in names)
        cpu_before = sum(process_cpu_s(worker.pid) for worker in workers)
        busy_before = machine_busy()

        def all_stored() -> bool:
            for name in names:
                procs.check_running(name)
            stored, dead = row(
                engine,
                "SELECT (SELECT count(*) FROM stored_event), (SELECT count(*) FROM dead_letter)",
            )
            progress.append((time.monotonic() - started, int(stored)))
            if dead:
                raise RuntimeError(f"{dead} dead letter(s); see the worker logs in {procs.log_dir}")
            return int(stored) >= total

        stored = wait_until(all_stored, max(300, total / 10), every, "every event stored")
        complete = wait_until(
            lambda: int(row(engine, COMPLETE_PATHWAYS)[0]) >= patients,
            60,
            every,
            "every pathway to count its patient's events",
        )
        cpu = sum(process_cpu_s(worker.pid) for worker in workers) - cpu_before
        busy_after = machine_busy()
        pathways, full, dead, alerts = row(
            engine,
            f"SELECT (SELECT count(*) FROM pathway), ({COMPLETE_PATHWAYS}), "
            "(SELECT count(*) FROM dead_letter), (SELECT count(*) FROM pathway_alert)",
        )
        stages = row(
            engine,
            "SELECT json_object_agg(stage, n) FROM "
            "(SELECT stage, count(*) AS n FROM pathway GROUP BY stage) s",
        )[0]
        rss = max((procs.peak_rss(name) or 0.0 for name in names), default=0.0)
        gaps = sum(procs.log(name).count("pathway.gap_detected") for name in names)
    finally:
        procs.stop(*names)
        engine.dispose()
    seconds = complete - started
    first = next((t for t, n in progress if n > 0), None)
    deciles: list[float | None] = []
    for tenth in range(10):  # events/s in each tenth of the events, in the order folded
        low, high = total * tenth / 10, total * (tenth + 1) / 10
        t_low = 0.0 if tenth == 0 else next(t for t, n in progress if n >= low)
        t_high = next(t for t, n in progress if n >= high)
        deciles.append((high - low) / (t_high - t_low) if t_high > t_low else None)
    return {
        "events": total,
        "seconds": seconds,
        "events_per_s": total / seconds,
        "all_stored_seconds": stored - started,
        "first_event_stored_s": first,
        "events_per_s_by_tenth": deciles,
        "worker_cpu_s": cpu,
        "worker_cpu_ms_per_event": cpu * 1000 / total,
        "machine_cpu_busy": (busy_after[0] - busy_before[0])
        / max(busy_after[1] - busy_before[1], 1.0),
        "pathways": int(pathways),
        "pathways_complete": int(full),
        "dead_letters": int(dead),
        "pathway_alerts": int(alerts),
        "stages": stages,
        "gap_logs": gaps,
        "worker_processes": processes,
        "worker_peak_rss_mib": rss,
        "progress_samples": len(progress),
    }


def cli(
    env: dict[str, str], *args: str, timeout_s: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [CAREPATH, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    return time.monotonic() - started, done


def rebuild_check(env: dict[str, str], patients: int, total: int) -> dict[str, Any]:
    """`carepath coordinator rebuild --check` as an operator runs it, start-up included."""
    seconds, done = cli(env, SERVICE, "rebuild", "--check", timeout_s=max(600, total / 20))
    # Start-up alone: the same command line's imports and settings, one token minted.
    startup, token = cli(env, "token", "--role", "mdt", "--user", "bench", timeout_s=60)
    return {
        "seconds": seconds,
        "pathways_per_s": patients / seconds,
        "events_per_s": total / seconds,
        "exit_code": done.returncode,
        "report": done.stdout.strip().splitlines()[0] if done.stdout.strip() else "",
        "differing": done.stdout.strip().splitlines()[1:],
        "stderr_tail": done.stderr[-2000:] if done.returncode else "",
        "cli_startup_s": startup,
        "seconds_less_startup": seconds - startup,
        "token_ok": token.returncode == 0,
    }


def refold_cost(url: str, patient_ids: list[str], samples: int, seed: int) -> dict[str, Any]:
    """One patient's re-fold, in this process, split into its parts; the writes are
    rolled back. This is the work the worker does for an event that arrives late (or
    when it has no fold of the pathway kept); then, for comparison, one event that
    comes after the others, applied to the kept fold as the worker applies it."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    chosen = [
        UUID(p) for p in random.Random(seed).sample(patient_ids, min(samples, len(patient_ids)))
    ]
    load_ms: list[float] = []
    fold_ms: list[float] = []
    encode_ms: list[float] = []
    refresh_ms: list[float] = []
    apply_ms: list[float] = []
    lengths: list[int] = []
    try:
        with sessions() as session:
            for patient_id in chosen:
                t0 = time.perf_counter()
                events = stored_events(session, patient_id)
                t1 = time.perf_counter()
                pathway = project(patient_id, events)
                t2 = time.perf_counter()
                msgspec.to_builtins(pathway)
                t3 = time.perf_counter()
                load_ms.append((t1 - t0) * 1000)
                fold_ms.append((t2 - t1) * 1000)
                encode_ms.append((t3 - t2) * 1000)
                lengths.append(len(events))
            for patient_id in chosen:
                t0 = time.perf_counter()
                refresh_pathway(session, patient_id)
                session.flush()
                refresh_ms.append((time.perf_counter() - t0) * 1000)
            session.rollback()
            # The worker's path for an event that comes after the others: its last event
            # taken out of the store, the rest folded (and the fold kept, as the worker
            # keeps it), then the event consumed again: applied to the kept fold.
            for patient_id in chosen:
                last = max(stored_events(session, patient_id), key=place)
                stored = session.get(StoredEvent, last.event_id)
                session.delete(stored)
                session.flush()
                refresh_pathway(session, patient_id)
                session.flush()
                t0 = time.perf_counter()
                handle_event(session, last)
                session.flush()
                apply_ms.append((time.perf_counter() - t0) * 1000)
                session.rollback()
    finally:
        engine.dispose()
    return {
        "patients": len(chosen),
        "history_length": percentiles([float(n) for n in lengths]),
        "load_and_decode_ms": percentiles(load_ms),
        "fold_ms": percentiles(fold_ms),
        "to_builtins_ms": percentiles(encode_ms),
        "refresh_pathway_ms": percentiles(refresh_ms),
        "handle_event_applied_ms": percentiles(apply_ms),
    }


def pathway_client(
    base_url: str, token: str | None, patient_ids: list[str], seed: int
) -> Callable[[], httpx.Client]:
    """A maker of one-connection clients; with patients, each request asks for a random
    one's pathway (a request hook fills in the id), each client with its own generator."""
    numbers = itertools.count()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    def make() -> httpx.Client:
        rng = random.Random(f"{seed}-client-{next(numbers)}")

        def any_patient(request: httpx.Request) -> None:
            request.url = request.url.copy_with(path=f"/api/pathways/{rng.choice(patient_ids)}")

        hooks = {"request": [any_patient]} if patient_ids else {}
        return httpx.Client(
            base_url=base_url, headers=headers, timeout=10, limits=limits, event_hooks=hooks
        )

    return make


def check_answers(base_url: str, token: str, patient_id: str, events: int) -> dict[str, Any]:
    """The load means something only if the answer is right: look at one first."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        answer = client.get(f"/api/pathways/{patient_id}", headers=auth)
        answer.raise_for_status()
        body = answer.json()
        if body["event_count"] != events or len(body["timeline"]) != events:
            raise AssertionError(
                f"pathway of {patient_id}: event_count {body['event_count']}, "
                f"{len(body['timeline'])} on the timeline, expected {events}"
            )
        unknown = client.get(f"/api/pathways/{uuid4()}", headers=auth).status_code
        anonymous = client.get(f"/api/pathways/{patient_id}").status_code
    if unknown != 404 or anonymous != 401:
        raise AssertionError(f"unknown patient gave {unknown}, no token gave {anonymous}")
    return {
        "bytes": len(answer.content),
        "stage": body["stage"],
        "alerts": len(body["alerts"]),
        "name_status": body.get("name_status"),
        "measures": {name: len(points) for name, points in body["measures"].items()},
    }


def serve_names(
    procs: Processes, env: dict[str, str], database: str, base_url: str, patient_ids: list[str]
) -> dict[str, Any]:
    """The referrals service, with a patient row for every pathway (COPY), on its own port:
    each read then asks it for the name, and it audits that, as in a clinic."""
    create_databases([database])
    migrate("referrals", env)
    registered = datetime.now(UTC) - timedelta(days=30)
    with psycopg.connect(f"{PG_PLAIN}/{database}") as conn:
        with conn.cursor() as cur:
            columns = "id, given_name, family_name, birth_date, sex, contact_preference"
            with cur.copy(
                f"COPY patient ({columns}, registered_by, registered_at) FROM STDIN"
            ) as copy:
                for index, patient_id in enumerate(patient_ids):
                    born = datetime(1960, 1, 1).date() + timedelta(days=index)
                    row = (patient_id, "Bench", f"Patient{index:05d}", born, "other", "phone")
                    copy.write_row((*row, "bench", registered))
        conn.commit()
    port = base_url.rsplit(":", 1)[1]
    procs.start("api-referrals", [CAREPATH, "serve", "referrals", "--port", port])
    procs.wait_for_health("api-referrals", base_url)
    return {"patients": len(patient_ids), "url": base_url}


def reads(
    procs: Processes,
    url: str,
    token: str,
    patient_ids: list[str],
    events: int,
    args: argparse.Namespace,
    server: str = "uvicorn:1",
) -> dict[str, Any]:
    """GET /health, then GET /api/pathways/{id}, each under the same closed loop, on one
    server (`uvicorn:N`: `carepath serve --workers N`; `granian:N`: granian's N workers
    running the same app)."""
    kind, workers = server.split(":")
    name = f"api-coordinator-{kind}-{workers}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server_process = procs.start(name, SERVERS[kind](port, workers))
    procs.wait_for_health(name, base_url)
    # Every worker process up, not just the first to answer.
    procs.wait_for_log(name, "carepath.started", timeout_s=60, times=int(workers))
    engine = make_engine(url)
    try:
        checks = check_answers(base_url, token, patient_ids[0], events)
        loop: dict[str, Any] = {
            "clients": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "server_pid": server_process.pid,
        }
        health = closed_loop(
            "health", pathway_client(base_url, None, [], args.seed), "/health", {}, **loop
        )
        audit_before = int(row(engine, "SELECT count(*) FROM audit_log")[0])
        pathways = closed_loop(
            "pathway", pathway_client(base_url, token, patient_ids, args.seed), PATHWAY, {}, **loop
        )
        # Every pathway GET writes one audit row (who read whose pathway, when).
        pathways["audit_rows_written"] = (
            int(row(engine, "SELECT count(*) FROM audit_log")[0]) - audit_before
        )
        pathways["audit_rows_expected"] = pathways["requests"] + pathways["ok_during_warmup"]
        rss = procs.peak_rss(name)
    finally:
        procs.stop(name)
        engine.dispose()
    return {
        "server": server,
        "checks": checks,
        "health": health,
        "pathway": pathways,
        "server_peak_rss_mib": rss,
    }


def code_stamp() -> tuple[tuple[str, float], ...]:
    """Every Python file of the code under test, with its modification time."""
    files = [f for top in ("services", "shared") for f in (ROOT / top).rglob("*.py")]
    return tuple(sorted((str(f.relative_to(ROOT)), f.stat().st_mtime) for f in files))


# --- report ----------------------------------------------------------------------------


def ms(figures: dict[str, float], *points: str) -> str:
    return " / ".join(f"{figures[p]:.1f}" for p in points) if figures else "-"


def rate(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def mib(value: float | None) -> str:
    return f"{value:.1f} MiB" if value is not None else "n/a"


def print_report(result: dict[str, Any]) -> None:
    machine, settings = result["machine"], result["settings"]
    print(f"\nmachine: {machine['nproc']} CPUs, Python {machine['python']}, {machine['platform']}")
    print("settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()))
    made, queued, raw = result["histories"], result["enqueue"], result["raw_dramatiq"]
    folded, rebuilt, refold = result["fold"], result["rebuild"], result["refold"]
    http = result["http"]
    health, pathway = http["health"], http["pathway"]
    tenths = folded["events_per_s_by_tenth"]
    n = settings["events_per_patient"]
    first = folded["first_event_stored_s"]
    rows = [
        (
            "histories built + validated (context)",
            f"{made['events']} events in {made['seconds']:.1f}s",
        ),
        ("enqueue onto coordinator.events (context)", f"{queued['msgs_per_s']:.0f} msgs/s"),
        ("raw dramatiq no-op, end to end", f"{raw['msgs_per_s']:.0f} msgs/s"),
        ("GET /health", f"{health['requests_per_s']:.0f} req/s"),
        (
            f"fold: events into pathways, {folded['worker_processes']} worker process(es)",
            f"{folded['events_per_s']:.0f} events/s "
            f"({folded['events']} in {folded['seconds']:.1f}s)",
        ),
        (
            "fold, first / last tenth of the events",
            f"{rate(tenths[0])} / {rate(tenths[-1])} events/s",
        ),
        ("fold / raw dramatiq", f"{folded['events_per_s'] / raw['msgs_per_s']:.3f}"),
        (
            "fold: worker CPU per event, machine busy",
            f"{folded['worker_cpu_ms_per_event']:.2f} ms, {folded['machine_cpu_busy']:.0%}",
        ),
        ("fold: first event stored after", f"{first * 1000:.0f} ms" if first is not None else "-"),
        (
            "pathways complete / dead letters",
            f"{folded['pathways_complete']}/{settings['patients']} / {folded['dead_letters']}",
        ),
        (
            "rebuild --check",
            f"{rebuilt['seconds']:.1f}s, {rebuilt['pathways_per_s']:.0f} pathways/s "
            f"({rebuilt['events_per_s']:.0f} events/s)",
        ),
        (
            "rebuild --check said",
            f"{rebuilt['report']!r} (exit {rebuilt['exit_code']})"
            + (f", {len(rebuilt['differing'])} ids in the JSON" if rebuilt["differing"] else ""),
        ),
        ("CLI start-up (carepath token)", f"{rebuilt['cli_startup_s']:.1f}s"),
        (
            "rebuild --check less CLI start-up",
            f"{rebuilt['seconds_less_startup']:.1f}s, "
            f"{settings['patients'] / max(rebuilt['seconds_less_startup'], 1e-3):.0f} pathways/s",
        ),
        (f"refold of a {n}-event history, p50 ms", ""),
        (
            "  load + decode / fold / to_builtins",
            " / ".join(
                f"{refold[key]['p50']:.2f}"
                for key in ("load_and_decode_ms", "fold_ms", "to_builtins_ms")
            ),
        ),
        ("  refresh_pathway (+ writes, rolled back)", f"{refold['refresh_pathway_ms']['p50']:.2f}"),
        (
            "  handle_event of the last, fold kept (rolled back)",
            f"{refold['handle_event_applied_ms']['p50']:.2f}",
        ),
        (
            "GET /api/pathways/{id}",
            f"{pathway['requests_per_s']:.0f} req/s, {pathway['errors']} errors",
        ),
        (
            "  latency ms p50 / p95 / p99 / max",
            ms(pathway["latency_ms"], "p50", "p95", "p99", "max"),
        ),
        ("  /health latency ms p50 / p99", ms(health["latency_ms"], "p50", "p99")),
        ("pathway GET / health", f"{pathway['requests_per_s'] / health['requests_per_s']:.3f}"),
        (
            "  CPU s server / load generator, busy",
            f"{pathway['server_cpu_s']:.1f} / {pathway['client_cpu_s']:.1f}, "
            f"{pathway['machine_cpu_busy']:.0%}",
        ),
        (
            "  audit rows written (answered)",
            f"+{pathway['audit_rows_written']} ({pathway['audit_rows_expected']})",
        ),
        (
            "  pathway document",
            f"{http['checks']['bytes']} bytes of JSON"
            + (f", name_status {name}" if (name := http["checks"].get("name_status")) else ""),
        ),
        ("peak RSS worker-coordinator (the largest)", mib(folded["worker_peak_rss_mib"])),
        ("peak RSS api-coordinator", mib(http["server_peak_rss_mib"])),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"\n{'figure'.ljust(width)}  value\n{'-' * width}  {'-' * 24}")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    print("\nfold events/s by tenth of the events: " + ", ".join(rate(r) for r in tenths))
    print_servers(result["servers"])
    for sample in pathway["error_samples"] + health["error_samples"]:
        print(f"  error: {sample}")


def print_servers(servers: list[dict[str, Any]]) -> None:
    print("\nserver      health req/s  pathway req/s  ratio  p50 / p99 ms   server CPU s  RSS")
    for run in servers:
        health, pathway = run["health"], run["pathway"]
        print(
            f"{run['server']:11} {health['requests_per_s']:12.0f} "
            f"{pathway['requests_per_s']:14.0f} "
            f"{pathway['requests_per_s'] / health['requests_per_s']:6.3f}  "
            f"{ms(pathway['latency_ms'], 'p50', 'p99'):13} "
            f"{pathway['server_cpu_s']:12.1f}  {mib(run['server_peak_rss_mib'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--events-per-patient", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per HTTP phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted per phase")
    parser.add_argument("--threads", type=int, default=PlatformSettings().worker_threads)
    parser.add_argument(
        "--event-batch",
        type=int,
        default=PlatformSettings().event_batch,
        help="CAREPATH_EVENT_BATCH: most events the coordinator consumes in one transaction",
    )
    parser.add_argument(
        "--servers",
        default="uvicorn:1",
        help="servers to read pathways from, one after the other: uvicorn:N and granian:N "
        "(N worker processes), comma-separated; the report's figures are the first's",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="`carepath worker coordinator` processes folding at once (each with --threads)",
    )
    parser.add_argument(
        "--names",
        action="store_true",
        help="run the referrals service too, holding every patient, so each read asks it "
        "for the name as a clinic's would (without it the read's name call is refused at once)",
    )
    parser.add_argument("--noop-messages", type=int, default=20_000)
    parser.add_argument("--refold-samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--role",
        default=Role.mdt.value,
        choices=[
            Role.mdt.value,
            Role.psychologist.value,
            Role.infusion_clinician.value,
            Role.admin.value,
        ],
        help="role of the token that reads pathways",
    )
    args = parser.parse_args()
    if not (args.patients >= 1 and args.events_per_patient >= 1 and 1 <= args.concurrency <= 64):
        parser.error("at least 1 patient and 1 event each; concurrency 1-64")
    if not 1 <= args.worker_processes <= 16:
        parser.error("--worker-processes: 1-16")
    for server in args.servers.split(","):
        kind, _, workers = server.partition(":")
        if kind not in SERVERS or not workers.isdigit() or not 1 <= int(workers) <= 16:
            parser.error(f"--servers: {server!r} is not uvicorn:N or granian:N (N 1-16)")

    suffix = secrets.token_hex(4)
    namespace = f"carepath-bench-{suffix}"
    secret = secrets.token_urlsafe(48)
    database = f"carepath_bench_{suffix}_{SERVICE}"
    url = f"{PG_BASE}/{database}"
    poll_ms = PlatformSettings().worker_poll_ms
    settings = {
        "patients": args.patients,
        "events_per_patient": args.events_per_patient,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "worker_threads": args.threads,
        "event_batch": args.event_batch,
        "worker_processes": args.worker_processes,
        "names": args.names,
        "noop_messages": args.noop_messages,
        "seed": args.seed,
        "reader_role": args.role,
        "redis_url": REDIS_URL,
        "redis_namespace": namespace,
        "log_level": "INFO",
    }
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "settings": settings,
    }
    env = base_env()
    env |= {
        "CAREPATH_COORDINATOR_DATABASE_URL": url,
        "CAREPATH_REDIS_URL": REDIS_URL,
        "CAREPATH_REDIS_NAMESPACE": namespace,
        "CAREPATH_JWT_SECRET": secret,
        "CAREPATH_WORKER_THREADS": str(args.threads),
        "CAREPATH_EVENT_BATCH": str(args.event_batch),
        "CAREPATH_WORKER_POLL_MS": str(poll_ms),
        "dramatiq_worker_timeout": str(poll_ms),
        # Only the benchmark's events: no feed catch-up (no producers run) and no clock
        # raising alerts of its own.
        "CAREPATH_CATCHUP_INTERVAL_S": "0",
        "CAREPATH_CLOCK_INTERVAL_S": "0",
        "CAREPATH_LOG_LEVEL": "INFO",
        "CAREPATH_SERVE": SERVICE,  # for granian, which builds `carepath serve`'s app itself
    }
    # No other service runs: a call to one fails at once (a closed port), never reaching
    # whatever else might listen on carepath's default port.
    closed = f"http://127.0.0.1:{free_port()}"
    env |= {f"CAREPATH_{peer.upper()}_URL": f"{closed}/{peer}" for peer in PEERS}
    names_database = f"carepath_bench_{suffix}_referrals"
    names_url = f"http://127.0.0.1:{free_port()}"
    if args.names:
        env |= {
            "CAREPATH_REFERRALS_DATABASE_URL": f"{PG_BASE}/{names_database}",
            "CAREPATH_REFERRALS_URL": names_url,
        }
    log_dir = Path(tempfile.mkdtemp(prefix="carepath-bench-coordinator-"))
    procs = Processes(env, log_dir)
    print(f"database {database}; process logs in {log_dir}", flush=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    started = time.monotonic()
    code_before = code_stamp()
    patients, per = args.patients, args.events_per_patient
    try:
        create_databases([database])
        migrate(SERVICE, env)
        result["raw_dramatiq"] = timed(
            f"raw dramatiq: {args.noop_messages} no-op messages",
            raw_dramatiq,
            procs,
            args.noop_messages,
            args.threads,
            namespace,
        )
        result["histories"] = timed(
            f"histories: {patients} patients x {per} events",
            make_histories,
            patients,
            per,
            args.seed,
        )
        histories = result["histories"].pop("histories")
        total = result["histories"]["events"]
        patient_ids = [history[0]["patient_id"] for history in histories]
        result["enqueue"] = timed(
            f"enqueue: {total} events onto {SERVICE}.events", enqueue, histories, namespace, secret
        )
        del histories
        result["fold"] = timed(
            f"fold: `carepath worker {SERVICE}` until {total} events are in {patients} pathways",
            fold,
            procs,
            url,
            total,
            patients,
            args.worker_processes,
        )
        result["rebuild"] = timed(
            f"rebuild: `carepath {SERVICE} rebuild --check`", rebuild_check, env, patients, total
        )
        result["refold"] = timed(
            f"refold: {min(args.refold_samples, patients)} patients in-process",
            refold_cost,
            url,
            patient_ids,
            args.refold_samples,
            args.seed,
        )
        if args.names:
            result["names"] = timed(
                f"names: the referrals service holding {patients} patients",
                serve_names,
                procs,
                env,
                names_database,
                names_url,
                patient_ids,
            )
        token = issue_token(PlatformSettings(jwt_secret=secret), "bench", Role(args.role))
        result["servers"] = [
            timed(
                f"http on {server}: {args.concurrency} clients x {args.duration:g}s "
                f"(+{args.warmup:g}s warm-up), /health then /api/pathways/{{id}}",
                reads,
                procs,
                url,
                token,
                patient_ids,
                per,
                args,
                server,
            )
            for server in args.servers.split(",")
        ]
        result["http"] = result["servers"][0]
    finally:
        procs.stop_all()
        drop_databases([database, names_database] if args.names else [database])
        redis.Redis.from_url(REDIS_URL).flushdb()
    result["wall_seconds"] = time.monotonic() - started
    result["code_changed_during_run"] = code_stamp() != code_before
    out = write_results(SERVICE, result)
    print_report(result)
    print(f"\nwall time {result['wall_seconds']:.0f}s; written to {out.relative_to(ROOT)}")
    if result["code_changed_during_run"]:
        print(
            "WARNING: a file under services/ or shared/ changed during the run, so the worker, "
            "the rebuild and the server may have run different code; run it again."
        )
    if result["rebuild"]["exit_code"] != 0 or result["fold"]["dead_letters"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
