"""Signing people in to the pages: the clinic's OpenID Connect provider in production,
and the development identities in the embedded mode. Every attempt is rate-limited per
address and written to the audit log stream (who, how, the outcome; never a token)."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from litestar import Controller, Request, Response, get
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import FromQuery, QueryParameter
from litestar.response import Redirect, Template

from services.web import oidc
from shared.auth import SESSION_COOKIE, Role, User, issue_token
from shared.observability import get_logger
from shared.settings import PlatformSettings, RunMode

log = get_logger(__name__)

HOME_OF_ROLE = {
    Role.admin: "/status",
    Role.mdt: "/status",
    Role.psychologist: "/inbox",
    Role.infusion_clinician: "/clinic",
    Role.referrer: "/referrals/mine",
}
_PROVIDER_TIMEOUT_S = 10.0


def sign_in_limit(platform: PlatformSettings) -> RateLimitConfig:
    """Requests one address may make a minute to the sign-in routes, then 429: guessing
    at the development form or replaying callbacks is slowed, other pages are not."""
    return RateLimitConfig(
        rate_limit=("minute", platform.sign_in_per_minute),
        # Every path but /sign-in... ("/" itself, the home redirect, counts too: a
        # pattern matching "/" as well is read by Litestar as excluding everything).
        exclude=[r"^/(?!sign-in)."],
    )


def platform_of(request: Request[Any, Any, Any]) -> PlatformSettings:
    platform: PlatformSettings = request.app.state.platform
    return platform


def audit_sign_in(
    request: Request[Any, Any, Any], method: str, outcome: str, **detail: Any
) -> None:
    """The sign-in trail: staff identity and the outcome, never a token or a claim value."""
    address = request.client.host if request.client else None
    log.info("auth.sign_in", method=method, outcome=outcome, address=address, **detail)


def signed_in(
    platform: PlatformSettings, user_id: str, role: Role, *, from_elsewhere: bool = False
) -> Response[Any]:
    """The session cookie holding the same token the API reads, and the role's home page:
    a redirect, or, coming back from the provider's site, a page that moves on from here
    (a cross-site redirect chain would not carry the SameSite=Strict cookie)."""
    home = HOME_OF_ROLE.get(role, "/signed-in")
    response: Response[Any] = (
        Template(template_name="signed_in_continue.html", context={"home": home, "user": None})
        if from_elsewhere
        else Redirect(path=home, status_code=303)
    )
    response.cookies.append(
        Cookie(
            key=SESSION_COOKIE,
            value=issue_token(platform, user_id, role),
            httponly=True,
            samesite="strict",
            secure=platform.env is RunMode.production,
            max_age=platform.token_hours * 3600,
            path="/",
        )
    )
    return response


def _callback_url(request: Request[Any, Any, Any]) -> str:
    return str(request.url_for("oidc_callback"))


async def _provider(http: httpx.AsyncClient, platform: PlatformSettings) -> oidc.Provider:
    assert platform.oidc_issuer is not None  # only reached when configured
    return await oidc.discover(http, platform.oidc_issuer)


class OidcSignInController(Controller):
    """The authorization code flow with PKCE, against the configured provider."""

    path = "/sign-in"
    include_in_schema = False
    opt = {"page": True}

    @get("/oidc", name="oidc_start")
    async def start(self, request: Request[Any, Any, Any]) -> Response[Any]:
        platform = platform_of(request)
        if not oidc.configured(platform):
            raise NotFoundException("sign-in with the clinic's account is not set up")
        async with httpx.AsyncClient(timeout=_PROVIDER_TIMEOUT_S) as http:
            provider = await _provider(http, platform)
        url, pending = oidc.authorization_url(platform, provider, _callback_url(request))
        response: Response[Any] = Redirect(path=url, status_code=303)
        response.cookies.append(
            Cookie(
                key=oidc.PENDING_COOKIE,
                value=oidc.seal(platform, pending),
                httponly=True,
                # The provider's redirect back is a top-level GET from its site: Lax lets
                # the cookie ride along, Strict would not.
                samesite="lax",
                secure=platform.env is RunMode.production,
                max_age=int(oidc.PENDING_LIFETIME.total_seconds()),
                path="/sign-in",
            )
        )
        return response

    @get("/callback", name="oidc_callback")
    async def callback(
        self,
        request: Request[Any, Any, Any],
        code: FromQuery[str | None] = None,
        # `state` is Litestar's reserved name for the app state.
        oidc_state: Annotated[str | None, QueryParameter(name="state", max_length=200)] = None,
        error: FromQuery[str | None] = None,
    ) -> Response[Any]:
        platform = platform_of(request)
        if not oidc.configured(platform):
            raise NotFoundException("sign-in with the clinic's account is not set up")
        try:
            if error or not code:
                raise oidc.SignInRefused("the provider did not sign you in")
            pending = oidc.unseal(platform, request.cookies.get(oidc.PENDING_COOKIE), oidc_state)
            async with httpx.AsyncClient(timeout=_PROVIDER_TIMEOUT_S) as http:
                provider = await _provider(http, platform)
                identity = await oidc.finish(
                    http, platform, provider, pending, code, _callback_url(request)
                )
        except (oidc.SignInRefused, httpx.HTTPError) as refused:
            reason = str(refused) if isinstance(refused, oidc.SignInRefused) else "provider"
            audit_sign_in(request, "oidc", "refused", reason=reason)
            page = _refused_page(request, reason)
            page.delete_cookie(oidc.PENDING_COOKIE, path="/sign-in")
            return page
        audit_sign_in(request, "oidc", "success", user=identity.id, role=identity.role)
        response = signed_in(platform, identity.id, identity.role, from_elsewhere=True)
        response.delete_cookie(oidc.PENDING_COOKIE, path="/sign-in")
        return response


def _refused_page(request: Request[Any, Any, Any], reason: str) -> Template:
    user = request.scope.get("user")
    return Template(
        template_name="problem.html",
        context={
            "status": 403,
            "detail": f"Not signed in: {reason}.",
            "user": user if isinstance(user, User) else None,
        },
        status_code=403,
    )
