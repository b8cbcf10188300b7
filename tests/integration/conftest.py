"""Fixtures for the integration tier: real PostgreSQL databases and a real Redis."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from dramatiq import Broker
from litestar import Litestar
from litestar.testing import TestClient

from services.registry import spec_of
from shared.messaging import make_broker
from shared.runtime import ServiceRuntime
from shared.settings import PlatformSettings, load_service_settings
from shared.web import build_app
from tests.support import (
    JWT_SECRET,
    REDIS_TEST_URL,
    SERVICES,
    PrivateRedis,
    postgres_databases,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    with postgres_databases("cp_it", SERVICES) as urls:
        yield urls


class Stack:
    """One test's carepath settings: its databases, Redis and namespace."""

    def __init__(self, databases: dict[str, str], redis_url: str, tmp_path: Path) -> None:
        self.databases = databases
        self.redis_url = redis_url
        self.namespace = f"cp-test-{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path
        self.extra: dict[str, str] = {
            "CAREPATH_RELAY_INTERVAL_S": "0.2",
            "CAREPATH_MAX_RETRIES": "2",
            "CAREPATH_MIN_BACKOFF_MS": "50",
            "CAREPATH_MAX_BACKOFF_MS": "200",
            "CAREPATH_HEARTBEAT_TIMEOUT_MS": "1500",
            "CAREPATH_MAINTENANCE_CHANCE": "1000000",
            "CAREPATH_WORKER_THREADS": "2",
        }

    def env(self, **overrides: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
        env.update(
            {
                "CAREPATH_ENV": "production",
                "CAREPATH_JWT_SECRET": JWT_SECRET,
                "CAREPATH_BROKER": "redis",
                "CAREPATH_REDIS_URL": self.redis_url,
                "CAREPATH_REDIS_NAMESPACE": self.namespace,
                "CAREPATH_LOG_LEVEL": "INFO",
            }
        )
        for service, url in self.databases.items():
            env[f"CAREPATH_{service.upper()}_DATABASE_URL"] = url
        env.update(self.extra)
        env.update(overrides)
        return env

    def platform(self) -> PlatformSettings:
        env = self.env()
        return PlatformSettings(
            **{
                key.removeprefix("CAREPATH_").lower(): value
                for key, value in env.items()
                if key.startswith("CAREPATH_") and "_DATABASE_URL" not in key
            }
        )

    def runtime(self, service: str, broker: Broker | None = None) -> ServiceRuntime:
        platform = self.platform()
        settings = load_service_settings(service, platform, environ=self.env())
        runtime = ServiceRuntime(spec_of(service), settings, broker or make_broker(platform))
        runtime.migrate()
        return runtime

    def api(self, service: str) -> Litestar:
        """One service's API in this process, as `carepath serve` builds it."""
        runtime = self.runtime(service)
        return build_app(
            [runtime], runtime.broker, self.platform(), embedded=False, migrate_on_start=False
        )


@pytest.fixture
def stack(databases: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(databases, REDIS_TEST_URL, tmp_path)
    yield stack
    client = redis.Redis.from_url(stack.redis_url)
    try:
        keys = list(client.scan_iter(f"{stack.namespace}*"))
        if keys:
            client.delete(*keys)
    except redis.ConnectionError:
        pass  # a private redis-server of the test's own, already gone


@pytest.fixture
def api_client() -> Iterator[Callable[[Litestar], TestClient[Litestar]]]:
    clients: list[TestClient[Litestar]] = []

    def open_client(app: Litestar) -> TestClient[Litestar]:
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield open_client
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed to stop and restart Redis during a test")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
