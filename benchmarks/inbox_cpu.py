"""CPU of one referrals inbox page in this process: no HTTP, no other clients.

Loads `inbox.py`'s 10,000 referrals into a throwaway PostgreSQL database, then builds the
psychologist's first page as the API does (services.inbox with its audit row and commit,
the possible duplicates, the 50 rows with their waiting-time standards) N times on one
thread, and prints the CPU milliseconds a page (`time.process_time`). With `--profile`
it also prints cProfile's top functions by cumulative time.

Usage: .venv/bin/python benchmarks/inbox_cpu.py [--pages N] [--profile]
To measure an older checkout: PYTHONPATH=<its worktree> with its own copy of this script.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets
import time

from harness import PG_BASE, base_env, create_databases, drop_databases, migrate
from inbox import load_referrals

from services.referrals import services, views
from shared.audit import AccessTrail
from shared.auth import Role, User
from shared.db import SessionFactory, make_engine, make_session_factory
from shared.events import Actor
from shared.tables import utcnow
from shared.uow import UnitOfWork

PSYCHOLOGIST = User(id="bench-psychologist", role=Role.psychologist)


def first_page(sessions: SessionFactory) -> int:
    """The psychologist's first inbox page, as `GET /api/referrals` builds it."""
    user = PSYCHOLOGIST
    with sessions() as session:
        uow = UnitOfWork(
            session,
            service="referrals",
            actor=Actor(user_id=user.id, role=user.role.value),
            trail=AccessTrail(user.id, user.role.value, "/api/referrals"),
        )
        query = services.InboxQuery("psychology", "received", None, None, 50)
        page, _ = services.inbox(query, uow, user)
        now = utcnow()
        duplicates = views.possible_duplicates(session, [referral for referral, _ in page])
        rows = [
            views.referral_read(
                session, r, user, now=now, patient=p, duplicate_of=duplicates.get(r.id)
            )
            for r, p in page
        ]
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--referrals", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    database = f"carepath_bench_{secrets.token_hex(4)}_inbox_cpu"
    url = f"{PG_BASE}/{database}"
    create_databases([database])
    try:
        migrate("referrals", base_env() | {"CAREPATH_REFERRALS_DATABASE_URL": url})
        load_referrals(database, args.referrals, seed=1)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            assert first_page(sessions) == 50, "the first page should be full"
            for _ in range(20):  # warm SQLAlchemy's and psycopg's statement caches
                first_page(sessions)
            started = time.process_time()
            for _ in range(args.pages):
                first_page(sessions)
            cpu_ms = (time.process_time() - started) / args.pages * 1000
            pages = args.pages
            print(f"inbox first page, psychologist: {cpu_ms:.2f} ms CPU a page ({pages} pages)")
            if args.profile:
                # CPU time, not wall time: a page's waits on PostgreSQL are not its cost.
                profile = cProfile.Profile(time.process_time)
                profile.runcall(lambda: [first_page(sessions) for _ in range(100)])
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        finally:
            engine.dispose()
    finally:
        drop_databases([database])


if __name__ == "__main__":
    main()
