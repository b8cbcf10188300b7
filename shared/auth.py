"""JWT bearer authentication with roles, and guards for routes.

A token carries the user id in ``sub`` and the role in ``role``. Object-level checks
(which referral a psychologist may see) belong to each service; the guards here only
check the role.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

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


# Async, though it awaits nothing: Litestar runs a sync user handler or guard in its
# thread pool, a hop there and back on every request (issue 15).
async def user_from_token(token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> User:
    role = token.extras.get("role")
    try:
        return User(id=token.sub, role=Role(str(role)))
    except ValueError:
        raise NotAuthorizedException("the token carries no known role") from None


class VerifiedToken(Token):
    """A token whose signature and claims were checked once is not checked again on every
    request: the dashboard and the services send the same token with each call, and
    PyJWT's check was a tenth of a pathway read's CPU (issue 15). Only the expiry can
    change for the same token and the same secret, so it is checked on every use."""

    @classmethod
    def decode(
        cls,
        encoded_token: str,
        secret: str,
        algorithm: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] | None = None,
        verify_exp: bool = True,
        verify_nbf: bool = True,
        strict_audience: bool = False,
    ) -> Self:
        options = (algorithm, _hashable(audience), _hashable(issuer), _hashable(require_claims))
        key = (encoded_token, secret, *options, verify_exp, verify_nbf, strict_audience)
        token = _VERIFIED.get(key)
        if token is not None and not (verify_exp and token.exp <= datetime.now(UTC)):
            return token  # type: ignore[return-value]
        _VERIFIED.pop(key, None)
        token = super().decode(
            encoded_token,
            secret,
            algorithm,
            audience,
            issuer,
            require_claims,
            verify_exp,
            verify_nbf,
            strict_audience,
        )
        if len(_VERIFIED) >= VERIFIED_TOKENS_KEPT:
            _VERIFIED.pop(next(iter(_VERIFIED)), None)  # the longest kept goes first
        _VERIFIED[key] = token
        return token


# Tokens in use at once in one process: the signed-in staff and the services' own.
VERIFIED_TOKENS_KEPT = 4096
_VERIFIED: dict[tuple[Any, ...], Token] = {}


def _hashable(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    return value if value is None or isinstance(value, str) else tuple(value)


def make_jwt_auth(settings: PlatformSettings) -> JWTCookieAuth[User, Token]:
    """Bearer token in the Authorization header (API clients), or the dashboard's
    session cookie holding the same token."""
    return JWTCookieAuth[User, Token](
        retrieve_user_handler=user_from_token,
        token_secret=settings.jwt_secret,
        token_cls=VerifiedToken,
        exclude=PUBLIC_PATHS,
        default_token_expiration=timedelta(hours=settings.token_hours),
        key=SESSION_COOKIE,
        samesite="strict",
        secure=settings.env is RunMode.production,
    )


def requires(*roles: Role) -> Any:
    """A guard letting only the named roles through."""
    allowed = frozenset(roles)

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
    ) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return  # a preflight carries no credentials and answers only which methods exist
        user = connection.user
        if not isinstance(user, User) or user.role not in allowed:
            raise PermissionDeniedException(
                f"this action needs one of the roles: {', '.join(sorted(allowed))}"
            )

    guard.__name__ = "requires_" + "_".join(sorted(r.value.replace("-", "_") for r in allowed))
    return guard
