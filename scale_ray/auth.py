"""Bearer tokens: HS256-signed JWTs whose ``sub`` is the user id.

The secret comes from ``SCALE_AUTH_SECRET``; when unset, one is generated once and kept in
``<data root>/auth_secret`` (mode 0600) so every process of a local deployment agrees on it.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from scale_ray.settings import Settings

_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
ALGORITHM = "HS256"


class AuthError(Exception):
    """Missing, malformed, forged or expired credentials."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_RE.match(user_id))


def auth_secret(settings: Settings) -> str:
    """The signing key: from settings, else a generated one persisted under the data root."""
    if settings.auth_secret:
        return settings.auth_secret
    if not settings.is_local:
        raise RuntimeError("SCALE_AUTH_SECRET must be set when the data root is not local")
    path = Path(settings.path("auth_secret"))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic: the first process to create it wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def mint_token(
    settings: Settings,
    user_id: str,
    *,
    ttl_s: int | None = None,
    scopes: tuple[str, ...] = (),
    now: float | None = None,
) -> str:
    if not valid_user_id(user_id):
        raise ValueError(f"user id {user_id!r} is not valid (letters, digits, . _ @ : -)")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user_id,
        "iss": settings.auth_issuer,
        "aud": settings.auth_audience,
        "iat": issued,
        "exp": issued + (ttl_s if ttl_s is not None else settings.token_ttl_s),
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, auth_secret(settings), algorithm=ALGORITHM)


class TokenVerifier:
    """Verifies bearer tokens; holds the secret so each request does no file I/O."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._secret = auth_secret(settings)

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization header must be 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token.strip(),
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.settings.auth_audience,
                issuer=self.settings.auth_issuer,
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"token is invalid: {exc}") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_user_id(sub):
            raise AuthError("token subject is not a valid user id")
        scopes = frozenset(str(claims.get("scope", "")).split())
        return Principal(user_id=sub, scopes=scopes)
