"""Minting the bearer token a person or a service signs in with.

The token is the one Litestar's JWT auth reads (shared.auth): HS256, the user id in
``sub``, the role in ``extras.role``, ``iat`` and ``exp``. It is minted here with PyJWT,
which Litestar itself uses, so that `carepath token` and the CLI's admin calls start
without importing the web framework. For the same reason the two settings a token needs
can be read straight from the environment (`Signing.from_environment`) without the
settings model: importing pydantic-settings alone costs about 0.3 s of a CLI call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import jwt

from shared.names import Role

ALGORITHM = "HS256"  # Litestar's JWT auth default, which shared.auth keeps
DEFAULT_JWT_SECRET = "carepath-development-secret-change-me"  # noqa: S105 - refused in production
TOKEN_HOURS = 12
MAX_TOKEN_HOURS = 24 * 7


class SigningKey(Protocol):
    """What minting needs; `PlatformSettings` and `Signing` both have it."""

    @property
    def jwt_secret(self) -> str: ...

    @property
    def token_hours(self) -> int: ...


@dataclass(frozen=True)
class Signing:
    jwt_secret: str = DEFAULT_JWT_SECRET
    token_hours: int = TOKEN_HOURS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Signing:
        """The same `CAREPATH_JWT_SECRET` and `CAREPATH_TOKEN_HOURS` the settings read."""
        env = os.environ if environ is None else environ
        hours = env.get("CAREPATH_TOKEN_HOURS", str(TOKEN_HOURS)).strip()
        if not hours.isdigit() or not 1 <= int(hours) <= MAX_TOKEN_HOURS:
            raise ValueError(
                f"CAREPATH_TOKEN_HOURS must be a whole number of hours from 1 to {MAX_TOKEN_HOURS}"
            )
        return cls(env.get("CAREPATH_JWT_SECRET", DEFAULT_JWT_SECRET), int(hours))


def issue_token(signing: SigningKey, user_id: str, role: Role) -> str:
    issued = datetime.now(UTC).replace(microsecond=0)
    payload = {
        "sub": user_id,
        "iat": issued,
        "exp": issued + timedelta(hours=signing.token_hours),
        "extras": {"role": role.value},
    }
    return jwt.encode(payload, signing.jwt_secret, algorithm=ALGORITHM)
