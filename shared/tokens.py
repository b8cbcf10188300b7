"""Minting the bearer token a person or a service signs in with.

The token is the one Litestar's JWT auth reads (shared.auth): HS256, the user id in
``sub``, the role in ``extras.role``, ``iat`` and ``exp``. It is minted here with PyJWT,
which Litestar itself uses, so that `carepath token` and the CLI's admin calls start
without importing the web framework.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

from shared.names import Role
from shared.settings import PlatformSettings

ALGORITHM = "HS256"  # Litestar's JWT auth default, which shared.auth keeps


def issue_token(settings: PlatformSettings, user_id: str, role: Role) -> str:
    issued = datetime.now(UTC).replace(microsecond=0)
    payload = {
        "sub": user_id,
        "iat": issued,
        "exp": issued + timedelta(hours=settings.token_hours),
        "extras": {"role": role.value},
    }
    return jwt.encode(payload, settings.jwt_secret, algorithm=ALGORITHM)
