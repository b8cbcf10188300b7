"""Sign-in with the clinic's OpenID Connect provider: authorization code with PKCE.

authlib makes the PKCE pair and the authorization URL, httpx (the stack's HTTP client)
exchanges the code, and joserfc verifies the ID token against the provider's published
keys: signature, issuer, audience, expiry and the nonce this sign-in sent. The person's
carepath role comes from one configurable claim (a string or a list such as `groups`),
mapped through `CAREPATH_OIDC_ROLES`; an account that maps to no role, or to two, is not
let in.

The web service keeps no state: what the callback needs (state, nonce, PKCE verifier) rides
in a short-lived cookie signed with the platform secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import msgspec
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from shared.auth import User
from shared.names import Role
from shared.settings import PlatformSettings

PENDING_COOKIE = "carepath_oidc"
PENDING_LIFETIME = timedelta(minutes=10)
_SIGNING = "HS256"


class SignInRefused(Exception):
    """The provider's answer does not sign this person in; the message says why, with no
    token or claim value in it."""


class Provider(msgspec.Struct, kw_only=True):
    """The parts of the provider's discovery document the sign-in uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class PendingSignIn(msgspec.Struct, frozen=True, kw_only=True):
    """What the callback checks the provider's answer against, and proves the code with."""

    state: str
    nonce: str
    verifier: str


def configured(platform: PlatformSettings) -> bool:
    return platform.oidc_issuer is not None


async def discover(http: httpx.AsyncClient, issuer: str) -> Provider:
    response = await http.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
    response.raise_for_status()
    provider = msgspec.json.decode(response.content, type=Provider)
    if provider.issuer.rstrip("/") != issuer.rstrip("/"):
        raise SignInRefused("the provider names another issuer than the one configured")
    return provider


def authorization_url(
    platform: PlatformSettings, provider: Provider, redirect_uri: str
) -> tuple[str, PendingSignIn]:
    """Where to send the browser, and what the callback will need to check the answer."""
    pending = PendingSignIn(
        state=generate_token(32), nonce=generate_token(32), verifier=generate_token(64)
    )
    url = add_params_to_uri(
        provider.authorization_endpoint,
        [
            ("response_type", "code"),
            ("client_id", platform.oidc_client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile email"),
            ("state", pending.state),
            ("nonce", pending.nonce),
            ("code_challenge", create_s256_code_challenge(pending.verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
    return url, pending


def seal(platform: PlatformSettings, pending: PendingSignIn) -> str:
    expires = datetime.now(UTC) + PENDING_LIFETIME
    payload = {"s": pending.state, "n": pending.nonce, "v": pending.verifier, "exp": expires}
    return jwt.encode(payload, platform.jwt_secret, algorithm=_SIGNING)


def unseal(platform: PlatformSettings, sealed: str | None, state: str | None) -> PendingSignIn:
    if not sealed or not state:
        raise SignInRefused("the sign-in was not started here, or took too long; start again")
    try:
        payload = jwt.decode(sealed, platform.jwt_secret, algorithms=[_SIGNING])
    except jwt.PyJWTError:
        raise SignInRefused("the sign-in took too long or was altered; start again") from None
    if payload.get("s") != state:
        raise SignInRefused("the answer is not for the sign-in started here; start again")
    return PendingSignIn(state=payload["s"], nonce=payload["n"], verifier=payload["v"])


async def finish(
    http: httpx.AsyncClient,
    platform: PlatformSettings,
    provider: Provider,
    pending: PendingSignIn,
    code: str,
    redirect_uri: str,
) -> User:
    """Exchange the code (with the PKCE verifier), verify the ID token, map the role."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": platform.oidc_client_id,
        "code_verifier": pending.verifier,
    }
    # A confidential client authenticates with its secret (client_secret_basic).
    auth = httpx.BasicAuth(platform.oidc_client_id, platform.oidc_client_secret or "")
    response = await http.post(
        provider.token_endpoint,
        data=form,
        auth=auth if platform.oidc_client_secret else httpx.USE_CLIENT_DEFAULT,
    )
    if response.status_code != 200:
        raise SignInRefused(f"the provider refused the code (HTTP {response.status_code})")
    id_token = response.json().get("id_token")
    if not isinstance(id_token, str):
        raise SignInRefused("the provider sent no ID token")
    claims = await _verified_claims(http, platform, provider, id_token, pending.nonce)
    return User(id=_user_id(claims), role=role_of(claims, platform))


async def _verified_claims(
    http: httpx.AsyncClient,
    platform: PlatformSettings,
    provider: Provider,
    id_token: str,
    nonce: str,
) -> dict[str, Any]:
    keys = await http.get(provider.jwks_uri)
    keys.raise_for_status()
    try:
        token = jose_jwt.decode(id_token, KeySet.import_key_set(keys.json()))
        jose_jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": platform.oidc_client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, ValueError) as error:
        raise SignInRefused(f"the ID token did not verify ({type(error).__name__})") from None
    return dict(token.claims)


def _user_id(claims: Mapping[str, Any]) -> str:
    preferred = claims.get("preferred_username") or claims.get("sub")
    user_id = str(preferred)
    if not user_id or len(user_id) > 100 or not user_id.isprintable():
        raise SignInRefused("the account's user name cannot be used here")
    return user_id


def role_of(claims: Mapping[str, Any], platform: PlatformSettings) -> Role:
    """The one carepath role the configured claim maps to."""
    value = claims.get(platform.oidc_role_claim)
    values = value if isinstance(value, list) else [value]
    mapping = platform.oidc_roles or {role.value: role.value for role in Role}
    roles = {mapping[v] for v in values if isinstance(v, str) and v in mapping}
    roles.discard(Role.service.value)  # a person never signs in as a service
    if len(roles) != 1:
        which = "no carepath role" if not roles else "more than one carepath role"
        raise SignInRefused(f"this account has {which}; ask the clinic's administrator")
    return Role(roles.pop())
