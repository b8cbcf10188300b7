"""Wake-ups for the live stream: a pathway written anywhere wakes every open stream.

The stream reads what changed from the database, which stays the record. What changes is
how it knows when to look: instead of every open dashboard polling once a second, each
one waits on a Litestar channel for a notice that a pathway was written. The notice
carries nothing (no patient, no stage), so nothing about a patient travels through it,
and a lost notice costs a stream no more than the wait until its next heartbeat, when it
looks anyway (services.coordinator.views).

Distributed, the pathway is mostly written by `carepath worker coordinator`, another
process, so the notice goes through Redis pub/sub (Litestar's RedisChannelsPubSubBackend
subscribes to the plain channel name, which the worker publishes to). Embedded, every
service runs in one process and the channel is in memory.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
import redis.asyncio
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.config.app import AppConfig
from litestar.plugins import InitPluginProtocol
from sqlalchemy import event
from sqlalchemy.orm import Session

from services.coordinator.models import PathwayRow
from shared.observability import get_logger
from shared.runtime import ServiceRuntime
from shared.settings import BrokerKind

log = get_logger(__name__)
_NOTICES: weakref.WeakKeyDictionary[ServiceRuntime, Notices] = weakref.WeakKeyDictionary()

# After a notice, the stream waits this long before it looks, so a burst of writes (a
# queue draining) costs one look, not one a write.
STREAM_GATHER = timedelta(milliseconds=250)


@dataclass
class Notices:
    """Where this process sends its notices: Redis when distributed; the app's channel,
    on the app's event loop, when embedded (worker threads write the pathways)."""

    channel: str
    redis: redis.Redis | None = None
    plugin: ChannelsPlugin | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def send(self) -> None:
        if self.redis is not None:
            try:
                self.redis.publish(self.channel, b"")
            except redis.RedisError as error:  # the stream's fallback look covers it
                log.warning("live.notice_lost", error=type(error).__name__)
        elif self.plugin is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.plugin.publish, b"", self.channel)


def channel_of(runtime: ServiceRuntime) -> str:
    return f"{runtime.settings.platform.redis_namespace}:pathways.changed"


def send_notices(runtime: ServiceRuntime) -> None:
    """Every commit of the coordinator's sessions that wrote a pathway sends a notice."""
    notices = Notices(channel_of(runtime))
    if runtime.settings.platform.broker is BrokerKind.redis:
        notices.redis = redis.Redis.from_url(
            runtime.settings.platform.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
    _NOTICES[runtime] = notices

    def note_pathways(session: Session, _context: Any) -> None:
        if any(isinstance(row, PathwayRow) for row in (*session.new, *session.dirty)):
            session.info["pathway_written"] = True

    def notify(session: Session) -> None:
        if session.info.pop("pathway_written", False):
            notices.send()

    def forget(session: Session, _previous: Any = None) -> None:
        session.info.pop("pathway_written", None)

    event.listen(runtime.sessions, "after_flush", note_pathways)
    event.listen(runtime.sessions, "after_commit", notify)
    event.listen(runtime.sessions, "after_rollback", forget)


class _ChannelLifespan(InitPluginProtocol):
    """Embedded: notices from worker threads reach the channel on the app's loop.
    Distributed: the channel's Redis client is closed once the channel has stopped (its
    backend closes its subscription, not the client)."""

    def __init__(
        self, runtime: ServiceRuntime, plugin: ChannelsPlugin, client: redis.asyncio.Redis | None
    ) -> None:
        self.runtime = runtime
        self.plugin = plugin
        self.client = client

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        def listen() -> None:
            notices = _NOTICES[self.runtime]
            if notices.redis is None:
                notices.plugin, notices.loop = self.plugin, asyncio.get_running_loop()

        async def close() -> None:
            if self.client is not None:
                await self.client.aclose()

        app_config.on_startup.append(listen)
        app_config.on_shutdown.append(close)
        return app_config


def stream_plugins(runtime: ServiceRuntime) -> Sequence[Any]:
    """The channel the API's streams wait on, and its wiring to this process's notices."""
    client = None
    if runtime.settings.platform.broker is BrokerKind.redis:
        client = redis.asyncio.Redis.from_url(runtime.settings.platform.redis_url)
        backend: Any = RedisChannelsPubSubBackend(redis=client)
    else:
        backend = MemoryChannelsBackend()
    plugin = ChannelsPlugin(backend=backend, channels=[channel_of(runtime)])
    return (plugin, _ChannelLifespan(runtime, plugin, client))


@asynccontextmanager
async def wake_ups(plugin: ChannelsPlugin, channel: str) -> AsyncIterator[WakeUps]:
    async with plugin.start_subscription([channel]) as subscriber:
        wake = WakeUps(subscriber)
        try:
            yield wake
        finally:
            wake.close()


class WakeUps:
    """A stream's wait for the next notice, or the fallback look, whichever comes first."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.events = subscriber.iter_events()
        self.waiting: asyncio.Future[bytes] | None = None

    async def wait(self, longest: timedelta) -> bool:
        """True when a notice came; False when the fallback time passed without one."""
        if self.waiting is None:
            self.waiting = asyncio.ensure_future(anext(self.events))
        done, _pending = await asyncio.wait({self.waiting}, timeout=longest.total_seconds())
        if not done:
            return False
        self.waiting = None
        await asyncio.sleep(STREAM_GATHER.total_seconds())
        while self.subscriber.qsize:  # the burst's other notices: one look covers them
            await anext(self.events)
        return True

    def close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
