"""The correlation id: taken from the request (if well formed) or made, bound to the
logs and returned in the response header."""

from __future__ import annotations

import re

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.types import Message as AsgiMessage

from shared.observability import (
    CORRELATION_HEADER,
    bind_correlation_id,
    get_logger,
    new_correlation_id,
)

log = get_logger(__name__)

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# --- correlation id ------------------------------------------------------------------


def correlation_middleware(app: ASGIApp) -> ASGIApp:
    """Carry X-Correlation-ID from the request into logs, events and the response."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = (
            dict(scope["headers"]).get(CORRELATION_HEADER.lower().encode(), b"").decode("latin-1")
        )
        correlation_id = given if _CORRELATION_ID.match(given) else new_correlation_id()
        structlog.contextvars.clear_contextvars()
        bind_correlation_id(correlation_id)

        async def send_with_header(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER.lower().encode(), correlation_id.encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_header)

    return middleware
