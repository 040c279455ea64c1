"""Verified tokens are reused until they expire, never after; a bad token is never cached."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from paysvc.auth.principal import Role
from paysvc.auth.tokens import TokenVerifier
from paysvc.errors import AuthenticationFailed
from tests.conftest import JWT_SECRET, Api


def test_a_cached_token_still_expires_at_its_exp() -> None:
    clock = [time.time()]
    verifier = TokenVerifier(JWT_SECRET, now=lambda: clock[0])
    token = verifier.mint("17", Role.CUSTOMER, dt.timedelta(seconds=60), dt.datetime.now(dt.UTC))
    assert verifier.verify(token).subject == "17"
    assert verifier.verify(token).subject == "17"  # from the cache
    clock[0] += 61  # (the cache's clock: PyJWT checks its own on a first verification)
    with pytest.raises(AuthenticationFailed) as raised:
        verifier.verify(token)
    assert raised.value.code == "token_expired"


def test_a_tampered_token_is_refused_even_after_the_genuine_one_was_cached() -> None:
    verifier = TokenVerifier(JWT_SECRET)
    token = verifier.mint("17", Role.CUSTOMER, dt.timedelta(minutes=5), dt.datetime.now(dt.UTC))
    verifier.verify(token)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(AuthenticationFailed):
        verifier.verify(forged)
    with pytest.raises(AuthenticationFailed):
        verifier.verify(forged)  # not cached as valid either


async def test_repeated_requests_with_one_token_are_served(api: Api) -> None:
    for n in range(3):
        await api.create(order_id=f"cached-{n}")
    assert len((await api.get("/payments"))["data"]) == 3
