"""What the benchmark scripts share: subprocesses, throwaway databases, timing, results.

The scripts are run by path (``.venv/bin/python benchmarks/pipeline.py``), which puts
``benchmarks/`` first on ``sys.path``, so they import this module as ``harness``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CAREPATH = str(Path(sys.executable).parent / "carepath")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/14"


# --- timing and measuring --------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float, what: str) -> float:
    """Poll until check() is true; returns the monotonic time it first was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _session_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    pick = (lambda p: cuts[p - 1]) if cuts else (lambda p: values[0])
    return {
        "p50": pick(50),
        "p95": pick(95),
        "p99": pick(99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def timed(
    label: str, phase: Callable[..., dict[str, Any]], *args: Any, **kw: Any
) -> dict[str, Any]:
    print(f"{label} ...", end=" ", flush=True)
    started = time.monotonic()
    figures = phase(*args, **kw)
    print(f"{time.monotonic() - started:.1f}s", flush=True)
    return figures


# --- carepath processes ----------------------------------------------------------------


def base_env() -> dict[str, str]:
    """This environment without CAREPATH_* settings: a run sets every one it relies on."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}


def migrate(service: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [CAREPATH, "migrate", service], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"carepath migrate {service} failed:\n{done.stderr[-3000:]}")


class Processes:
    """Subprocesses in their own sessions, logging to files, always stopped."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                args,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check_running(self, name: str) -> None:
        """Fail at once, with the log's tail, rather than wait out a timeout."""
        if self.running[name].poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{self.log(name)[-3000:]}")

    def wait_for_log(self, name: str, needle: str, timeout_s: float = 30, times: int = 1) -> float:
        def seen() -> bool:
            self.check_running(name)
            return self.log(name).count(needle) >= times

        return wait_until(seen, timeout_s, 0.005, f"{name} to log {needle!r}")

    def wait_for_health(self, name: str, base_url: str, timeout_s: float = 30) -> None:
        def healthy() -> bool:
            self.check_running(name)
            try:
                return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s, 0.05, f"{name} /health")

    def peak_rss(self, name: str) -> float | None:
        """VmHWM of the process, plus its session's (a server's worker processes)."""
        leader = self.running[name].pid
        peaks = [
            peak_rss_mib(int(stat.parent.name))
            for stat in Path("/proc").glob("[0-9]*/stat")
            if stat.parent.name == str(leader) or _session_of(stat) == leader
        ]
        return sum(p for p in peaks if p is not None) if any(peaks) else None

    def stop(self, *names: str, timeout_s: float = 15) -> None:
        """SIGTERM each process group, then SIGKILL whatever outlives the timeout."""
        procs = [self.running.pop(name) for name in names if name in self.running]
        for proc in procs:
            with suppress(ProcessLookupError):  # the group is the session the process leads
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        self.stop(*self.running)


# --- databases -------------------------------------------------------------------------


def create_databases(names: list[str]) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_databases(names: list[str]) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- results ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_results(benchmark: str, result: dict[str, Any]) -> Path:
    """benchmarks/results/<benchmark>-<UTC timestamp>.json; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{benchmark}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out
