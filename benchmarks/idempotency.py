"""Benchmark what an Idempotency-Key costs a request (issue 16).

POST /api/referrals in this process (Litestar's test client, no socket), N times each:
without a key, with a new key each time (claim + stored answer in the transaction), and
the same key again (a replay: no command runs). Printed: p50 and p90 in milliseconds,
on the referrals API over SQLite and over PostgreSQL (a throwaway database, as the
integration tests make; no Redis, no workers).

Usage: .venv/bin/python benchmarks/idempotency.py [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from litestar import Litestar  # noqa: E402
from litestar.testing import TestClient  # noqa: E402

from services.registry import spec_of  # noqa: E402
from shared.auth import Role, issue_token  # noqa: E402
from shared.messaging import make_broker  # noqa: E402
from shared.runtime import ServiceRuntime  # noqa: E402
from shared.settings import BrokerKind, PlatformSettings, RunMode, load_service_settings  # noqa: E402
from shared.web import build_app  # noqa: E402
from tests.support import JWT_SECRET, patient_body, postgres_databases, referral_body  # noqa: E402


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=10)
    return f"p50 {statistics.median(samples):6.2f} ms   p90 {cuts[8]:6.2f} ms"


def measure(client: TestClient[Litestar], headers: dict[str, str], patient_id: str, n: int) -> None:
    body = referral_body(patient_id)
    replay_key = str(uuid4())
    modes: dict[str, Callable[[], dict[str, str]]] = {
        "no key": lambda: {},
        "new key": lambda: {"Idempotency-Key": str(uuid4())},
        "replay": lambda: {"Idempotency-Key": replay_key},
    }
    samples: dict[str, list[float]] = {name: [] for name in modes}
    # Interleaved, so the background work (the relay, the coordinator consuming the
    # events) weighs on every mode alike; the first round warms up and is not counted.
    for round_ in range(n + 1):
        for name, extra in modes.items():
            started = time.perf_counter()
            response = client.post("/api/referrals", json=body, headers={**headers, **extra()})
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 201, response.text
            if round_:
                samples[name].append(elapsed)
    for name, taken in samples.items():
        print(f"  {name:8} {percentiles(taken)}   (n={n})")


def referrals_api(database_url: str, n: int) -> None:
    """The referrals API alone, as `carepath serve referrals` builds it, without workers:
    the embedded app's workers and relay consuming every referral make its figures
    swing more between runs than the key costs."""
    platform = PlatformSettings(
        env=RunMode.development,
        jwt_secret=JWT_SECRET,
        broker=BrokerKind.memory,
        relay_interval_s=60,
    )
    environ = {"CAREPATH_REFERRALS_DATABASE_URL": database_url}
    settings = load_service_settings("referrals", platform, environ)
    runtime = ServiceRuntime(spec_of("referrals"), settings, make_broker(platform))
    app = build_app([runtime], runtime.broker, platform, embedded=False, migrate_on_start=True)
    headers = {"Authorization": f"Bearer {issue_token(platform, 'gp-bench', Role.referrer)}"}
    with TestClient(app) as client:
        created = client.post("/api/patients", json=patient_body(), headers=headers)
        measure(client, headers, created.json()["id"], n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    n = parser.parse_args().requests
    print("referrals API on SQLite:")
    referrals_api(f"sqlite:///{tempfile.mkdtemp()}/referrals.sqlite3", n)
    print("referrals API on PostgreSQL:")
    with postgres_databases("cp_bench_idem", ("referrals",)) as urls:
        referrals_api(urls["referrals"], n)


if __name__ == "__main__":
    main()
