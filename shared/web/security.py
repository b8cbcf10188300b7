"""Headers every response carries, so a browser keeps the pages to themselves.

The pages load scripts, styles and images only from this origin, never inside another
site's frame, and never tell other sites which patient page a link came from. The
OpenAPI viewer under /schema is Litestar's own page (it loads its renderer from a CDN),
so it keeps the other headers but not the content policy.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Litestar `before_send` hook: on the start of every HTTP response."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in ALWAYS.items():
        headers.setdefault(name, value)
    if not str(scope.get("path", "")).startswith("/schema"):
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
