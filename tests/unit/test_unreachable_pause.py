"""A service that could not be reached is not asked again for a few seconds (issue 15):
an MDT pathway read asks the referrals service for the name, and while that service is
down each read would otherwise wait out a connect timeout, or a refusal, every time."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from shared.client import UnreachablePause, connection_pool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def peer(answers: list[Exception | int]) -> tuple[httpx.AsyncClient, list[str], Clock]:
    """A pool whose transport gives these answers in turn, noting each call it gets."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        given = answers.pop(0)
        if isinstance(given, Exception):
            raise given
        return httpx.Response(given)

    clock = Clock()
    pause = UnreachablePause(httpx.MockTransport(answer), pause_s=5.0, clock=clock)
    return httpx.AsyncClient(transport=pause), asked, clock


def test_a_peer_that_refused_is_not_asked_again_until_the_pause_is_over() -> None:
    async def scenario() -> None:
        client, asked, clock = peer([httpx.ConnectError("refused"), 200, 200])
        with pytest.raises(httpx.ConnectError):
            await client.get("http://referrals:8001/api/patients/names")
        clock.now += 4.9
        with pytest.raises(httpx.ConnectError, match="not asked again yet"):
            await client.get("http://referrals:8001/api/patients/names")
        assert len(asked) == 1  # the second call never left this process
        # Another service, or another port, is another peer.
        assert (await client.get("http://therapy:8003/health")).status_code == 200
        clock.now += 0.2
        assert (await client.get("http://referrals:8001/health")).status_code == 200
        assert len(asked) == 3

    asyncio.run(scenario())


def test_a_timeout_pauses_but_an_answer_the_peer_sent_does_not() -> None:
    async def scenario() -> None:
        timeout = httpx.ConnectTimeout("no answer")
        client, asked, clock = peer([503, 500, httpx.ReadTimeout("slow"), 200, timeout, 200])
        for _ in range(2):  # answers the service sent: it is up
            await client.get("http://referrals:8001/x")
        with pytest.raises(httpx.ReadTimeout):  # it accepted the connection: up, but slow
            await client.get("http://referrals:8001/x")
        assert (await client.get("http://referrals:8001/x")).status_code == 200
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("http://referrals:8001/x")
        with pytest.raises(httpx.ConnectError):
            await client.get("http://referrals:8001/x")
        assert len(asked) == 5
        clock.now += 5.0
        assert (await client.get("http://referrals:8001/x")).status_code == 200
        assert len(asked) == 6

    asyncio.run(scenario())


def test_the_pool_pauses_a_closed_port_for_real() -> None:
    """Over the network (no transport given) the pool pauses; the second call to a port
    nothing listens on is refused without a connection being tried."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends

    async def scenario() -> str:
        pool = connection_pool()
        try:
            with pytest.raises(httpx.ConnectError):
                await pool.get(f"http://127.0.0.1:{port}/health")
            with pytest.raises(httpx.ConnectError) as again:
                await pool.get(f"http://127.0.0.1:{port}/health")
            return str(again.value)
        finally:
            await pool.aclose()

    assert "not asked again yet" in asyncio.run(scenario())
