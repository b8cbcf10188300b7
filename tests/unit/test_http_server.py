"""`carepath serve --workers N` answers keep-alive requests without Nagle's 40 ms wait
(uvicorn's own protocol leaves Nagle on when its supervisor binds the port: issue #3149)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import Mock

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services import cli
from services.http_server import H11WithoutNagle, HttpToolsWithoutNagle
from shared.settings import PlatformSettings


async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
    raise AssertionError("no request is made")


@contextmanager
def accepted_connection() -> Iterator[socket.socket]:
    # A listener bound as uvicorn's supervisor binds it: proto 0, so the connections it
    # accepts keep Nagle on.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with listener, socket.create_connection(listener.getsockname()) as client:
        accepted, _ = listener.accept()
        with accepted:
            assert client  # held open while the server side is looked at
            yield accepted


def made(protocol_class: type[H11Protocol | HttpToolsProtocol], connection: socket.socket) -> None:
    config = Config(app, http=protocol_class)
    config.load()
    loop = asyncio.new_event_loop()  # its own: never the one another test left behind
    try:
        protocol = protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
    finally:
        loop.close()
    transport = Mock()
    extras = {
        "socket": connection,
        "sockname": connection.getsockname(),
        "peername": connection.getpeername(),
    }
    transport.get_extra_info.side_effect = lambda name, default=None: extras.get(name, default)
    protocol.connection_made(transport)


def nagle_off(connection: socket.socket) -> bool:
    return connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.parametrize(
    ("protocol_class", "expected"),
    [
        (H11Protocol, False),
        (H11WithoutNagle, True),
        (HttpToolsProtocol, False),
        (HttpToolsWithoutNagle, True),
    ],
)
def test_each_accepted_connection_sends_without_waiting(
    protocol_class: type[H11Protocol | HttpToolsProtocol], expected: bool
) -> None:
    with accepted_connection() as connection:
        made(protocol_class, connection)
        assert nagle_off(connection) is expected


def test_the_serve_command_runs_uvicorn_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options, app=app))
    cli._run("services.cli:service_app", "127.0.0.1", 8000, PlatformSettings(), workers=2)
    assert ran["app"] == "services.cli:service_app"
    assert (ran["factory"], ran["workers"]) == (True, 2)
    config = Config(app, http=ran["http"])
    config.load()
    assert config.http_protocol_class is HttpToolsWithoutNagle
    assert ran["loop"] == "uvloop"
