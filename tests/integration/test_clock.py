"""The movable clock over real Redis: every process of a distributed system agrees on now."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from shared.clock import REDIS_REFRESH_S, ClinicClock, RedisOffset
from tests.support import REDIS_TEST_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def key() -> Iterator[str]:
    name = f"cp-test-{uuid.uuid4().hex[:8]}:clock"
    yield name
    redis.Redis.from_url(REDIS_TEST_URL).delete(name)


def test_a_move_made_in_one_process_reaches_another_within_the_refresh(key: str) -> None:
    trainer = ClinicClock(RedisOffset(REDIS_TEST_URL, key))
    worker = ClinicClock(RedisOffset(REDIS_TEST_URL, key))
    assert worker.offset == timedelta(0)

    trainer.advance(timedelta(days=3))
    assert trainer.offset == timedelta(days=3)  # the process that moved it sees it at once

    time.sleep(REDIS_REFRESH_S + 0.1)
    assert worker.offset == timedelta(days=3)
    assert abs(worker.now() - trainer.now()) < timedelta(seconds=1)

    trainer.reset()
    assert redis.Redis.from_url(REDIS_TEST_URL).get(key) is None
    time.sleep(REDIS_REFRESH_S + 0.1)
    assert worker.offset == timedelta(0)


def test_an_unreachable_redis_keeps_the_last_offset_and_never_stops_a_rule(key: str) -> None:
    store = RedisOffset(REDIS_TEST_URL, key)
    ClinicClock(RedisOffset(REDIS_TEST_URL, key)).advance(timedelta(hours=6))
    assert store.read() == timedelta(hours=6)

    store.client = redis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    store.read_at = float("-inf")
    assert ClinicClock(store).offset == timedelta(hours=6)
