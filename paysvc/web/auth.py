"""Authenticators: local HS256 verification, or the platform auth service (AUTH_MODE=remote)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Protocol

import aiohttp
import jwt
from aiohttp import web

from paysvc.auth.principal import Role
from paysvc.auth.tokens import Claims, TokenVerifier
from paysvc.clock import Clock
from paysvc.errors import AuthenticationFailed, GatewayUnavailableError

CACHE_TTL = dt.timedelta(seconds=60)
CACHE_MAX = 10_000


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Claims: ...


class LocalAuthenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def authenticate(self, token: str) -> Claims:
        return self.verifier.verify(token)


class RemoteAuthenticator:
    """`GET {AUTH_SERVICE_URL}/auth/verify`; cached ≤ 60 s and never past the token's exp.
    The auth service being down is a 503, never a pass."""

    def __init__(self, base_url: str, clock: Clock, timeout: float = 5.0) -> None:
        self.url = base_url + "/auth/verify"
        self.clock = clock
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, tuple[dt.datetime, Claims]] = {}

    async def authenticate(self, token: str) -> Claims:
        now = self.clock.now()
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = await self._ask(token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (min(now + CACHE_TTL, claims.expires_at), claims)
        return claims

    async def _ask(self, token: str) -> Claims:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.get(
                self.url, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                if response.status in (401, 403):
                    raise AuthenticationFailed("The token is invalid", code="invalid_token")
                if response.status != 200:
                    raise _auth_down()
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise _auth_down() from None
        user_id = body.get("user_id") if isinstance(body, dict) else None
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        # Only a clear yes naming a principal admits: not "", null, a list or an object.
        admitted = isinstance(body, dict) and body.get("valid") is True
        if not (admitted and isinstance(user_id, str) and user_id):
            raise AuthenticationFailed("The token is invalid", code="invalid_token")
        return Claims(
            subject=str(user_id), role=Role.CUSTOMER, expires_at=_expiry(token, self.clock)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _expiry(token: str, clock: Clock) -> dt.datetime:
    """The token's own exp (unverified: only used to bound the cache), else now + TTL."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        exp = None
    if isinstance(exp, int | float):
        return dt.datetime.fromtimestamp(exp, dt.UTC)
    return clock.now() + CACHE_TTL


def _auth_down() -> GatewayUnavailableError:
    return GatewayUnavailableError(
        "The authentication service is unavailable", code="auth_service_unavailable"
    )


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
