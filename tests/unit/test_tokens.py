"""Tokens minted without the web framework are the ones its JWT auth accepts, and the
`carepath` command starts without importing what a command does not need (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token
from pydantic import ValidationError

import shared.auth
from shared.auth import VerifiedToken
from shared.names import Role
from shared.settings import PlatformSettings
from shared.tokens import ALGORITHM, MAX_TOKEN_HOURS, Signing, issue_token

SECRET = "a-secret-long-enough-for-production-0123456789"


def test_a_minted_token_decodes_as_litestar_reads_it() -> None:
    platform = PlatformSettings(jwt_secret=SECRET, token_hours=3)
    token = Token.decode(issue_token(platform, "dr-lee", Role.mdt), SECRET, ALGORITHM)
    assert token.sub == "dr-lee"
    assert token.extras == {"role": "mdt"}
    assert token.exp - token.iat == timedelta(hours=3)


def test_the_token_command_imports_neither_the_web_framework_nor_the_orm() -> None:
    probe = (
        "import sys\n"
        "from services.cli import main\n"
        "main(['token', '--role', 'admin', '--user', 'probe'], standalone_mode=False)\n"
        "heavy = ('litestar', 'sqlalchemy', 'dramatiq', 'pydantic_settings')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # the JWT itself: header.payload.signature


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"CAREPATH_JWT_SECRET": SECRET},
        {"CAREPATH_JWT_SECRET": SECRET, "CAREPATH_TOKEN_HOURS": "1"},
        {"CAREPATH_TOKEN_HOURS": str(MAX_TOKEN_HOURS)},
        {"CAREPATH_TOKEN_HOURS": " 24 "},
    ],
)
def test_the_command_line_signs_with_what_the_services_read(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CAREPATH_JWT_SECRET", "CAREPATH_TOKEN_HOURS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    platform = PlatformSettings()
    signing = Signing.from_environment()
    assert (signing.jwt_secret, signing.token_hours) == (platform.jwt_secret, platform.token_hours)


@pytest.mark.parametrize("hours", ["0", str(MAX_TOKEN_HOURS + 1), "-3", "twelve", "1.5", ""])
def test_token_hours_the_services_refuse_are_refused_naming_the_variable(
    hours: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREPATH_TOKEN_HOURS", hours)
    with pytest.raises(ValidationError):
        PlatformSettings()
    with pytest.raises(ValueError, match="CAREPATH_TOKEN_HOURS"):
        Signing.from_environment()


# --- issue 15: a token checked once is not checked again, but its expiry is -------------


def _signed(payload: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def test_a_kept_token_is_the_one_checked_first_and_a_bad_one_is_never_kept() -> None:
    encoded = issue_token(PlatformSettings(jwt_secret=SECRET), "dr-kept", Role.mdt)
    first = VerifiedToken.decode(encoded, SECRET, ALGORITHM)
    assert VerifiedToken.decode(encoded, SECRET, ALGORITHM) is first
    # The same text under another secret, or altered by one character, is checked and
    # refused: what was kept was the pair, not the text alone.
    with pytest.raises(NotAuthorizedException):
        VerifiedToken.decode(encoded, "another-secret-long-enough-0123456789-abcdef", ALGORITHM)
    tampered = encoded[:-2] + ("A" if encoded[-2] != "A" else "B") + encoded[-1]
    with pytest.raises(NotAuthorizedException):
        VerifiedToken.decode(tampered, SECRET, ALGORITHM)
    with pytest.raises(NotAuthorizedException):
        VerifiedToken.decode(tampered, SECRET, ALGORITHM)


def test_a_kept_token_that_has_expired_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    issued = datetime.now(UTC).replace(microsecond=0)
    encoded = _signed({"sub": "dr-brief", "iat": issued, "exp": issued + timedelta(seconds=30)})
    assert VerifiedToken.decode(encoded, SECRET, ALGORITHM).sub == "dr-brief"

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return issued + timedelta(minutes=5)

    monkeypatch.setattr(shared.auth, "datetime", Later)
    monkeypatch.setattr("jwt.api_jwt.datetime", Later)
    with pytest.raises(NotAuthorizedException):
        VerifiedToken.decode(encoded, SECRET, ALGORITHM)
