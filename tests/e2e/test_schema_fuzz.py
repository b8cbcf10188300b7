"""schemathesis against `carepath up`'s OpenAPI schema, as each role that uses the API.

Every check schemathesis has (server errors, status codes, content types, response
bodies against the documented schema, Allow headers, schema-violating input rejected,
schema-valid input accepted or refused with a documented 4xx), a fixed seed and a
bounded number of cases an operation, so a failure reproduces with the command it
prints. The embedded app serves every service's operations in one schema.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import (
    JWT_SECRET,
    REDIS_TEST_URL,
    Processes,
    carepath,
    free_port,
    postgres_databases,
    token,
    wait_for_http,
)

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = "20261203"
EXAMPLES_AN_OPERATION = "5"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fuzz")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
    env["CAREPATH_JWT_SECRET"] = JWT_SECRET
    yield from _serving(workdir, env, "up", "--data-dir", str(workdir / "data"))


def _serving(workdir: Path, env: dict[str, str], *command: str) -> Iterator[str]:
    """`carepath <command> --port P` until the module's tests are done, at its URL."""
    processes = Processes(workdir)
    port = free_port()
    processes.start(command[0], carepath(*command, "--port", str(port)), env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health")
        yield base
    finally:
        processes.stop_all()


def _schemathesis() -> str:
    beside_python = Path(sys.executable).with_name("schemathesis")
    found = str(beside_python) if beside_python.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is a dev dependency: uv sync installs it"
    return found


@pytest.mark.e2e
@pytest.mark.embedded_only
@pytest.mark.parametrize("role", ["referrer", "psychologist", "infusion-clinician", "mdt", "admin"])
def test_the_api_keeps_its_schema_under_fuzzing(base_url: str, role: str, tmp_path: Path) -> None:
    _fuzz(f"{base_url}/schema/openapi.json", role, tmp_path)


@pytest.fixture(scope="module")
def one_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The referrals service alone (`carepath serve`, the distributed mode) on PostgreSQL
    and Redis: its schema also holds the platform routes every service has (event feed,
    feed positions, dead letters, operations), which the embedded app's does not."""
    workdir = tmp_path_factory.mktemp("fuzz-one")
    namespace = f"cp-fuzz-{uuid.uuid4().hex[:8]}"
    with postgres_databases("cp_fuzz", ["referrals"]) as urls:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
        env |= {
            "CAREPATH_JWT_SECRET": JWT_SECRET,
            "CAREPATH_REDIS_URL": REDIS_TEST_URL,
            "CAREPATH_REDIS_NAMESPACE": namespace,
            "CAREPATH_REFERRALS_DATABASE_URL": urls["referrals"],
        }
        migrated = subprocess.run(
            carepath("migrate", "referrals"), env=env, capture_output=True, text=True, timeout=120
        )
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        try:
            yield from _serving(workdir, env, "serve", "referrals")
        finally:
            client = redis.Redis.from_url(REDIS_TEST_URL)
            keys = list(client.scan_iter(f"{namespace}*"))
            if keys:
                client.delete(*keys)


@pytest.mark.e2e
@pytest.mark.parametrize("role", ["admin", "service", "referrer"])
def test_one_services_own_schema_with_its_platform_routes_under_fuzzing(
    one_service: str, role: str, tmp_path: Path
) -> None:
    _fuzz(f"{one_service}/schema/openapi.json", role, tmp_path)


def _fuzz(schema_url: str, role: str, workdir: Path) -> None:
    run = subprocess.run(
        [
            _schemathesis(),
            "--config-file",
            str(CONFIG),
            "run",
            schema_url,
            "--header",
            f"Authorization: Bearer {token(role, f'fuzz-{role}')}",
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-examples",
            EXAMPLES_AN_OPERATION,
            "--workers",
            "1",
            "--request-timeout",
            "20",
            # A server-sent event stream stays open by design: every case would wait out
            # the timeout. tests/integration/embedded/test_pathway_stream.py tests it.
            "--exclude-operation-id",
            "streamPathwayChanges",
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
