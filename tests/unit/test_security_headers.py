"""The headers every response carries (shared.web.security): added once each, never over
one the route set, HSTS in production only, and no content policy on Litestar's /schema."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.web.security import CONTENT_SECURITY_POLICY, HSTS, security_headers


def sent(production: bool, path: str, headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    message: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": headers}
    asyncio.run(security_headers(production)(message, {"type": "http", "path": path}))  # type: ignore[arg-type]
    names = [name for name, _ in message["headers"]]
    assert len(names) == len(set(names)), "a header was sent twice"
    return dict(message["headers"])


def test_a_page_gets_every_header_and_production_adds_hsts() -> None:
    development = sent(False, "/status", [(b"content-type", b"text/html")])
    assert development[b"x-content-type-options"] == b"nosniff"
    assert development[b"x-frame-options"] == b"DENY"
    assert development[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()
    assert b"strict-transport-security" not in development
    production = sent(True, "/status", [])
    assert production[b"strict-transport-security"] == HSTS.encode()


def test_a_header_the_route_set_is_kept() -> None:
    kept = sent(True, "/api/pathways", [(b"Referrer-Policy", b"same-origin")])
    assert kept[b"Referrer-Policy"] == b"same-origin"
    assert b"referrer-policy" not in kept


def test_the_openapi_viewer_loads_its_renderer_without_the_content_policy() -> None:
    schema = sent(True, "/schema/swagger", [])
    assert b"content-security-policy" not in schema
    assert schema[b"x-content-type-options"] == b"nosniff"
