"""Benchmark the pathway status page as the MDT (with names) and as an admin (without).

Runs `carepath up --demo` (the embedded system, SQLite) on a throwaway data folder, waits
for the demo's 50 patients, signs in through the development sign-in as the MDT and as
an admin, and times GET /status for each, one request at a time (warm-up first). The MDT's
page asks the referrals service for the names of the patients on it; the admin's does not,
so the ratio of the two is what the names cost.

Usage: .venv/bin/python benchmarks/pages.py [--requests N]
The server is started with this checkout's code (`python -c "from services.cli import
main; main()"` run in the checkout), so the same script measures an older checkout when
copied into it.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import ROOT, Processes, base_env, free_port, machine, percentiles, write_results

ROLES = (("dr-mdt-lead", "mdt"), ("admin-kim", "admin"))


def _signed_in(base: str, user: str, role: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    client.get("/sign-in")
    form = {"user": user, "role": role, "_csrf_token": client.cookies["csrftoken"]}
    answer = client.post("/sign-in", data=form)
    if answer.status_code >= 400:
        raise RuntimeError(f"sign-in as {role} failed: {answer.status_code}")
    return client


def _time_page(client: httpx.Client, path: str, requests: int, warm_up: int) -> dict[str, Any]:
    seconds: list[float] = []
    for number in range(warm_up + requests):
        began = time.perf_counter()
        answer = client.get(path)
        took = time.perf_counter() - began
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code}")
        if number >= warm_up:
            seconds.append(took)
    rows = len(re.findall(r"<tr\b", answer.text)) - 1  # less the header row
    return {"rows": rows, **{k: round(v * 1000, 1) for k, v in percentiles(seconds).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warm-up", type=int, default=10)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="carepath-pages-"))
    env = base_env() | {"CAREPATH_JWT_SECRET": secrets.token_hex(32)}
    processes = Processes(env, workdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"checkout {ROOT}; logs in {workdir}")
    try:
        processes.start(
            "up",
            [
                sys.executable,
                "-c",
                "from services.cli import main; main()",
                "up",
                "--demo",
                "--port",
                str(port),
                "--data-dir",
                str(workdir / "data"),
            ],
        )
        processes.wait_for_health("up", base, timeout_s=60)
        processes.wait_for_log("up", "demo cohort ready", timeout_s=300)
        figures: dict[str, Any] = {}
        for user, role in ROLES:
            client = _signed_in(base, user, role)
            try:
                figures[role] = _time_page(client, "/status", args.requests, args.warm_up)
            finally:
                client.close()
        figures["peak_rss_mib"] = processes.peak_rss("up")
    finally:
        processes.stop_all()

    mdt, admin = figures["mdt"], figures["admin"]
    print(f"\nGET /status, {args.requests} requests one at a time after {args.warm_up} warm-up")
    print(f"{'as':<8}{'rows':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for role in ("mdt", "admin"):
        row = figures[role]
        print(f"{role:<8}{row['rows']:>6}{row['p50']:>9}{row['p95']:>9}{row['p99']:>9}")
    print(f"MDT / admin at p50: {mdt['p50'] / admin['p50']:.2f}x (goal: within 2x)")
    print(f"peak RSS of carepath up: {figures['peak_rss_mib']} MiB")
    path = write_results("pages", {"machine": machine(), "args": vars(args), **figures})
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
