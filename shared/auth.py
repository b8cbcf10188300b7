"""JWT bearer authentication with roles, and guards for routes.

A token carries the user id in ``sub`` and the role in ``role``. Object-level checks
(which referral a psychologist may see) belong to each service; the guards here only
check the role.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTCookieAuth, Token

from shared.names import Role as Role  # re-exported: the roles a token carries
from shared.settings import PlatformSettings, RunMode
from shared.tokens import issue_token as issue_token  # re-exported: where services mint tokens


class User(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller, as the token describes them."""

    id: str
    role: Role


# Paths anyone may reach: liveness, readiness, metrics, the API's own description, the
# dashboard's sign-in page and its stylesheet and script.
PUBLIC_PATHS = [
    "^/health$",
    "^/ready$",
    "^/metrics",
    "^/schema",
    "^/[a-z]+/(health|ready)$",
    "^/sign-in(/oidc|/callback)?$",
    "^/static/",
]
# The dashboard's session: the same JWT as the API's bearer token, in a cookie that is
# never sent with another site's request (so a form elsewhere cannot act as the user).
SESSION_COOKIE = "carepath_session"


def user_from_token(token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> User:
    role = token.extras.get("role")
    try:
        return User(id=token.sub, role=Role(str(role)))
    except ValueError:
        raise NotAuthorizedException("the token carries no known role") from None


def make_jwt_auth(settings: PlatformSettings) -> JWTCookieAuth[User, Token]:
    """Bearer token in the Authorization header (API clients), or the dashboard's
    session cookie holding the same token."""
    return JWTCookieAuth[User, Token](
        retrieve_user_handler=user_from_token,
        token_secret=settings.jwt_secret,
        exclude=PUBLIC_PATHS,
        default_token_expiration=timedelta(hours=settings.token_hours),
        key=SESSION_COOKIE,
        samesite="strict",
        secure=settings.env is RunMode.production,
    )


def requires(*roles: Role) -> Any:
    """A guard letting only the named roles through."""
    allowed = frozenset(roles)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return  # a preflight carries no credentials and answers only which methods exist
        user = connection.user
        if not isinstance(user, User) or user.role not in allowed:
            raise PermissionDeniedException(
                f"this action needs one of the roles: {', '.join(sorted(allowed))}"
            )

    guard.__name__ = "requires_" + "_".join(sorted(r.value.replace("-", "_") for r in allowed))
    return guard
