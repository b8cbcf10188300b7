"""Helpers the integration and e2e tiers share: processes, ports, databases, bodies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import redis

from shared.client import CarepathClient

T = TypeVar("T")

POSTGRES_ADMIN_URL = os.environ.get(
    "CAREPATH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("CAREPATH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
JWT_SECRET = "test-secret-that-is-long-enough-for-production-0123456789"
SERVICES = ("referrals", "infusions", "therapy", "coordinator")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, psycopg.Error, ConnectionError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def carepath(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


class Processes:
    """Subprocesses started by one test, always stopped at its end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.log_dir,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        process = self.running.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def wait_for_http(url: str, timeout: float = 40.0) -> None:
    def answered() -> bool:
        return httpx.get(url, timeout=1.0).status_code == 200

    wait_until(answered, timeout=timeout, interval=0.2, what=url)


@contextmanager
def postgres_databases(
    prefix: str, names: tuple[str, ...], templates: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Throwaway databases, one per name (each a copy of ``templates[name]`` if given),
    dropped afterwards: name → SQLAlchemy URL."""
    suffix = uuid.uuid4().hex[:8]
    created = {name: f"{prefix}_{suffix}_{name}" for name in names}
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        for name, database in created.items():
            copy = f' TEMPLATE "{database_name(templates[name])}"' if templates else ""
            connection.execute(f'CREATE DATABASE "{database}"{copy}')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield {name: f"{base}/{database}" for name, database in created.items()}
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            for database in created.values():
                connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def plain_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


def scalar(database_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        row = connection.execute(query, params).fetchone()
    return row[0] if row else None


def execute(database_url: str, query: str, *params: Any) -> None:
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        connection.execute(query, params)


def token(role: str, user: str = "test-user") -> str:
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    return issue_token(PlatformSettings(jwt_secret=JWT_SECRET), user, Role(role))


def patient_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "given_name": "Test",
        "family_name": "Patient",
        "birth_date": "1975-04-12",
        "sex": "female",
    }
    body.update(overrides)
    return body


def referral_body(patient_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient_id": patient_id,
        "target": "ketamine-infusion",
        "priority": "routine",
        "reason": "CRPS of the left foot with low mood despite treatment",
        "conditions": ["crps", "depression"],
        "referrer": {"name": "Dr Test", "role": "pain consultant", "organisation": "Test Trust"},
        "prior_treatments": [
            {"name": "gabapentin", "kind": "medicine", "outcome": "no meaningful relief"}
        ],
        "baseline": {"phq9_items": [2, 2, 1, 1, 2, 1, 1, 1, 0], "pain_nrs": 8},
    }
    body.update(overrides)
    return body


def timeline_types(pathway: dict[str, Any]) -> list[str]:
    return [entry["type"] for entry in pathway.get("timeline", [])]


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port; never the shared one.

    It keeps nothing on disk, so a restart on the same port is a Redis that forgot every
    queued message.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        assert self.process is None, "already running"
        self.starts += 1
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=20, interval=0.1, what="the private redis-server")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGTERM: a clean stop (it still keeps nothing on disk)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: whatever it held is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart_empty(self) -> None:
        self.kill()
        self.start()
        assert self.client().dbsize() == 0, "a restarted private Redis must be empty"

    def queue_lengths(self, namespace: str) -> dict[str, int]:
        client = self.client()
        return {s: int(client.llen(f"{namespace}:{s}.events")) for s in SERVICES}


class LiveStream(threading.Thread):
    """Reads a server-sent event stream in the background, keeping what it received."""

    def __init__(self, url: str, bearer: str) -> None:
        super().__init__(daemon=True)
        self.url, self.bearer = url, bearer
        self.events: list[dict[str, object]] = []
        self.text = ""

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.bearer}"}
        with (
            suppress(httpx.HTTPError),
            httpx.stream(
                "GET", self.url, headers=headers, timeout=httpx.Timeout(5, read=None)
            ) as response,
        ):
            for line in response.iter_lines():
                self.text += line + "\n"
                if line.startswith("data: "):
                    self.events.append(json.loads(line.removeprefix("data: ")))

    def seconds_to_see_a_referral(self, referrals_url: str, referrer_token: str) -> float:
        """From a new referral's POST until this stream carries its pathway."""
        with CarepathClient(referrals_url, referrer_token) as referrer:
            newcomer = referrer.register_patient(**patient_body())
            asked_at = time.monotonic()
            referrer.create_referral(**referral_body(str(newcomer.id), target="psychology"))
        wait_until(lambda: self.saw(str(newcomer.id), "referred"), timeout=20, what="the stream")
        return time.monotonic() - asked_at

    def saw(self, patient_id: str, stage: str) -> bool:
        return any(
            (event.get("patient_id"), event.get("stage")) == (patient_id, stage)
            for event in list(self.events)
        )
