"""Benchmark the referrals inbox: GET /api/referrals with 10,000 referrals in PostgreSQL.

Runs `carepath serve referrals` as a subprocess against a throwaway PostgreSQL database
holding N referrals (and their patients) written straight into the tables, and measures
with a closed-loop load of C concurrent clients (httpx, one thread each) for D seconds:

1. GET /health, the same server's floor (no database, no auth),
2. GET /api/referrals?target=psychology&status=received&limit=50 as a psychologist,
   always the first page,
3. the same filter as the MDT, walking the pages by next_cursor (deep pages),
4. GET /api/referrals?limit=50 as an admin (every team, every status),

and reports requests/s, p50/p95/p99, errors, inbox/health ratios and the server's peak
RSS (VmHWM). Every inbox GET writes one audit row (by design); the script checks that.

Usage: .venv/bin/python benchmarks/inbox.py [--referrals N] [--clients C] [--duration D]
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
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
    peak_rss_mib,
    percentiles,
    timed,
    write_results,
)

from shared.auth import Role, issue_token
from shared.measures import PHQ9, score
from shared.settings import PlatformSettings

PG_PLAIN = "postgresql://postgres@127.0.0.1:5432"

TARGETS = (("psychology", 40), ("ketamine-infusion", 40), ("pain-mdt", 20))
STATUSES = (("received", 75), ("info-requested", 8), ("accepted", 12), ("rejected", 5))
URGENT_PERCENT = 15
SPREAD_DAYS = 30 * 7
REFERRERS = tuple(f"bench-referrer-{n}" for n in range(1, 7))
CONDITIONS = ("fibromyalgia", "neuropathic-pain", "crps", "spinal-pain", "depression", "other")
GIVEN = ("Alex", "Sam", "Jo", "Priya", "Tom", "Aisha", "Mark", "Ewa", "Chen", "Ruth")
INBOX = "/api/referrals"
PSYCHOLOGY_RECEIVED = {"target": "psychology", "status": "received"}


# --- helpers ---------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and of every process in the session it leads
    (a server's own worker processes), from /proc/<pid>/stat."""
    jiffies = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if stat.parent.name == str(pid) or fields[3] == str(pid):
            jiffies += int(fields[11]) + int(fields[12])
    return jiffies / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over every CPU, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


# --- the database ----------------------------------------------------------------------


def weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def referral_rows(n: int, seed: int, now: datetime) -> tuple[list[tuple], list[tuple]]:
    """N patients and one referral each, shaped like what POST /api/referrals stores."""
    rng = random.Random(seed)
    patients, referrals = [], []
    for i in range(n):
        patient_id, referral_id = uuid4(), uuid4()
        target = weighted(rng, TARGETS)
        priority = "urgent" if rng.randrange(100) < URGENT_PERCENT else "routine"
        status = weighted(rng, STATUSES)
        received_at = now - timedelta(seconds=rng.uniform(0, SPREAD_DAYS * 86400))
        created_by = rng.choice(REFERRERS)
        patients.append(
            (
                patient_id,
                rng.choice(GIVEN),
                f"Bench{i:05d}",
                date(1940, 1, 1) + timedelta(days=rng.randrange(65 * 365)),
                rng.choice(("female", "male", "other")),
                None,
                rng.choice(("phone", "email", "letter")),
                created_by,
                received_at - timedelta(minutes=5),
            )
        )
        conditions = rng.sample(CONDITIONS, rng.randint(1, 3))
        prior = [{"name": "amitriptyline", "kind": "medicine", "outcome": "no lasting benefit"}]
        if target != "ketamine-infusion" and rng.random() < 0.5:
            prior = []
        baseline = None
        if rng.random() < 0.6:
            items = [rng.randint(0, 3) for _ in range(9)]
            phq9 = score(PHQ9, items, "baseline.phq9_items")
            baseline = {
                "phq9_items": items,
                "phq9_total": phq9.total,
                "phq9_band": phq9.band,
                "pain_nrs": rng.randint(0, 10),
            }
        referrals.append(
            (
                referral_id,
                patient_id,
                target,
                priority,
                0 if priority == "urgent" else 1,
                status,
                received_at,  # status_changed_at
                "Long-standing widespread pain with low mood; sleep poor; "
                f"tried several medicines without lasting relief (bench {i}).",
                json.dumps(conditions),
                json.dumps({"name": "Dr Bench", "role": "GP", "organisation": "Bench Practice"}),
                json.dumps(prior),
                json.dumps(baseline) if baseline is not None else None,
                created_by,
                "referrer",
                received_at,
            )
        )
    return patients, referrals


def load_referrals(database: str, n: int, seed: int) -> dict[str, Any]:
    """COPY the rows in, then ANALYZE, so the planner knows the table it will read."""
    patients, referrals = referral_rows(n, seed, datetime.now(UTC))
    started = time.monotonic()
    with psycopg.connect(f"{PG_PLAIN}/{database}") as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY patient (id, given_name, family_name, birth_date, sex, nhs_number, "
                "contact_preference, registered_by, registered_at) FROM STDIN"
            ) as copy:
                for row in patients:
                    copy.write_row(row)
            with cur.copy(
                "COPY referral (id, patient_id, target, priority, priority_rank, status, "
                "status_changed_at, reason, conditions, referrer, prior_treatments, baseline, "
                "created_by, created_by_role, received_at) FROM STDIN"
            ) as copy:
                for row in referrals:
                    copy.write_row(row)
        conn.commit()
    with psycopg.connect(f"{PG_PLAIN}/{database}", autocommit=True) as conn:
        conn.execute("ANALYZE")
        mix = conn.execute(
            "SELECT target, status, count(*) FROM referral GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        urgent = conn.execute("SELECT count(*) FROM referral WHERE priority = 'urgent'").fetchone()
    return {
        "referrals": n,
        "seconds": time.monotonic() - started,
        "urgent": urgent[0] if urgent else 0,
        "mix": {f"{target}/{status}": c for target, status, c in mix},
    }


def scalar(database: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(f"{PG_PLAIN}/{database}") as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


def audit_rows(database: str) -> int:
    return int(scalar(database, "SELECT count(*) FROM audit_log"))


# --- checks before the load ------------------------------------------------------------


def check_answers(clients: dict[str, httpx.Client], database: str, limit: int) -> dict[str, Any]:
    """The load only means something if the answers are right: look at them first."""
    expected = int(
        scalar(
            database,
            "SELECT count(*) FROM referral WHERE target = 'psychology' AND status = 'received'",
        )
    )
    first = clients["psychologist"].get(INBOX, params={**PSYCHOLOGY_RECEIVED, "limit": limit})
    first.raise_for_status()
    items = first.json()["items"]
    if len(items) != min(limit, expected):
        raise AssertionError(f"psychologist's first page has {len(items)} items")
    if {(i["target"], i["status"]) for i in items} != {("psychology", "received")}:
        raise AssertionError("the psychologist's page holds other teams or statuses")
    keys = [
        (0 if i["priority"] == "urgent" else 1, datetime.fromisoformat(i["received_at"]))
        for i in items
    ]
    if keys != sorted(keys):
        raise AssertionError("the psychologist's page is not by priority, then waiting")
    if any("patient" not in i or "reason" not in i for i in items):
        raise AssertionError("a psychologist should see demographics and the reason")

    admin = clients["admin"].get(INBOX, params={"limit": limit})
    admin.raise_for_status()
    if any("reason" in i or "patient" in i for i in admin.json()["items"]):
        raise AssertionError("an admin's inbox shows free text or demographics")

    # One full walk by cursor: every row once, in order, ends with next_cursor = null.
    seen: list[str] = []
    cursor = None
    for _ in range(expected // limit + 3):  # bounded: the walk must end before this
        params: dict[str, Any] = {**PSYCHOLOGY_RECEIVED, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = clients["mdt"].get(INBOX, params=params)
        page.raise_for_status()
        body = page.json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    if cursor is not None or len(seen) != expected or len(set(seen)) != expected:
        raise AssertionError(f"cursor walk saw {len(seen)} ({len(set(seen))}) of {expected}")
    states: dict[str, int] = {}
    for item in items:
        states[item["waiting"]["state"]] = states.get(item["waiting"]["state"], 0) + 1
    return {
        "psychology_received": expected,
        "pages_in_full_walk": -(-expected // limit),
        "first_page_states": states,
    }


# --- load ------------------------------------------------------------------------------


@dataclass
class ClientTally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    ok_during_warmup: int = 0
    deepest_page: int = 0
    pages_walked: list[int] = field(default_factory=list)


def run_client(
    client: httpx.Client,
    path: str,
    params: dict[str, Any],
    walk: bool,
    start: threading.Barrier,
    warm_until: list[float],
    stop_at: list[float],
    tally: ClientTally,
    max_requests: int,
) -> None:
    """One closed-loop client: send, wait for the answer, send again, until the deadline."""
    start.wait()
    cursor: str | None = None
    depth = 0
    for _ in range(max_requests):  # a hard bound besides the deadline
        now = time.monotonic()
        if now >= stop_at[0]:
            break
        query = dict(params)
        if walk and cursor:
            query["cursor"] = cursor
        sent = time.perf_counter()
        try:
            response = client.get(path, params=query)
            body = response.json() if response.status_code == 200 else None
            ok = body is not None
            if not ok and len(tally.error_samples) < 5:
                tally.error_samples.append(f"{response.status_code} {response.text[:200]}")
        except (httpx.HTTPError, ValueError) as error:
            ok, body = False, None
            if len(tally.error_samples) < 5:
                tally.error_samples.append(f"{type(error).__name__}: {error}")
        elapsed_ms = (time.perf_counter() - sent) * 1000
        if walk:
            tally.deepest_page = max(tally.deepest_page, depth + 1)  # the page just asked for
            if ok and body is not None and body.get("next_cursor"):
                cursor, depth = body["next_cursor"], depth + 1
            else:  # the last page (or an error): start again at the top
                if ok:
                    tally.pages_walked.append(depth + 1)
                cursor, depth = None, 0
        if now < warm_until[0]:
            tally.ok_during_warmup += ok
            continue
        if ok:
            tally.latencies_ms.append(elapsed_ms)
        else:
            tally.errors += 1


def closed_loop(
    name: str,
    make_client: Callable[[], httpx.Client],
    path: str,
    params: dict[str, Any],
    *,
    clients: int,
    duration_s: float,
    warmup_s: float,
    server_pid: int,
    walk: bool = False,
) -> dict[str, Any]:
    tallies = [ClientTally() for _ in range(clients)]
    connections = [make_client() for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    warm_until, stop_at = [0.0], [0.0]
    threads = [
        threading.Thread(
            target=run_client,
            args=(conn, path, params, walk, start, warm_until, stop_at, tally, 10_000_000),
            name=f"{name}-{n}",
            daemon=True,
        )
        for n, (conn, tally) in enumerate(zip(connections, tallies, strict=True))
    ]
    try:
        for thread in threads:
            thread.start()
        now = time.monotonic()
        warm_until[0], stop_at[0] = now + warmup_s, now + warmup_s + duration_s
        start.wait()
        time.sleep(warmup_s)
        cpu_server, cpu_client = process_cpu_s(server_pid), time.process_time()
        busy, total = machine_busy()
        measured_from = time.monotonic()
        for thread in threads:
            thread.join(timeout=duration_s + 30)
        measured = time.monotonic() - measured_from
        cpu_server = process_cpu_s(server_pid) - cpu_server
        cpu_client = time.process_time() - cpu_client
        busy_after, total_after = machine_busy()
    finally:
        stop_at[0] = 0.0
        for conn in connections:
            conn.close()
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{name}: a client thread did not finish")
    latencies = [ms for tally in tallies for ms in tally.latencies_ms]
    errors = sum(tally.errors for tally in tallies)
    result: dict[str, Any] = {
        "path": path,
        "params": params,
        "clients": clients,
        "seconds": measured,
        "requests": len(latencies),
        "errors": errors,
        "error_samples": [s for tally in tallies for s in tally.error_samples][:5],
        "requests_per_s": len(latencies) / measured,
        "latency_ms": percentiles(latencies),
        "ok_during_warmup": sum(tally.ok_during_warmup for tally in tallies),
        "server_cpu_s": cpu_server,
        "client_cpu_s": cpu_client,
        "machine_cpu_busy": (busy_after - busy) / max(total_after - total, 1.0),
    }
    if walk:
        walked = [depth for tally in tallies for depth in tally.pages_walked]
        result["deepest_page"] = max((tally.deepest_page for tally in tallies), default=0)
        result["full_walks_completed"] = len(walked)
    return result


# --- report ----------------------------------------------------------------------------

PHASES = (
    ("health", "GET /health"),
    ("psychologist_first_page", "inbox, psychologist, first page"),
    ("mdt_walk_pages", "inbox, MDT, walking pages by cursor"),
    ("admin_all", "inbox, admin, all teams"),
)


def print_report(result: dict[str, Any]) -> None:
    machine, settings = result["machine"], result["settings"]
    print(f"\nmachine: {machine['nproc']} CPUs, Python {machine['python']}, {machine['platform']}")
    print(f"PostgreSQL {machine['postgres']}")
    print("settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()))
    load = result["load"]
    print(
        f"data: {load['referrals']} referrals ({load['urgent']} urgent) loaded by COPY in "
        f"{load['seconds']:.1f}s; psychology/received: {result['checks']['psychology_received']} "
        f"({result['checks']['pages_in_full_walk']} pages of {settings['limit']})"
    )
    header = ("phase", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "vs health")
    rows = []
    health = result["phases"]["health"]["requests_per_s"]
    for key, label in PHASES:
        phase = result["phases"][key]
        lat = phase["latency_ms"]
        rows.append(
            (
                label,
                f"{phase['requests_per_s']:.0f}",
                *(f"{lat[p]:.1f}" if lat else "-" for p in ("p50", "p95", "p99", "max")),
                str(phase["errors"]),
                f"{phase['requests_per_s'] / health:.3f}" if health else "-",
            )
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
    print()
    for key, label in PHASES:
        phase = result["phases"][key]
        extra = ""
        if "deepest_page" in phase:
            extra = (
                f", deepest page {phase['deepest_page']}, "
                f"full walks {phase['full_walks_completed']}"
            )
        audit = phase.get("audit_rows_written")
        audit_text = ""
        if audit is not None:
            audit_text = f", audit rows +{audit} (answered: {phase['audit_rows_expected']})"
        print(
            f"{label}: {phase['requests']} requests in {phase['seconds']:.1f}s; CPU s "
            f"server {phase['server_cpu_s']:.1f} / client {phase['client_cpu_s']:.1f}; "
            f"machine busy {phase['machine_cpu_busy']:.0%}{audit_text}{extra}"
        )
        for sample in phase["error_samples"]:
            print(f"  error: {sample}")
    rss = result["server_peak_rss_mib"]
    print(f"\nserver peak RSS (VmHWM): {f'{rss:.1f} MiB' if rss is not None else 'n/a'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=10_000, help="referrals to load")
    parser.add_argument("--clients", type=int, default=8, help="concurrent closed-loop clients")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted per phase")
    parser.add_argument("--limit", type=int, default=50, help="inbox page size")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the data")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.duration <= 600 and args.referrals >= 1):
        parser.error("clients 1-64, duration 1-600 s, referrals at least 1")

    suffix = secrets.token_hex(4)
    namespace = f"carepath-bench-{suffix}"
    secret = secrets.token_urlsafe(48)
    database = f"carepath_bench_{suffix}_inbox"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = {
        "referrals": args.referrals,
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "limit": args.limit,
        "seed": args.seed,
        "redis_url": REDIS_URL,
        "redis_namespace": namespace,
        "log_level": "WARNING",
    }
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine() | {"postgres": None},
        "settings": settings,
    }
    env = base_env()
    env |= {
        "CAREPATH_REFERRALS_DATABASE_URL": f"{PG_BASE}/{database}",
        "CAREPATH_REDIS_URL": REDIS_URL,
        "CAREPATH_REDIS_NAMESPACE": namespace,
        "CAREPATH_JWT_SECRET": secret,
        "CAREPATH_LOG_LEVEL": "WARNING",
    }
    log_dir = Path(tempfile.mkdtemp(prefix="carepath-bench-inbox-"))
    procs = Processes(env, log_dir)
    print(f"database {database}; server log in {log_dir}", flush=True)
    created = False
    try:
        create_databases([database])
        created = True
        result["machine"]["postgres"] = scalar(database, "SHOW server_version")
        migrate("referrals", env)
        result["load"] = timed(
            f"loading {args.referrals} referrals",
            load_referrals,
            database,
            args.referrals,
            args.seed,
        )
        server = procs.start("api-referrals", [CAREPATH, "serve", "referrals", "--port", str(port)])
        procs.wait_for_health("api-referrals", base_url)

        platform_settings = PlatformSettings(jwt_secret=secret)

        def client_as(role: Role | None) -> Callable[[], httpx.Client]:
            headers = {}
            if role is not None:
                token = issue_token(platform_settings, f"bench-{role.value}", role)
                headers["Authorization"] = f"Bearer {token}"
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            return lambda: httpx.Client(
                base_url=base_url, headers=headers, timeout=10, limits=limits
            )

        makers = {
            "health": client_as(None),
            "psychologist": client_as(Role.psychologist),
            "mdt": client_as(Role.mdt),
            "admin": client_as(Role.admin),
        }
        singles = {name: maker() for name, maker in makers.items() if name != "health"}
        try:
            result["checks"] = timed(
                "checking the answers", check_answers, singles, database, args.limit
            )
        finally:
            for single in singles.values():
                single.close()

        page = {"limit": args.limit}
        plan = (
            ("health", makers["health"], "/health", {}, False),
            (
                "psychologist_first_page",
                makers["psychologist"],
                INBOX,
                {**PSYCHOLOGY_RECEIVED, **page},
                False,
            ),
            ("mdt_walk_pages", makers["mdt"], INBOX, {**PSYCHOLOGY_RECEIVED, **page}, True),
            ("admin_all", makers["admin"], INBOX, page, False),
        )
        result["phases"] = {}
        for key, maker, path, params, walk in plan:
            before = audit_rows(database)
            figures = timed(
                f"{key}: {args.clients} clients x {args.duration:g}s (+{args.warmup:g}s warm-up)",
                closed_loop,
                key,
                maker,
                path,
                params,
                clients=args.clients,
                duration_s=args.duration,
                warmup_s=args.warmup,
                server_pid=server.pid,
                walk=walk,
            )
            if path == INBOX:
                # Every inbox GET writes one audit row (who read which list, when).
                figures["audit_rows_written"] = audit_rows(database) - before
                figures["audit_rows_expected"] = figures["requests"] + figures["ok_during_warmup"]
            result["phases"][key] = figures
        health = result["phases"]["health"]["requests_per_s"]
        result["inbox_to_health_ratio"] = {
            key: result["phases"][key]["requests_per_s"] / health
            for key, *_ in plan
            if key != "health" and health
        }
        result["server_peak_rss_mib"] = peak_rss_mib(server.pid)
    finally:
        procs.stop_all()
        if created:
            drop_databases([database])
        # Only this run's keys: another benchmark may be using DB 14 at the same time.
        with suppress(redis.RedisError):
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
    out = write_results("inbox", result)
    print_report(result)
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
