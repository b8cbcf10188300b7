"""A near no-op dramatiq actor for the raw-throughput baseline of benchmarks/pipeline.py.

Run by ``python -m dramatiq benchmarks.noop_actor``; it reads the same Redis settings as
carepath (``CAREPATH_REDIS_URL``, ``CAREPATH_REDIS_NAMESPACE``). The only work per
message is one Redis INCR, so the benchmark can count processed messages.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench.noop"
ACTOR = "bench_noop"
NAMESPACE = os.environ.get("CAREPATH_REDIS_NAMESPACE", "carepath-bench")
COUNTER_KEY = f"{NAMESPACE}:bench:noop-done"

broker = RedisBroker(
    url=os.environ.get("CAREPATH_REDIS_URL", "redis://127.0.0.1:6379/14"), namespace=NAMESPACE
)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, max_retries=0)
def bench_noop() -> None:
    broker.client.incr(COUNTER_KEY)
