"""Benchmark the feed catch-up: how fast a consumer recovers what the broker lost.

Writes N referral.accepted events (ketamine-infusion) straight into a throwaway
referrals database's outbox, marked sent, as if the relay had handed them to a Redis
that then restarted empty; runs `carepath serve referrals` and then
`carepath worker infusions` (PostgreSQL, Redis DB 14 with a throwaway namespace) and
measures:

1. the feed itself: every page of GET /api/events?type=referral.accepted&limit=500
   read once: events/s and page latency p50/p99,
2. recovery: from the worker's start until every event has opened its infusion course
   (through the feed: nothing is queued): events/s, and the carepath_feed_* figures the
   worker's API reports before and after,
3. an idle round (nothing missing): how long one catch-up of the feed takes,
4. peak RSS (VmHWM) of the server and the worker.

Usage: .venv/bin/python benchmarks/catchup.py [--events N]
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
import psycopg
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
    wait_until,
    write_results,
)

sys.path.insert(0, str(ROOT))

from shared.auth import Role, issue_token
from shared.catchup import FeedFollower, feed_reader
from shared.db import make_engine, make_session_factory
from shared.events import Actor, Subject, new_event
from shared.events.catalogue import ReferralAccepted
from shared.events.subscriptions import feeds_of
from shared.outbox import add_event
from shared.peers import Peers, peer_over_http
from shared.settings import PlatformSettings, load_service_settings

SECRET = secrets.token_hex(32)


def write_lost_events(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    actor = Actor(user_id="bench", role="infusion-clinician")
    now = datetime.now(UTC)
    for start in range(0, count, 500):
        with sessions() as session:
            for _ in range(start, min(start + 500, count)):
                patient_id, referral_id = uuid4(), uuid4()
                add_event(
                    session,
                    new_event(
                        type="referral.accepted",
                        data=ReferralAccepted(
                            referral_id=referral_id,
                            target="ketamine-infusion",
                            priority="routine",
                            conditions=["crps", "depression"],
                            accepted_at=now,
                            received_at=now,
                        ),
                        producer="referrals",
                        patient_id=patient_id,
                        subject=Subject(type="referral", id=str(referral_id)),
                        actor=actor,
                        correlation_id="bench",
                        occurred_at=now,
                    ),
                )
            session.commit()
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("UPDATE outbox SET sent_at = now(), send_attempts = 1")  # "sent", then lost
    engine.dispose()


def read_feed_once(base_url: str, token: str) -> dict[str, Any]:
    latencies: list[float] = []
    after, read = "0", 0
    started = time.monotonic()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            began = time.monotonic()
            page = client.get(
                "/api/events", params={"after": after, "limit": 500, "type": "referral.accepted"}
            ).json()
            latencies.append((time.monotonic() - began) * 1000)
            read += len(page["items"])
            after = page["next_after"]
            if page["remaining"] == 0 and len(page["items"]) < 500:
                break
    seconds = time.monotonic() - started
    return {
        "events": read,
        "events_per_s": round(read / seconds, 1),
        "page_ms": {k: round(v, 1) for k, v in percentiles(latencies).items()},
    }


def scalar(database_url: str, query: str) -> Any:
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def feed_positions(base_url: str, token: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{base_url}/api/feeds", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    positions: list[dict[str, Any]] = answer.json()
    return positions


def run(events: int) -> dict[str, Any]:
    suffix = secrets.token_hex(4)
    names = {service: f"bench_catchup_{suffix}_{service}" for service in ("referrals", "infusions")}
    urls = {service: f"{PG_BASE}/{name}" for service, name in names.items()}
    ports = {service: free_port() for service in names}
    env = base_env() | {
        "CAREPATH_ENV": "production",
        "CAREPATH_JWT_SECRET": SECRET,
        "CAREPATH_BROKER": "redis",
        "CAREPATH_REDIS_URL": REDIS_URL,
        "CAREPATH_REDIS_NAMESPACE": f"bench-catchup-{suffix}",
        "CAREPATH_CATCHUP_INTERVAL_S": "5",
        "CAREPATH_CATCHUP_GRACE_S": "0",
        "CAREPATH_LOG_LEVEL": "WARNING",
    }
    for service in names:
        env[f"CAREPATH_{service.upper()}_DATABASE_URL"] = urls[service]
        env[f"CAREPATH_{service.upper()}_URL"] = f"http://127.0.0.1:{ports[service]}"
    create_databases(list(names.values()))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-catchup-"))
    processes = Processes(env, log_dir)
    platform = PlatformSettings(jwt_secret=SECRET)
    token = issue_token(platform, "bench", Role.service)
    try:
        for service in names:
            migrate(service, env)
        print(f"write {events} lost events ...", flush=True)
        write_lost_events(urls["referrals"], events)
        for service in names:
            port = str(ports[service])
            processes.start(f"{service}-api", [CAREPATH, "serve", service, "--port", port])
            processes.wait_for_health(f"{service}-api", env[f"CAREPATH_{service.upper()}_URL"])
        referrals = env["CAREPATH_REFERRALS_URL"]
        feed = read_feed_once(referrals, token)

        started = time.monotonic()
        processes.start("infusions-worker", [CAREPATH, "worker", "infusions"])

        def all_opened() -> bool:
            processes.check_running("infusions-worker")
            return int(scalar(urls["infusions"], "SELECT count(*) FROM infusion_course")) >= events

        done = wait_until(all_opened, 600, 0.2, "every course opened from the feed")
        recovery_s = done - started
        infusions_api = env["CAREPATH_INFUSIONS_URL"]
        wait_until(
            lambda: feed_positions(infusions_api, token)[0]["lag_events"] == 0, 60, 0.2, "lag 0"
        )
        after = feed_positions(infusions_api, token)

        settings = load_service_settings(
            "infusions", PlatformSettings(jwt_secret=SECRET), environ=env
        )
        engine = make_engine(urls["infusions"])
        follower = FeedFollower(
            "infusions",
            make_session_factory(engine),
            feeds_of("infusions"),
            feed_reader(Peers(peer_over_http(settings, "infusions"))),
            lambda raw: (_ for _ in ()).throw(AssertionError("nothing should be decoded")),
            lambda envelope: False,
        )
        idle: list[float] = []
        for _ in range(20):
            began = time.monotonic()
            follower.catch_up("referrals")
            idle.append((time.monotonic() - began) * 1000)
        engine.dispose()
        return {
            "benchmark": "catchup",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "events": events,
            "feed_read": feed,
            "recovery": {
                "seconds_from_worker_start": round(recovery_s, 2),
                "events_per_s": round(events / recovery_s, 1),
                "feed_position_after": after,
            },
            "idle_round_ms": {k: round(v, 1) for k, v in percentiles(idle).items()},
            "peak_rss_mib": {
                name: round(rss, 1)
                for name in ("referrals-api", "infusions-worker")
                if (rss := processes.peak_rss(name)) is not None
            },
        }
    finally:
        processes.stop_all()
        drop_databases(list(names.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    result = run(args.events)
    out = write_results("catchup", result)
    feed, recovery = result["feed_read"], result["recovery"]
    print(
        f"\nfeed read once: {feed['events']} events, {feed['events_per_s']} events/s, "
        f"page of 500 p50 {feed['page_ms']['p50']} ms p99 {feed['page_ms']['p99']} ms"
    )
    print(
        f"recovery of {result['events']} lost events through the feed: "
        f"{recovery['seconds_from_worker_start']} s from worker start "
        f"({recovery['events_per_s']} events/s)"
    )
    idle = result["idle_round_ms"]
    print(f"idle catch-up round (nothing missing): p50 {idle['p50']} ms, p99 {idle['p99']} ms")
    print(f"peak RSS MiB: {result['peak_rss_mib']}")
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
