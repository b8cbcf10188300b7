"""Rebuilding every pathway from the event store at 10k, 100k and 1M events (issue 15:
"rebuild 10k -> 1M events: linear, stated").

For each size, a throwaway PostgreSQL database is migrated and its event store filled
straight with `COPY` (the rows the coordinator would have stored: `coordinator.py`'s
histories of E events a patient, so 1M events is 10,000 patients at E = 100). Nothing is
folded beforehand, as after a restore of the store alone. Then, as an operator runs them:
`carepath coordinator rebuild` (every pathway folded and written) and
`carepath coordinator rebuild --check` (every pathway folded again and compared with the
stored one; it must find 0 different). Each is timed whole, start-up included, and its
peak RSS read from the kernel (`getrusage` of the child).

    .venv/bin/python benchmarks/rebuild.py                       # 10k, 100k, 1M events
    .venv/bin/python benchmarks/rebuild.py --sizes 10000,100000 --events-per-patient 100
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from coordinator import SERVICE, patient_history
from harness import (
    CAREPATH,
    PG_BASE,
    base_env,
    create_databases,
    drop_databases,
    machine,
    migrate,
    write_results,
)

COLUMNS = (
    "event_id, patient_id, type, schema_version, producer, subject_type, subject_id, "
    "sequence, occurred_at, received_at, envelope"
)


def fill_store(database: str, patients: int, events: int, seed: int) -> dict[str, Any]:
    """P x E stored events, written with one COPY; returns how long that took."""
    started = time.monotonic()
    now = datetime.now(UTC)
    stored = 0
    url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    with (
        psycopg.connect(url) as conn,
        conn.cursor().copy(f"COPY stored_event ({COLUMNS}) FROM STDIN") as copy,
    ):
        for index in range(patients):
            for raw in patient_history(index, events, seed, now):
                copy.write_row(
                    (
                        raw["event_id"],
                        raw["patient_id"],
                        raw["type"],
                        raw["schema_version"],
                        raw["producer"],
                        raw["subject"]["type"],
                        raw["subject"]["id"],
                        raw["sequence"],
                        raw["occurred_at"],
                        now,
                        msgspec.json.encode(raw).decode(),
                    )
                )
                stored += 1
    return {"events": stored, "seconds": time.monotonic() - started}


def timed_command(env: dict[str, str], *args: str) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [CAREPATH, *args], env=env, capture_output=True, text=True, timeout=4 * 3600, check=False
    )
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    said = (done.stdout.strip().splitlines() or [""])[0]
    if done.returncode != 0 and not said:
        raise RuntimeError(f"carepath {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return {
        "seconds": seconds,
        "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        # ru_maxrss of children is the largest child so far (KiB on Linux).
        "peak_rss_mib_so_far": after.ru_maxrss / 1024,
        "said": said,
        "exit_code": done.returncode,
    }


def one_size(total: int, per: int, seed: int) -> dict[str, Any]:
    patients = max(1, total // per)
    database = f"carepath_bench_{secrets.token_hex(4)}_{SERVICE}"
    env = base_env() | {
        "CAREPATH_COORDINATOR_DATABASE_URL": f"{PG_BASE}/{database}",
        "CAREPATH_JWT_SECRET": secrets.token_urlsafe(48),
        "CAREPATH_LOG_LEVEL": "WARNING",
    }
    try:
        create_databases([database])
        migrate(SERVICE, env)
        # The same command on an empty store: its start-up (imports, settings, connection).
        empty = timed_command(env, "coordinator", "rebuild", "--check")
        filled = fill_store(database, patients, per, seed)
        print(f"  store filled: {filled['events']} events in {filled['seconds']:.1f}s", flush=True)
        rebuilt = timed_command(env, "coordinator", "rebuild")
        print(f"  rebuild: {rebuilt['seconds']:.1f}s ({rebuilt['said']})", flush=True)
        checked = timed_command(env, "coordinator", "rebuild", "--check")
        print(f"  rebuild --check: {checked['seconds']:.1f}s ({checked['said']})", flush=True)
    finally:
        drop_databases([database])
    return {
        "events": filled["events"],
        "patients": patients,
        "fill": filled,
        "empty_store": empty,
        "rebuild": rebuilt,
        "check": checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="events, comma-separated")
    parser.add_argument("--events-per-patient", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    runs = []
    for total in sizes:
        print(f"{total} events:", flush=True)
        runs.append(one_size(total, args.events_per_patient, args.seed))
    print(
        f"\n{'events':>9} {'patients':>8} {'empty s':>8} {'rebuild s':>10} {'µs/event':>9} "
        f"{'--check s':>10} {'µs/event':>9}  said"
    )
    for run in runs:
        rebuilt, checked, empty = run["rebuild"], run["check"], run["empty_store"]["seconds"]
        print(
            f"{run['events']:9d} {run['patients']:8d} {empty:8.1f} {rebuilt['seconds']:10.1f} "
            f"{(rebuilt['seconds'] - empty) * 1e6 / run['events']:9.0f} "
            f"{checked['seconds']:10.1f} {(checked['seconds'] - empty) * 1e6 / run['events']:9.0f}"
            f"  {checked['said']!r}"
        )
    print("(µs/event: the command's time less its time on an empty store, over the events)")
    peak = max(run["check"]["peak_rss_mib_so_far"] for run in runs)
    print(f"largest peak RSS of a rebuild process: {peak:.0f} MiB")
    out = write_results(
        "rebuild",
        {"machine": machine(), "settings": vars(args), "runs": runs},
    )
    print(f"written: {out}")
    if any(run["check"]["exit_code"] != 0 for run in runs):
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
