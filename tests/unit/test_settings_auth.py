"""Settings from the environment, the production guard, and JWT tokens with roles."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.security.jwt import Token
from pydantic import ValidationError

from services.cli import main
from shared.auth import Role, User, issue_token, requires, user_from_token
from shared.settings import (
    DEFAULT_JWT_SECRET,
    SERVICES,
    BrokerKind,
    InsecureConfiguration,
    PlatformSettings,
    RunMode,
    load_service_settings,
)

LONG_SECRET = "x" * 32


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read CAREPATH_* from the process: start every test from none."""
    for name in list(os.environ):
        if name.startswith("CAREPATH_"):
            monkeypatch.delenv(name)


# --- PlatformSettings -------------------------------------------------------------------


def test_platform_settings_default_to_the_embedded_development_mode() -> None:
    settings = PlatformSettings()
    assert settings.env is RunMode.development
    assert settings.broker is BrokerKind.memory
    assert settings.jwt_secret == DEFAULT_JWT_SECRET


def test_platform_settings_read_carepath_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAREPATH_ENV", "production")
    monkeypatch.setenv("CAREPATH_JWT_SECRET", LONG_SECRET)
    monkeypatch.setenv("CAREPATH_BROKER", "redis")
    monkeypatch.setenv("CAREPATH_REDIS_URL", "redis://cache:6379/3")
    monkeypatch.setenv("CAREPATH_MAX_RETRIES", "7")
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CAREPATH_RELAY_INTERVAL_S", "0.5")
    settings = PlatformSettings()
    assert settings.env is RunMode.production
    assert settings.jwt_secret == LONG_SECRET
    assert settings.broker is BrokerKind.redis
    assert settings.redis_url == "redis://cache:6379/3"
    assert settings.max_retries == 7
    assert settings.data_dir == tmp_path
    assert settings.relay_interval_s == 0.5


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_RETRIES", "9")
    monkeypatch.setenv("JWT_SECRET", LONG_SECRET)
    settings = PlatformSettings()
    assert settings.max_retries == 5
    assert settings.jwt_secret == DEFAULT_JWT_SECRET


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CAREPATH_MAX_RETRIES", "-1"),
        ("CAREPATH_BROKER", "kafka"),
        ("CAREPATH_ENV", "staging"),
        ("CAREPATH_RELAY_INTERVAL_S", "0"),
        ("CAREPATH_TOKEN_HOURS", "0"),
    ],
)
def test_out_of_range_variables_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        PlatformSettings()


@pytest.mark.parametrize("command", [["worker", "coordinator"], ["serve", "referrals"]])
def test_a_command_refuses_bad_variables_in_one_line_naming_each(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A typing slip in the environment stops a service at start with the variables to
    fix and their rules, not a traceback; a value (a secret, perhaps) is never echoed."""
    monkeypatch.setenv("CAREPATH_EVENT_BATCH", "forty-eight")
    monkeypatch.setenv("CAREPATH_WORKER_THREADS", "0")
    monkeypatch.setenv("CAREPATH_TOKEN_HOURS", "s3cr3t-looking-value")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.output.strip().splitlines()
    for variable in ("CAREPATH_EVENT_BATCH", "CAREPATH_WORKER_THREADS", "CAREPATH_TOKEN_HOURS"):
        assert variable in line
    assert "greater than or equal to 1" in line
    assert "forty-eight" not in line and "s3cr3t" not in line


def test_check_production_refuses_the_default_secret() -> None:
    settings = PlatformSettings(env=RunMode.production)
    with pytest.raises(InsecureConfiguration, match="development default"):
        settings.check_production()


def test_check_production_refuses_a_short_secret() -> None:
    settings = PlatformSettings(env=RunMode.production, jwt_secret="x" * 31)
    with pytest.raises(InsecureConfiguration, match="32"):
        settings.check_production()


def test_check_production_accepts_a_long_secret() -> None:
    PlatformSettings(env=RunMode.production, jwt_secret=LONG_SECRET).check_production()


def test_check_production_lets_development_use_the_default() -> None:
    PlatformSettings(env=RunMode.development).check_production()
    PlatformSettings(env=RunMode.development, jwt_secret="short").check_production()


# --- load_service_settings ----------------------------------------------------------------


def test_service_settings_read_their_own_database_url_and_peer_urls() -> None:
    environ = {
        "CAREPATH_REFERRALS_DATABASE_URL": "postgresql+psycopg://db/referrals",
        "CAREPATH_THERAPY_DATABASE_URL": "postgresql+psycopg://db/therapy",
        "CAREPATH_COORDINATOR_URL": "http://coordinator:8000/",
        "CAREPATH_INFUSIONS_URL": "http://infusions:8000",
    }
    settings = load_service_settings("referrals", PlatformSettings(), environ)
    assert settings.service == "referrals"
    assert settings.database_url == "postgresql+psycopg://db/referrals"
    assert settings.url_of("coordinator") == "http://coordinator:8000"  # trailing / dropped
    assert settings.url_of("infusions") == "http://infusions:8000"
    assert settings.url_of("therapy") == "http://127.0.0.1:8000/therapy"


def test_service_settings_read_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAREPATH_REFERRALS_DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    monkeypatch.setenv("CAREPATH_THERAPY_URL", "http://therapy.internal")
    settings = load_service_settings("referrals")
    assert settings.database_url == "sqlite:////tmp/elsewhere.db"
    assert settings.url_of("therapy") == "http://therapy.internal"


def test_service_settings_default_to_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    platform = PlatformSettings(data_dir=tmp_path)
    for service in SERVICES:
        settings = load_service_settings(service, platform, {})
        assert settings.database_url == f"sqlite:///{tmp_path}/{service}.sqlite3"
        assert settings.platform is platform


def test_service_settings_default_peer_urls_follow_the_embedded_layout() -> None:
    settings = load_service_settings(
        "coordinator", PlatformSettings(), {}, default_base_url="http://localhost:9000"
    )
    assert settings.service_urls == {
        service: f"http://localhost:9000/{service}" for service in SERVICES
    }


def test_one_services_database_url_does_not_leak_into_another() -> None:
    environ = {"CAREPATH_REFERRALS_DATABASE_URL": "postgresql+psycopg://db/referrals"}
    settings = load_service_settings("therapy", PlatformSettings(), environ)
    assert "referrals" not in settings.database_url


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        load_service_settings("billing", PlatformSettings(), {})


# --- tokens ---------------------------------------------------------------------------


def test_issued_token_decodes_with_sub_and_role() -> None:
    settings = PlatformSettings(jwt_secret=LONG_SECRET)
    encoded = issue_token(settings, "dr-who", Role.infusion_clinician)
    token = Token.decode(encoded, LONG_SECRET, "HS256")
    assert token.sub == "dr-who"
    assert token.extras["role"] == "infusion-clinician"


def test_issued_token_expires_after_the_configured_hours() -> None:
    settings = PlatformSettings(jwt_secret=LONG_SECRET, token_hours=3)
    before = datetime.now(UTC)
    token = Token.decode(issue_token(settings, "u", Role.mdt), LONG_SECRET, "HS256")
    hours = (token.exp - before).total_seconds() / 3600
    assert 2.9 < hours <= 3.01


def test_a_token_signed_with_another_secret_is_refused() -> None:
    encoded = issue_token(PlatformSettings(jwt_secret="y" * 40), "dr-who", Role.mdt)
    with pytest.raises(NotAuthorizedException):
        Token.decode(encoded, LONG_SECRET, "HS256")


def test_a_token_whose_claims_were_edited_is_refused() -> None:
    encoded = issue_token(PlatformSettings(jwt_secret=LONG_SECRET), "dr-who", Role.referrer)
    header, payload, signature = encoded.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["extras"]["role"] == "referrer"
    claims["extras"]["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(NotAuthorizedException):
        Token.decode(f"{header}.{forged}.{signature}", LONG_SECRET, "HS256")


def test_user_from_token_maps_the_role() -> None:
    settings = PlatformSettings(jwt_secret=LONG_SECRET)
    token = Token.decode(issue_token(settings, "p1", Role.psychologist), LONG_SECRET, "HS256")
    assert asyncio.run(user_from_token(token, None)) == User(id="p1", role=Role.psychologist)  # type: ignore[arg-type]


def test_user_from_token_refuses_an_unknown_role() -> None:
    token = Token(sub="x", exp=datetime(2100, 1, 1, tzinfo=UTC), extras={"role": "superuser"})
    with pytest.raises(NotAuthorizedException):
        asyncio.run(user_from_token(token, None))  # type: ignore[arg-type]


def test_user_from_token_refuses_a_token_without_a_role() -> None:
    token = Token(sub="x", exp=datetime(2100, 1, 1, tzinfo=UTC), extras={})
    with pytest.raises(NotAuthorizedException):
        asyncio.run(user_from_token(token, None))  # type: ignore[arg-type]


class _Connection:
    def __init__(self, user: object, method: str = "GET") -> None:
        self.user = user
        self.scope = {"method": method}


def test_requires_lets_named_roles_through_and_refuses_others() -> None:
    guard = requires(Role.mdt, Role.admin)
    asyncio.run(guard(_Connection(User(id="m", role=Role.mdt)), None))
    with pytest.raises(PermissionDeniedException, match="admin, mdt"):
        asyncio.run(guard(_Connection(User(id="r", role=Role.referrer)), None))
    with pytest.raises(PermissionDeniedException):
        asyncio.run(guard(_Connection(None), None))


def test_a_preflight_passes_the_role_guard_without_credentials() -> None:
    """Browsers send OPTIONS without a token; it answers only which methods exist."""
    asyncio.run(requires(Role.mdt)(_Connection(None, method="OPTIONS"), None))
    with pytest.raises(PermissionDeniedException):
        asyncio.run(requires(Role.mdt)(_Connection(None, method="POST"), None))
