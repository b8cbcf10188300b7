"""Benchmark the event pipeline: outbox -> relay -> dramatiq/Redis -> coordinator.

Runs carepath in distributed mode as subprocesses against throwaway PostgreSQL
databases and Redis DB 14, and measures:

1. raw dramatiq throughput of a near no-op actor (the ceiling for this machine),
2. pipeline throughput: N patient.registered rows preloaded into the referrals outbox,
   relayed by `carepath worker referrals`, consumed by `carepath worker coordinator`,
3. latency from POST /api/referrals returning to the referral being visible in
   GET /api/pathways/{patient_id},
4. peak RSS (VmHWM) of the worker and API processes.

Usage: .venv/bin/python benchmarks/pipeline.py [--events N] [--latency-samples M]
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
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
from sqlalchemy import text

from shared.auth import Role, issue_token
from shared.db import make_engine, make_session_factory
from shared.events import Actor, Subject, new_event
from shared.events.catalogue import PatientRegistered
from shared.outbox import add_event
from shared.settings import PlatformSettings

SERVICES = ("referrals", "coordinator")
# Must match benchmarks/noop_actor.py.
NOOP_QUEUE, NOOP_ACTOR = "bench.noop", "bench_noop"

REFERRAL = {
    "target": "psychology",
    "priority": "routine",
    "reason": "low mood and widespread pain",
    "conditions": ["fibromyalgia", "depression"],
    "referrer": {"name": "Dr Test", "role": "GP", "organisation": "Test Practice"},
    "prior_treatments": [],
    "baseline": {"phq9_items": [1, 1, 1, 1, 1, 1, 1, 1, 0], "pain_nrs": 6},
}


# --- databases -------------------------------------------------------------------------


def count(engine: Any, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


# --- phases ----------------------------------------------------------------------------


def raw_dramatiq(procs: Processes, n: int, threads: int, namespace: str) -> dict[str, Any]:
    """A no-op actor on the same Redis and thread count: the broker's own ceiling."""
    name = "dramatiq-noop"
    command = [sys.executable, "-m", "dramatiq", "benchmarks.noop_actor", "--path", str(ROOT)]
    procs.start(name, [*command, "--processes", "1", "--threads", str(threads)])
    procs.wait_for_log(name, "Worker process is ready for action")
    broker = RedisBroker(url=REDIS_URL, namespace=namespace)
    counter = f"{namespace}:bench:noop-done"
    try:
        started = time.monotonic()
        for _ in range(n):  # one enqueue per message, as the relay does
            broker.enqueue(
                Message(
                    queue_name=NOOP_QUEUE, actor_name=NOOP_ACTOR, args=(), kwargs={}, options={}
                )
            )
        enqueued = time.monotonic()
        done = wait_until(
            lambda: int(broker.client.get(counter) or 0) >= n,
            max(60, n / 50),
            0.005,
            "no-op messages",
        )
    finally:
        broker.close()
        procs.stop(name)
    return {
        "messages": n,
        "seconds": done - started,
        "msgs_per_s": n / (done - started),
        "enqueue_per_s": n / (enqueued - started),
    }


def load_outbox(database_url: str, n: int, batch: int = 1000) -> dict[str, Any]:
    """Write n patient.registered events straight into the referrals outbox."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    actor = Actor(user_id="bench", role="referrer")
    started = time.monotonic()
    try:
        for first in range(0, n, batch):
            with sessions() as session:
                for _ in range(min(batch, n - first)):
                    patient_id = uuid4()
                    add_event(
                        session,
                        new_event(
                            type="patient.registered",
                            data=PatientRegistered(patient_id=patient_id),
                            producer="referrals",
                            patient_id=patient_id,
                            subject=Subject(type="patient", id=str(patient_id)),
                            actor=actor,
                            correlation_id=uuid4().hex,
                        ),
                    )
                session.commit()
    finally:
        engine.dispose()
    elapsed = time.monotonic() - started
    return {"rows": n, "seconds": elapsed, "rows_per_s": n / elapsed}


def pipeline_throughput(
    procs: Processes, n: int, urls: dict[str, str], processes: int = 1
) -> dict[str, Any]:
    """Relay start -> every event in the coordinator's inbox (workers left running), with
    `processes` coordinator worker processes consuming."""
    referrals, coordinator = make_engine(urls["referrals"]), make_engine(urls["coordinator"])
    try:
        for number in range(1, processes + 1):
            name = "worker-coordinator" + (f"-{number}" if number > 1 else "")
            procs.start(name, [CAREPATH, "worker", "coordinator"])
            procs.wait_for_log(name, "worker is consuming")
        loaded = load_outbox(urls["referrals"], n)
        procs.start("worker-referrals", [CAREPATH, "worker", "referrals"])
        started = procs.wait_for_log("worker-referrals", "worker is consuming")
        timeout = max(60, n / 20)
        relayed = wait_until(
            lambda: count(referrals, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0,
            timeout,
            0.01,
            "the referrals outbox to empty",
        )
        consumed = wait_until(
            lambda: count(coordinator, "SELECT count(*) FROM inbox") >= n,
            timeout,
            0.01,
            "the coordinator inbox to fill",
        )
        pathways = count(coordinator, "SELECT count(*) FROM pathway")
        dead = count(coordinator, "SELECT count(*) FROM dead_letter")
    finally:
        referrals.dispose()
        coordinator.dispose()
    return {
        "events": n,
        "outbox_load": loaded,
        "relay_seconds": relayed - started,
        "relay_per_s": n / (relayed - started),
        "end_to_end_seconds": consumed - started,
        "end_to_end_per_s": n / (consumed - started),
        "coordinator_worker_processes": processes,
        "pathways": pathways,
        "dead_letters": dead,
    }


def latency(
    procs: Processes, samples: int, secret: str, pause_s: float, warmup: int = 5
) -> dict[str, Any]:
    """POST /api/referrals returned -> referral.received on the patient's pathway.

    ``pause_s`` idles between samples, to see the latency of a quiet system.
    """
    urls = {}
    for service in SERVICES:
        port = free_port()
        urls[service] = f"http://127.0.0.1:{port}"
        procs.start(f"api-{service}", [CAREPATH, "serve", service, "--port", str(port)])
    for service in SERVICES:
        procs.wait_for_health(f"api-{service}", urls[service])
    settings = PlatformSettings(jwt_secret=secret)

    def client(service: str, role: Role) -> httpx.Client:
        token = issue_token(settings, f"bench-{role.value}", role)
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=urls[service], headers=headers, timeout=10)

    visible_ms: list[float] = []
    post_ms: list[float] = []
    timeouts = 0
    deadline = time.monotonic() + 120 + samples * (1 + pause_s)  # a bound on the whole phase
    with client("referrals", Role.referrer) as writer, client("coordinator", Role.mdt) as reader:
        for i in range(warmup + samples):
            if time.monotonic() > deadline:
                break
            time.sleep(pause_s)
            patient = {
                "given_name": "Bench",
                "family_name": f"Patient{i}",
                "birth_date": "1980-01-01",
                "sex": "female",
            }
            created = writer.post("/api/patients", json=patient)
            created.raise_for_status()
            patient_id = created.json()["id"]
            sent = time.monotonic()
            response = writer.post("/api/referrals", json={"patient_id": patient_id, **REFERRAL})
            returned = time.monotonic()
            response.raise_for_status()

            def visible(patient_id: str = patient_id) -> bool:
                answer = reader.get(f"/api/pathways/{patient_id}")
                if answer.status_code != 200:
                    return False
                timeline = answer.json()["timeline"]
                return any(item["type"] == "referral.received" for item in timeline)

            try:
                seen = wait_until(visible, 10, 0.005, "the referral on the pathway")
            except TimeoutError:
                timeouts += 1
                continue
            if i >= warmup:
                post_ms.append((returned - sent) * 1000)
                visible_ms.append((seen - returned) * 1000)
    return {
        "samples": samples,
        "completed": len(visible_ms),
        "warmup": warmup,
        "timeouts": timeouts,
        "visible_ms": percentiles(visible_ms),
        "post_referral_ms": percentiles(post_ms),
    }


# --- report ----------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    machine, settings = result["machine"], result["settings"]
    print(f"\nmachine: {machine['nproc']} CPUs, Python {machine['python']}, {machine['platform']}")
    print("settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()))
    raw, pipe, lat = result["raw_dramatiq"], result["pipeline"], result["latency"]
    rows = [
        ("outbox preload (add_event, 1000/txn)", f"{pipe['outbox_load']['rows_per_s']:.0f}/s"),
        ("raw dramatiq no-op, enqueue only", f"{raw['enqueue_per_s']:.0f} msgs/s"),
        ("raw dramatiq no-op, end to end", f"{raw['msgs_per_s']:.0f} msgs/s"),
        ("pipeline relay only (outbox empty)", f"{pipe['relay_per_s']:.0f} events/s"),
        (
            f"pipeline end to end (inbox = N), {pipe['coordinator_worker_processes']} "
            "coordinator worker process(es)",
            f"{pipe['end_to_end_per_s']:.0f} events/s",
        ),
        ("pipeline / raw dramatiq", f"{result['pipeline_to_raw_ratio']:.3f}"),
        ("pipeline pathways / dead letters", f"{pipe['pathways']} / {pipe['dead_letters']}"),
    ]
    for label, key in (("POST /api/referrals", "post_referral_ms"), ("visible", "visible_ms")):
        figures = lat[key]
        if figures:
            rows.append(
                (
                    f"{label} latency ms p50/p95/p99/max",
                    " / ".join(f"{figures[p]:.1f}" for p in ("p50", "p95", "p99", "max")),
                )
            )
    rows.append(
        (
            "latency samples done/asked (timeouts)",
            f"{lat['completed']}/{lat['samples']} ({lat['timeouts']})",
        )
    )
    for name, mib in result["peak_rss_mib"].items():
        rows.append((f"peak RSS {name}", f"{mib:.1f} MiB" if mib is not None else "n/a"))
    width = max(len(label) for label, _ in rows)
    print(f"\n{'figure'.ljust(width)}  value\n{'-' * width}  {'-' * 24}")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events for throughput")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=PlatformSettings().worker_threads)
    parser.add_argument(
        "--event-batch",
        type=int,
        default=PlatformSettings().event_batch,
        help="CAREPATH_EVENT_BATCH: most events the coordinator consumes in one transaction",
    )
    parser.add_argument("--relay-interval", type=float, default=0.1, help="seconds")
    parser.add_argument(
        "--worker-processes", type=int, default=1, help="coordinator worker processes consuming"
    )
    parser.add_argument(
        "--latency-pause", type=float, default=0.0, help="seconds idle between latency samples"
    )
    parser.add_argument(
        "--poll-ms",
        type=int,
        default=PlatformSettings().worker_poll_ms,
        help="longest idle poll sleep of every dramatiq consumer, carepath's "
        "(CAREPATH_WORKER_POLL_MS) and the no-op worker's (dramatiq_worker_timeout)",
    )
    args = parser.parse_args()

    suffix = secrets.token_hex(4)
    namespace = f"carepath-bench-{suffix}"
    secret = secrets.token_urlsafe(48)
    settings = {
        "events": args.events,
        "latency_samples": args.latency_samples,
        "worker_threads": args.threads,
        "event_batch": args.event_batch,
        "coordinator_worker_processes": args.worker_processes,
        "relay_interval_s": args.relay_interval,
        "latency_pause_s": args.latency_pause,
        "worker_poll_ms": args.poll_ms,
        "redis_url": REDIS_URL,
        "redis_namespace": namespace,
        "log_level": "INFO",
    }
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "settings": settings,
    }
    redis.Redis.from_url(REDIS_URL).flushdb()
    databases = {service: f"carepath_bench_{suffix}_{service}" for service in SERVICES}
    urls = {service: f"{PG_BASE}/{name}" for service, name in databases.items()}
    env = base_env()
    env |= {f"CAREPATH_{service.upper()}_DATABASE_URL": url for service, url in urls.items()}
    env |= {
        "CAREPATH_REDIS_URL": REDIS_URL,
        "CAREPATH_REDIS_NAMESPACE": namespace,
        "CAREPATH_JWT_SECRET": secret,
        "CAREPATH_RELAY_INTERVAL_S": str(args.relay_interval),
        "CAREPATH_WORKER_THREADS": str(args.threads),
        "CAREPATH_EVENT_BATCH": str(args.event_batch),
        "CAREPATH_LOG_LEVEL": "INFO",
    }
    env["CAREPATH_WORKER_POLL_MS"] = str(args.poll_ms)
    env["dramatiq_worker_timeout"] = str(args.poll_ms)
    log_dir = Path(tempfile.mkdtemp(prefix="carepath-bench-"))
    procs = Processes(env, log_dir)
    print(f"databases {', '.join(databases.values())}; process logs in {log_dir}", flush=True)
    try:
        create_databases(list(databases.values()))
        for service in SERVICES:
            migrate(service, env)
        n, m = args.events, args.latency_samples
        result["raw_dramatiq"] = timed(
            f"raw dramatiq: {n} no-op messages", raw_dramatiq, procs, n, args.threads, namespace
        )
        result["pipeline"] = timed(
            f"pipeline: {n} events outbox -> coordinator ({args.worker_processes} worker "
            "process(es))",
            pipeline_throughput,
            procs,
            n,
            urls,
            args.worker_processes,
        )
        result["pipeline_to_raw_ratio"] = (
            result["pipeline"]["end_to_end_per_s"] / result["raw_dramatiq"]["msgs_per_s"]
        )
        result["latency"] = timed(
            f"latency: {m} referrals over HTTP", latency, procs, m, secret, args.latency_pause
        )
        result["peak_rss_mib"] = {name: procs.peak_rss(name) for name in sorted(procs.running)}
    finally:
        procs.stop_all()
        drop_databases(list(databases.values()))
        redis.Redis.from_url(REDIS_URL).flushdb()
    out = write_results("pipeline", result)
    print_report(result)
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
