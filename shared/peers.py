"""Reading another service's API as this service (role `service`, its own token).

A consumer sometimes needs what an event leaves out on purpose: free text such as a
referral's reason never travels in an event (no patient-identifying data in events), so
the referrals service reads it from the coordinator when it makes the MDT's referral,
and every consumer reads its producers' feeds the same way. Distributed, the read goes
over HTTP to the other service's URL; embedded, through the other service's routes in
this very process (full middleware, guards and audit, no socket). Either way a refusal is
an `ApiProblem` and an unreachable service an `httpx.HTTPError`: the consumer's retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import msgspec

from shared.auth import Role, issue_token
from shared.client import AsyncCarepathClient, CarepathClient
from shared.settings import PlatformSettings, ServiceSettings

T = TypeVar("T")

# (service, path, query parameters) → the decoded JSON answer.
ReadPeer = Callable[[str, str, dict[str, Any]], Any]


def peer_over_http(settings: ServiceSettings, caller: str) -> ReadPeer:
    def read(service: str, path: str, params: dict[str, Any]) -> Any:
        token = issue_token(settings.platform, caller, Role.service)
        with CarepathClient(settings.url_of(service), token, timeout=10) as client:
            return client.get(path, **params)

    return read


def peer_in_process(app: Any, platform: PlatformSettings, caller: str) -> ReadPeer:
    def read(service: str, path: str, params: dict[str, Any]) -> Any:
        async def fetch() -> Any:
            token = issue_token(platform, caller, Role.service)
            transport = httpx.ASGITransport(app=app)
            async with AsyncCarepathClient(
                f"http://carepath.embedded/{service}", token, transport=transport
            ) as client:
                return await client.get(path, **params)

        return asyncio.run(fetch())

    return read


class Peers:
    """This service's way to read the others, set once the run mode is known; kept in
    its sessions' info so an event handler, given only a session, can read."""

    def __init__(self, read: ReadPeer) -> None:
        self.read = read

    def get(self, service: str, path: str, into: type[T], **params: Any) -> T:
        return msgspec.convert(self.read(service, path, params), into, strict=False)


def peers_of(session: Any) -> Peers:
    peers: Peers = session.info["peers"]
    return peers
