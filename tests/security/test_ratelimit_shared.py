"""Rate limits shared by every instance through Redis (`RATE_LIMIT_STORAGE_URL`): two app
instances on one database spend from one budget per principal. Needs the machine's Redis
(127.0.0.1:6379); skipped, saying so, where none runs."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import auth
from tests.security.helpers import client_with
from tests.security.test_ratelimit_http import statuses

REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


needs_redis = pytest.mark.skipif(
    not redis_answers(), reason="no Redis answers on 127.0.0.1:6379 (shared rate limits untested)"
)
# 3 requests per 60 s: nothing refills in the middle of a test on a slow machine.
LIMITS = {"RATE_LIMIT_PER_SECOND": "0.05", "RATE_LIMIT_BURST": "3"}


async def two_instances(
    aiohttp_client: Callable[..., Any], database_url: str, **env: str
) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    first = await client_with(aiohttp_client, database_url, **LIMITS, **env)
    second = await client_with(aiohttp_client, database_url, **LIMITS, **env)
    return first, second


@needs_redis
async def test_instances_share_one_budget_per_principal(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    a, b = await two_instances(aiohttp_client, database_url, RATE_LIMIT_STORAGE_URL=REDIS_URL)
    customer = auth("shared-" + secrets.token_hex(6))  # a fresh key in the shared store
    assert await statuses(a, "/payments", customer, 2) == [200, 200]
    assert await statuses(b, "/payments", customer, 2) == [200, 429]
    refused = await a.get("/payments", headers=customer)
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await refused.json())["error"]["code"] == "rate_limited"
    # Another principal has its own budget, on either instance.
    other = auth("shared-" + secrets.token_hex(6))
    assert await statuses(b, "/payments", other, 3) == [200, 200, 200]


async def test_without_storage_each_instance_counts_alone(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    a, b = await two_instances(aiohttp_client, database_url)
    customer = auth("local-" + secrets.token_hex(6))
    assert await statuses(a, "/payments", customer, 4) == [200, 200, 200, 429]
    assert await statuses(b, "/payments", customer, 4) == [200, 200, 200, 429]


async def test_an_unreachable_store_lets_requests_through(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
        client = await client_with(
            aiohttp_client, database_url, **LIMITS, RATE_LIMIT_STORAGE_URL=url
        )
        customer = auth("open-" + secrets.token_hex(6))
        assert await statuses(client, "/payments", customer, 5) == [200] * 5
