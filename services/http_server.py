"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection it accepts.

uvicorn turns Nagle off only when asyncio binds the port for it (one process). With
`--workers N` its supervisor binds the socket and passes it down, and the connections
accepted on it keep Nagle on, so every keep-alive request after the first waits about
40 ms for the client's delayed ACK: a pathway read went from 5 ms to 45 ms (uvicorn issue
#3149, open in 0.54). `carepath serve --workers N` runs with this protocol instead.

carepath serves with httptools' parser (C), not h11's (pure Python), on uvloop: h11's
parsing and header checks were a large share of a pathway read's CPU (issue 15). The
h11 protocol stays for a machine without httptools.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _send_at_once(transport: asyncio.Transport) -> None:
    connection = transport.get_extra_info("socket")
    if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HttpToolsWithoutNagle(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _send_at_once(transport)
        super().connection_made(transport)


class H11WithoutNagle(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _send_at_once(transport)
        super().connection_made(transport)
