"""JWT minting and local (HS256) verification."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from paysvc.auth.principal import Role
from paysvc.errors import AuthenticationFailed


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    role: Role
    expires_at: dt.datetime


CACHE_SIZE = 10_000  # verified tokens kept (cleared whole when full: a bound, not an LRU)


class TokenVerifier:
    def __init__(
        self,
        secret: str,
        issuer: str | None = None,
        audience: str | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._now = now
        self._issuer = issuer
        self._audience = audience
        # token -> its claims, once verified; served until `exp` (a client sends the same token
        # many times, and checking the signature and claims again is most of an auth's cost).
        self._verified: dict[str, Claims] = {}

    def verify(self, token: str) -> Claims:
        """HS256 only, `exp` required, `iss`/`aud` when configured; `sub` or `user_id`."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at.timestamp() > self._now():
                return cached
            del self._verified[token]
            raise AuthenticationFailed("The token has expired", code="token_expired")
        claims = self._decode(token)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("The token has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("The token is invalid", code="invalid_token") from None
        return claims_from(payload)

    def mint(self, subject: str, role: Role, ttl: dt.timedelta, now: dt.datetime) -> str:
        payload: dict[str, Any] = {
            "sub": subject,
            "role": str(role),
            "type": "access",
            "jti": secrets.token_hex(8),
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
        }
        if self._issuer:
            payload["iss"] = self._issuer
        if self._audience:
            payload["aud"] = self._audience
        return jwt.encode(payload, self._secret, algorithm="HS256")


def claims_from(payload: dict[str, Any]) -> Claims:
    token_type = payload.get("type", "access")
    if token_type != "access":  # noqa: S105 - a claim value, not a password
        raise AuthenticationFailed("Only access tokens are accepted", code="invalid_token")
    subject = payload.get("sub", payload.get("user_id"))
    if isinstance(subject, int) and not isinstance(subject, bool):
        subject = str(subject)
    if not isinstance(subject, str) or not subject:
        raise AuthenticationFailed("The token names no principal", code="invalid_token")
    try:
        role = Role(payload.get("role", "customer"))
    except ValueError:
        raise AuthenticationFailed(
            "The token carries an unknown role", code="invalid_token"
        ) from None
    exp = payload.get("exp")
    expires_at = (
        dt.datetime.fromtimestamp(exp, dt.UTC)
        if isinstance(exp, int | float)
        else dt.datetime.max.replace(tzinfo=dt.UTC)
    )
    return Claims(subject=subject, role=role, expires_at=expires_at)
