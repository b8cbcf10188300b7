"""Signing in through a real OpenID Connect provider (oidc-provider-mock, in a thread):
the authorization code flow with PKCE, the ID token verified, the role claim mapped,
and the refusals a clinic needs (no role, two roles, an answer not for this sign-in)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar.testing import TestClient
from oidc_provider_mock import run_server_in_thread

from services.web.app import WEB
from services.web.oidc import SignInRefused, role_of
from shared.auth import SESSION_COOKIE
from shared.messaging import make_broker
from shared.names import Role
from shared.settings import PlatformSettings
from shared.web.app import build_app
from tests.embedded import Embedded, embedded_app


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def clinic(issuer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    roles = {
        "pain-mdt": "mdt",
        "psychology": "psychologist",
        "infusion-suite": "infusion-clinician",
    }
    with embedded_app(
        tmp_path_factory.mktemp("oidc"),
        oidc_issuer=issuer,
        oidc_client_secret="carepath-web-secret",
        oidc_role_claim="groups",
        oidc_roles=roles,
    ) as app:
        yield app


def _account(issuer: str, sub: str, **claims: object) -> None:
    httpx.put(f"{issuer}/users/{sub}", json=claims).raise_for_status()


def _sign_in_at_provider(clinic: Embedded, sub: str) -> httpx.Response:
    """Start at carepath, sign in as `sub` on the provider's page, come back."""
    clinic.client.cookies.clear()
    started = clinic.client.get("/sign-in/oidc", follow_redirects=False)
    assert started.status_code == 303, started.text
    authorize = started.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["nonce"][0] and query["state"][0]
    answered = httpx.post(authorize, data={"sub": sub}, follow_redirects=False)
    assert answered.status_code in (302, 303), answered.text
    back = urlsplit(answered.headers["location"])
    assert back.path == "/sign-in/callback"
    return clinic.client.get(f"{back.path}?{back.query}", follow_redirects=False)


def test_a_clinician_signs_in_with_the_clinics_account(clinic: Embedded, issuer: str) -> None:
    _account(issuer, "okafor-7781", preferred_username="nurse-okafor", groups=["infusion-suite"])
    response = _sign_in_at_provider(clinic, "okafor-7781")
    assert response.status_code == 200, response.text
    assert '<meta http-equiv="refresh" content="0; url=/clinic">' in response.text
    assert SESSION_COOKIE in response.cookies
    page = clinic.client.get("/clinic")
    assert page.status_code == 200
    assert "nurse-okafor" in page.text
    api = clinic.client.get("/api/clock")  # the same session reads the API as this person
    assert api.status_code == 200


def test_an_account_without_a_carepath_role_is_not_let_in(clinic: Embedded, issuer: str) -> None:
    _account(issuer, "visitor-1", groups=["estates"])
    response = _sign_in_at_provider(clinic, "visitor-1")
    assert response.status_code == 403
    assert "no carepath role" in response.text
    assert SESSION_COOKIE not in response.cookies


def test_an_account_with_two_roles_is_not_let_in(clinic: Embedded, issuer: str) -> None:
    _account(issuer, "locum-2", groups=["pain-mdt", "psychology"])
    response = _sign_in_at_provider(clinic, "locum-2")
    assert response.status_code == 403
    assert "more than one carepath role" in response.text


def test_an_answer_not_for_this_sign_in_is_refused(clinic: Embedded, issuer: str) -> None:
    _account(issuer, "mdt-lead-3", groups=["pain-mdt"])
    clinic.client.cookies.clear()
    forged = clinic.client.get("/sign-in/callback?code=abc&state=guessed", follow_redirects=False)
    assert forged.status_code == 403
    assert SESSION_COOKIE not in forged.cookies
    started = clinic.client.get("/sign-in/oidc", follow_redirects=False)
    answered = httpx.post(started.headers["location"], data={"sub": "mdt-lead-3"})
    back = urlsplit(answered.headers["location"])
    tampered = back.query.replace("state=", "state=x")
    response = clinic.client.get(f"{back.path}?{tampered}", follow_redirects=False)
    assert response.status_code == 403
    assert "not for the sign-in started here" in response.text


def test_sign_in_attempts_are_limited_per_address(tmp_path: Path) -> None:
    with embedded_app(tmp_path, sign_in_per_minute=3) as app:
        answers = [app.client.get("/sign-in").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        assert app.client.get("/health").status_code == 200  # other routes are not limited


@pytest.mark.parametrize(
    ("claim", "role"),
    [("mdt", Role.mdt), (["referrer"], Role.referrer), (["admin", "x"], Role.admin)],
)
def test_the_role_claim_names_the_role_without_a_mapping(claim: object, role: Role) -> None:
    assert role_of({"carepath_role": claim}, PlatformSettings()) is role


@pytest.mark.parametrize("claim", [None, "service", ["service"], 7, ["mdt", "admin"]])
def test_no_role_a_service_or_two_roles_is_refused(claim: object) -> None:
    with pytest.raises(SignInRefused):
        role_of({"carepath_role": claim}, PlatformSettings())


def test_the_sign_in_page_offers_the_clinics_account_when_set_up(clinic: Embedded) -> None:
    clinic.client.cookies.clear()
    page = clinic.client.get("/sign-in")
    assert 'href="/sign-in/oidc"' in page.text
    assert "development identities" in page.text  # the embedded mode keeps them too


def test_without_a_provider_there_is_no_clinic_account_sign_in(embedded: Embedded) -> None:
    embedded.client.cookies.clear()
    assert 'href="/sign-in/oidc"' not in embedded.client.get("/sign-in").text
    assert embedded.client.get("/sign-in/oidc", follow_redirects=False).status_code == 404


def test_the_development_identities_are_for_the_embedded_mode_only(tmp_path: Path) -> None:
    """`carepath serve web` (distributed) signs people in through the provider only."""
    platform = PlatformSettings(data_dir=tmp_path, jwt_secret="x" * 40)
    app = build_app(
        [], make_broker(platform), platform, embedded=False, migrate_on_start=False, web=WEB
    )
    with TestClient(app) as client:
        form = client.get("/sign-in")
        assert "development identities" not in form.text
        assert "no identity provider is set up" in form.text
        refused = client.post(
            "/sign-in",
            data={"user": "anyone", "role": "mdt", "_csrf_token": client.cookies["csrftoken"]},
            follow_redirects=False,
        )
        assert refused.status_code == 403
        assert SESSION_COOKIE not in refused.cookies
