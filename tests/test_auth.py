import jwt
import pytest

from scale_ray.auth import AuthError, TokenVerifier, auth_secret, mint_token
from scale_ray.settings import Settings


def test_round_trip(settings: Settings) -> None:
    token = mint_token(settings, "alice", scopes=("admin",))
    principal = TokenVerifier(settings).verify(f"Bearer {token}")
    assert principal.user_id == "alice" and principal.is_admin


def test_secret_is_generated_once(settings: Settings) -> None:
    assert auth_secret(settings) == auth_secret(settings)
    assert len(auth_secret(settings)) >= 32


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer not.a.jwt"])
def test_malformed(settings: Settings, header: str | None) -> None:
    with pytest.raises(AuthError):
        TokenVerifier(settings).verify(header)


def test_expired(settings: Settings) -> None:
    token = mint_token(settings, "alice", ttl_s=10, now=1_000_000)
    with pytest.raises(AuthError, match="expired"):
        TokenVerifier(settings).verify(f"Bearer {token}")


def test_forged_signature(settings: Settings) -> None:
    forged = jwt.encode(
        {"sub": "alice", "iss": "scale", "aud": "scale-api", "iat": 1, "exp": 2**40},
        "not-the-secret",
        algorithm="HS256",
    )
    with pytest.raises(AuthError, match="invalid"):
        TokenVerifier(settings).verify(f"Bearer {forged}")


def test_alg_none_refused(settings: Settings) -> None:
    unsigned = jwt.encode(
        {"sub": "alice", "iss": "scale", "aud": "scale-api", "iat": 1, "exp": 2**40},
        key=None,
        algorithm="none",
    )
    with pytest.raises(AuthError):
        TokenVerifier(settings).verify(f"Bearer {unsigned}")


def test_invalid_user_id(settings: Settings) -> None:
    with pytest.raises(ValueError):
        mint_token(settings, "../etc")
