"""Headers every response carries, so a browser keeps the pages to themselves.

The pages load scripts, styles and images only from this origin, never inside another
site's frame, and never tell other sites which patient page a link came from. The
OpenAPI viewer under /schema is Litestar's own page (it loads its renderer from a CDN),
so it keeps the other headers but not the content policy.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

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


# A year of HTTPS only, once a production browser has seen it (RFC 6797).
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(production: bool) -> Callable[[Message, Scope], Awaitable[None]]:
    """Litestar `before_send` hook: on the start of every HTTP response. Production, served
    over TLS behind its proxy, also tells browsers never to come back over plain HTTP."""

    async def add(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        for name, value in ALWAYS.items():
            headers.setdefault(name, value)
        if not str(scope.get("path", "")).startswith("/schema"):
            headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if production:
            headers.setdefault("Strict-Transport-Security", HSTS)

    return add


# A route's path in Litestar's map names its parameters' types; the scope's template not.
_PARAMETER_TYPE = re.compile(r":[a-z]+\}")


async def allow_every_method(message: Message, scope: Scope) -> None:
    """Litestar `before_send` hook: an OPTIONS answer lists every method of its path.

    Litestar writes the Allow header when it first builds a route; a path whose handlers
    are merged later (a service's router mounted twice in the embedded app) keeps the
    first list, so a client would be told GET is not allowed where it is.
    """
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "allow" not in headers:
        return
    app = scope["app"]
    allowed = app.state.get("allowed_methods")
    if allowed is None:
        allowed = {
            _PARAMETER_TYPE.sub("}", path): ", ".join(sorted(m for m in methods if m.isupper()))
            for path, methods in app.route_handler_method_map.items()
        }
        app.state["allowed_methods"] = allowed
    methods = allowed.get(scope.get("path_template", ""))
    if methods:
        headers["Allow"] = methods
