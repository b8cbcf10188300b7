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
    over TLS behind its proxy, also tells browsers never to come back over plain HTTP. A
    header the response already has is left as it is."""
    always = {**ALWAYS, "Strict-Transport-Security": HSTS} if production else dict(ALWAYS)
    pages = _raw({**always, "Content-Security-Policy": CONTENT_SECURITY_POLICY})
    schema = _raw(always)

    # Raw pairs, added in one pass: Litestar's MutableScopeHeaders scans the whole list for
    # each name it sets, which made these headers a large share of a small answer's CPU.
    async def add(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = list(message.get("headers", ()))
        present = {name.lower() for name, _ in headers}
        wanted = schema if str(scope.get("path", "")).startswith("/schema") else pages
        headers.extend(pair for pair in wanted if pair[0] not in present)
        message["headers"] = headers

    return add


def _raw(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower().encode(), value.encode()) for name, value in headers.items())


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
